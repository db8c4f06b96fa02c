"""Training state as sharded checkpoints (``torch.distributed.checkpoint``) and as one full file.

A sharded checkpoint is two things in the run directory:

- ``checkpoint_shards/step-<8 digits>/``: what ``torch.distributed.checkpoint.save`` wrote —
  each rank's shard of the model and AdamW state (``__<rank>_0.distcp``) and ``.metadata``;
- ``checkpoint_sharded.pt`` (``run_dir.SHARDED_CHECKPOINT_NAME``): the pointer, written
  atomically by rank 0 once every rank's shard is on disk: ``{"shards": "checkpoint_shards/
  step-…", "step", "wall_s", "scheduler", "rng", "rng_by_rank", "world_size", "config",
  "run_id"}``. A save killed half-way leaves the previous pointer, and its folder, intact.

Keys are the parameters' fully qualified names (``embed.token.weight``; the tied head is the
same tensor and is stored once), so a sharded checkpoint loads at any world size (the library
reshards) and into an unsharded model too. ``full_state`` gathers the same state into the
ordinary ``checkpoint.pt`` form (``harness.runs.run_dir``): the model's ``state_dict()`` and
the optimizer's ``state_dict()`` with parameters numbered in optimizer order.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from harness.io import as_write_failed, torch_save_atomic
from harness.runs import run_dir as run_files

SHARDS_DIR = "checkpoint_shards"
# torch.distributed.checkpoint is imported in the functions that use it: it costs seconds to import,
# and a run without sharded checkpoints never needs it


def pointer_path(run_dir: Path) -> Path:
    return Path(run_dir) / run_files.SHARDED_CHECKPOINT_NAME


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_sharded(run_dir: Path, model, optimizer, meta: dict, *, is_main: bool) -> None:
    """Every rank writes its shard of ``model`` and ``optimizer``; rank 0 then points to them (collective).

    ``meta`` (rank 0's is written): step, wall time, scheduler, RNG states, config, run id.
    After the pointer moves, rank 0 deletes older shard folders and a stale ``checkpoint.pt``.
    """
    run_dir = Path(run_dir)
    folder = Path(SHARDS_DIR) / f"step-{int(meta['step']):08d}"
    if is_main and (run_dir / folder).exists():  # a save at this step that was killed half-way
        shutil.rmtree(run_dir / folder)
    _barrier()
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    try:
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=run_dir / folder)
    except dcp.CheckpointException as error:  # a BaseException, raised on every rank: make it the trainer's kind
        cause = _cause(error)
        if isinstance(cause, OSError):
            raise as_write_failed(run_dir / folder, cause) from None
        raise RuntimeError(f"writing the sharded checkpoint {run_dir / folder} failed ({_first_line(error)})") from None
    if is_main:  # dcp.save returns on rank 0 after every rank's write is done and .metadata is written
        torch_save_atomic(pointer_path(run_dir), {**meta, "shards": folder.as_posix()})
        for old in (run_dir / SHARDS_DIR).iterdir():
            if old.name != folder.name:
                shutil.rmtree(old, ignore_errors=True)
        run_files.checkpoint_path(run_dir).unlink(missing_ok=True)  # older than these shards
    _barrier()


def read_pointer(run_dir: Path) -> dict:
    """The sharded checkpoint's pointer (step, scheduler, RNG, ...); a corrupt one is one ``ValueError``."""
    path = pointer_path(run_dir)
    try:
        pointer = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises several types for truncated files
        raise ValueError(f"sharded checkpoint {path} cannot be loaded ({type(error).__name__}); "
                         f"{run_files.RESTART}") from None
    if not isinstance(pointer, dict) or "shards" not in pointer or "step" not in pointer:
        raise ValueError(f"{path} is not a harness sharded checkpoint; {run_files.RESTART}")
    return pointer


def load_sharded(run_dir: Path, run_id: str, model, optimizer, scheduler) -> dict:
    """Load the sharded checkpoint into ``model`` (sharded or not) and ``optimizer``; returns its pointer."""
    pointer = read_pointer(run_dir)
    _check_owner(pointer, pointer_path(run_dir), run_id)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    try:
        with warnings.catch_warnings():  # one process without a group reads every shard itself, as intended
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load({"model": model_state, "optimizer": optimizer_state},
                     checkpoint_id=Path(run_dir) / pointer["shards"], no_dist=not dist.is_initialized())
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)
        scheduler.load_state_dict(pointer["scheduler"])
    except (RuntimeError, KeyError, ValueError, OSError, dcp.CheckpointException) as error:  # the last: a BaseException
        raise ValueError(f"sharded checkpoint {run_dir / pointer['shards']} cannot be loaded into this model "
                         f"({_first_line(error)}); move it away to start this run from scratch.") from None
    return pointer


