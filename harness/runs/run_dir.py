"""The run directory: its file names, finding it, and reading or writing its checkpoint and model.

``results/<run_id>/`` holds (trained, fine-tuned and imported runs alike):

- ``record.json``: the run's record (``harness.runs.records``, which owns that name and schema);
- ``config.json`` (``CONFIG_NAME``): the resolved spec and the model config;
- ``tokenizer/`` (``TOKENIZER_DIR``); ``adapter/`` (``ADAPTER_DIR``, LoRA fine-tunes only);
- ``checkpoint.pt`` (``CHECKPOINT_NAME``): ``{"model", "config", "step", "run_id", ...}``, loaded
  with ``torch.load(weights_only=True)`` by ``load_checkpoint`` alone;
- ``checkpoint_sharded.pt`` (``SHARDED_CHECKPOINT_NAME``) and ``checkpoint_shards/``: an
  unfinished ``--parallel fsdp2`` run's sharded checkpoint (``harness.training.sharded_checkpoint``),
  replaced by ``checkpoint.pt`` when the run finishes;
- ``metrics.jsonl`` (``METRICS_NAME``): one JSON object per logged step;
- ``lm_eval_results/``: lm-eval's output, one file per evaluation call
  (``harness.evaluation.kept.lm_eval_results_name``), never overwritten;
- ``run.lock`` (``LOCK_NAME``, ``harness.runs.lock``).

``load_run_model(run)`` is the one way eval, bench, export and fine-tuning read a run's model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness import paths
from harness.io import torch_save_atomic, write_text_atomic
from harness.runs.records import load_record

CHECKPOINT_NAME = "checkpoint.pt"
SHARDED_CHECKPOINT_NAME = "checkpoint_sharded.pt"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
TOKENIZER_DIR = "tokenizer"
ADAPTER_DIR = "adapter"
LOCK_NAME = "run.lock"
RESTART = "delete it and run the training again (it restarts from scratch)."


def resume_rule(command: str = "command") -> str:
    """The one resume rule, said the same way by every command that mentions it."""
    return f"running the same {command} again continues it from its last checkpoint (no --resume needed)"


def resuming_line(run_id: str, step: int, planned_steps: int) -> str:
    """What a run that continues from its checkpoint prints first."""
    return f"resuming {run_id} from step {step} of {planned_steps} (its last checkpoint)"


def resolve_run_dir(run: str | os.PathLike) -> Path:
    """A run directory, given as a path or as a run id under ``harness.paths.results_dir()``."""
    path = Path(run)
    if path.is_dir():
        return path
    candidate = paths.results_dir() / str(run)
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"run directory {run} does not exist; pass results/<run_id> of a run made by `harness run`.")


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """True when the run can resume: it has ``checkpoint.pt`` or a sharded checkpoint."""
    return checkpoint_path(run_dir).exists() or (Path(run_dir) / SHARDED_CHECKPOINT_NAME).exists()


def save_checkpoint(run_dir: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as the run's checkpoint, atomically (a crash keeps the previous one)."""
    return torch_save_atomic(checkpoint_path(run_dir), payload)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint (``weights_only=True``, on the CPU); a missing, corrupt or foreign file is one clear error."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no {path.name}; train it first with `python -m harness run` "
                                f"(an interrupted run: {resume_rule('`harness run` command')}).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated/garbled files
        raise ValueError(f"checkpoint {path} cannot be loaded ({_first_line(error)}); {RESTART}") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"checkpoint {path} is not a harness checkpoint (no model weights); {RESTART}")
    return checkpoint


def checkpoint_step(run_dir: str | os.PathLike) -> int:
    """The step the run's checkpoint was written at (-1 when it does not say)."""
    return int(load_checkpoint(checkpoint_path(run_dir)).get("step", -1))


def planned_action(run_dir: str | os.PathLike) -> str:
    """What ``harness.training.trainer.train`` would do with this run directory: ``reuse`` a finished run,
    ``resume`` an unfinished one from its checkpoint, else ``train`` from scratch. For dry runs."""
    try:
        status = load_record(run_dir).get("status")
    except (FileNotFoundError, ValueError):
        return "train"
    if status == "ok":
        return "reuse"
    return "resume" if has_checkpoint(run_dir) else "train"


def load_run_model(run: str | os.PathLike) -> tuple[Any, Any, dict]:
    """The run's model (eval mode, CPU), its tokenizer and its record; ``run`` is a folder or a run id."""
    from architectures import build_from_config
    from harness.data import load_tokenizer

    run_dir = resolve_run_dir(run)
    path = checkpoint_path(run_dir)
    checkpoint = load_checkpoint(path)
    record = load_record(run_dir)
    try:
        model = build_from_config(checkpoint["config"])
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise ValueError(f"checkpoint {path} does not fit the model its config describes "
                         f"({_first_line(error)}); {RESTART}") from None
    model.eval()
    return model, load_tokenizer(run_dir / TOKENIZER_DIR), record


def restore_training_state(path: Path, run_id: str, model, optimizer, scheduler, load_model=None) -> dict:
    """Load ``path`` into the model, optimizer and scheduler; a corrupt or foreign file is one ``ValueError``.

    ``load_model(model, checkpoint)`` restores the model (default: ``checkpoint["model"]``'s weights;
    a fine-tuning method may restore its own entries instead, e.g. LoRA's ``adapter``)."""
    checkpoint = load_checkpoint(path)
    owner = checkpoint.get("run_id")
    if owner != run_id:
        raise ValueError(f"checkpoint {path} belongs to run {owner or '(unknown)'}, not {run_id}; "
                         f"move it away to start this run from scratch.")
    try:
        if load_model is None:
            model.load_state_dict(checkpoint["model"])
        else:
            load_model(model, checkpoint)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        int(checkpoint["step"])
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"checkpoint {path} does not fit this model ({first}); "
                         f"move it away to start this run from scratch.") from None
    return checkpoint


def rng_state(device_type: str) -> dict:
    """This process's torch (and CUDA) random state, as a checkpoint stores it."""
    import torch

    state = {"torch": torch.get_rng_state()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, device_type: str) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if device_type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _step_of(line: str) -> int | None:
    try:
        item = json.loads(line)
    except ValueError:  # a line cut short by a crash
        return None
    return item.get("step", 0) if isinstance(item, dict) else None


def start_metrics(run_dir: str | os.PathLike, resumed_step: int | None) -> None:
    """Before a run's loop: on resume keep the metric lines up to the checkpoint's step (dropping any
    torn line); on a fresh start delete the file."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return
    if resumed_step is None:
        path.unlink()
        return
    kept = [line for line in path.read_text().splitlines() if (_step_of(line) is not None and _step_of(line) <= resumed_step)]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def _first_line(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