def full_state(model, optimizer) -> tuple[dict, dict]:
    """The model's and optimizer's full state in ``checkpoint.pt``'s form, on rank 0's CPU (collective;
    the other ranks get empty dicts)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    if not optimizer_state:
        return model_state, optimizer_state
    return model_state, numbered_optimizer_state(optimizer_state)


def numbered_optimizer_state(by_name: dict) -> dict:
    """An optimizer state dict keyed by parameter name → ``Optimizer.state_dict()``'s numbering
    (parameters counted 0, 1, ... through the param groups in order)."""
    names = [name for group in by_name["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: state for name, state in by_name["state"].items()},
        "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                         for group in by_name["param_groups"]],
    }


def named_optimizer_state(numbered: dict, model, optimizer) -> dict:
    """The inverse of ``numbered_optimizer_state`` for this model and optimizer (names from the model)."""
    name_of = {}
    for name, parameter in model.named_parameters():  # a tied parameter keeps its first name
        name_of.setdefault(id(parameter), name)
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {
        "state": {names[int(i)]: state for i, state in numbered["state"].items()},
        "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                         for group in numbered["param_groups"]],
    }


def load_full_into_sharded(path: Path, run_id: str, model, optimizer, scheduler) -> dict:
    """Load an ordinary ``checkpoint.pt`` into a sharded model and its optimizer (every rank reads it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    checkpoint = run_files.load_checkpoint(path)
    _check_owner(checkpoint, path, run_id)
    options = StateDictOptions(full_state_dict=True)
    try:
        set_model_state_dict(model, checkpoint["model"], options=options)
        set_optimizer_state_dict(model, optimizer, named_optimizer_state(checkpoint["optimizer"], model, optimizer),
                                 options=options)
        scheduler.load_state_dict(checkpoint["scheduler"])
        int(checkpoint["step"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        raise ValueError(f"checkpoint {path} does not fit this model ({_first_line(error)}); "
                         f"move it away to start this run from scratch.") from None
    return checkpoint


def remove_sharded(run_dir: Path) -> None:
    """Delete the pointer first (a crash in between leaves unreferenced folders, never a dangling pointer)."""
    pointer_path(run_dir).unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / SHARDS_DIR, ignore_errors=True)


def latest_form(run_dir: Path) -> str | None:
    """Which checkpoint the run resumes from: ``"full"`` (checkpoint.pt), ``"sharded"``, or None.

    Both exist only if a process died between writing one form and deleting the other: the
    later step wins.
    """
    full, sharded = run_files.checkpoint_path(run_dir).exists(), pointer_path(run_dir).exists()
    if full and sharded:
        return "sharded" if int(read_pointer(run_dir)["step"]) > run_files.checkpoint_step(run_dir) else "full"
    return "full" if full else "sharded" if sharded else None


def _check_owner(checkpoint: dict, path: Path, run_id: str) -> None:
    owner = checkpoint.get("run_id")
    if owner != run_id:
        raise ValueError(f"checkpoint {path} belongs to run {owner or '(unknown)'}, not {run_id}; "
                         f"move it away to start this run from scratch.")


def _cause(error: BaseException) -> BaseException:
    """The first rank's exception inside a ``CheckpointException`` (``failures``: {rank: (exception, stack)})."""
    failures = getattr(error, "failures", None)
    if not failures:
        return error
    cause = next(iter(failures.values()))
    return cause[0] if isinstance(cause, tuple) else cause


def _first_line(error: BaseException) -> str:
    failures = getattr(error, "failures", None)
    if failures:
        cause = _cause(error)
        message = (str(cause).strip().splitlines() or [""])[0][:200]
        return f"rank {next(iter(failures))}: {type(cause).__name__}" + (f": {message}" if message else "")
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
