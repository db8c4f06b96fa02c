"""The run record: one JSON schema that compare, report and check read, written atomically.

``results/<run_id>/record.json`` holds (units in the names; FLOPs = 2 per multiply-add):
schema_version, run_id, status (``running|ok|failed|interrupted``), error, arch, size,
params / non_embedding_params / active_params, forward_flops_per_token /
train_flops_per_token, budget_flops, flops_used, tokens, steps, final_val_loss (nats/token),
val_bpb (text), entropy_floor / excess_loss / per_segment (synthetic), wall_s, tokens_per_s,
mfu, device, dtype, device_settings, kernels ({training, evaluation}: attention/MoE kernels
per layer kind, from ``model.kernels``),
world_size, torch_version, git_commit, seed, data, recipe (incl. grad_accum and
micro_batch_per_rank), last_metrics, machine_load ({start, end}: load averages, CPU count and
torch threads, see ``harness.machine``), warnings (a list of sentences, e.g. a final loss above
the unigram baseline; the run is still ``ok``), and after evaluation
``evaluation`` = {task: {metric: {value, stderr, n, version}}} (the largest n per task and shot
count; other results in ``evaluation_kept_aside`` = {task: {"<n>": {metric: entry}}}, see
``harness.evaluation.kept``; with ``evaluation_step`` when an unfinished run was scored with
``--allow-partial``). ``mfu`` is a fraction of the peak (0–1); printed tables show it as a
percentage labelled "%".
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.flops.analytic import convention
from harness.io import WriteFailed, read_json, write_json_atomic
from harness.machine import machine_load

SCHEMA_VERSION = 1
STATUSES = ("running", "ok", "failed", "interrupted")
RECORD_NAME = "record.json"
FLOP_CONVENTION = "FLOPs = 2 per multiply-add; training = 3 x forward; see harness.flops.CONVENTION"  # imported runs


def record_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / RECORD_NAME


def load_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a run's record; a missing or corrupt one is a ``ValueError`` naming the file."""
    path = record_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a run directory made by `harness run`?")
    try:
        record = read_json(path)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete the run or re-run it.") from None
    if not isinstance(record, dict) or "schema_version" not in record:
        raise ValueError(f"{path} is not a harness record (no schema_version).")
    return record


def write_record(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write the whole record atomically, stamping the schema version."""
    record = {"schema_version": SCHEMA_VERSION, **record}
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}.")
    return write_json_atomic(record_path(run_dir), record)


def update_record(run_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge top-level fields into an existing record (dicts are merged one level deep)."""
    record = load_record(run_dir)
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    write_record(run_dir, record)
    return record


def write_final_record(run_dir: Path, record: dict) -> dict:
    """Write the closing record; if that fails, try once more as ``failed`` (naming why) and return it."""
    try:
        write_record(run_dir, record)
        return record
    except WriteFailed as exc:
        failed = {**record, "status": "failed", "error": f"{exc}" + (f"; {record['error']}" if record.get("error") else "")}
        write_record(run_dir, failed)  # a second failure propagates: one line, and `results` shows it as stale
        return failed


# What a run writes or a study commits as data: changes there do not make the code a run trained at dirty.
OUTPUT_DIRS = ("reports", "results")


def git_commit(directory: str | Path | None = None) -> str | None:
    """The commit of the checkout holding ``directory`` (default: the harness's own), with ``-dirty``
    when a tracked file outside ``OUTPUT_DIRS`` is modified; None outside git. A study registering
    its plan or landing run data in ``reports/`` while it trains leaves its runs clean."""
    here = Path(directory) if directory is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        outputs = [f":(top,exclude){name}" for name in OUTPUT_DIRS]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *outputs], cwd=here,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """What produced a record: torch version, harness commit, the command line."""
    import torch

    return {"torch_version": torch.__version__, "git_commit": git_commit(), "command": command_line(sys.argv)}


def command_line(argv: list[str]) -> str:
    """The command as a person pastes it back: ``python -m harness run ...`` for the harness's entry
    point (``.../harness/__main__.py``; ``torchrun --nproc_per_node=N -m harness ...`` under torchrun),
    each argument quoted for the shell where it needs it."""
    if not argv:
        return ""
    program = argv[0]
    if Path(program).name == "__main__.py" and Path(program).parent.name == "harness":
        program = _torchrun_prefix() or "python -m harness"
    return " ".join([program, *(shlex.quote(arg) for arg in argv[1:])])


def _torchrun_prefix() -> str | None:
    """``torchrun [--nnodes=N] --nproc_per_node=P -m harness`` from torchrun's variables, None outside it."""
    world, local = os.environ.get("WORLD_SIZE", "1"), os.environ.get("LOCAL_WORLD_SIZE", "")
    if not world.isdigit() or int(world) < 2:
        return None
    per_node = int(local) if local.isdigit() and int(local) > 0 else int(world)
    nodes = f"--nnodes={int(world) // per_node} " if int(world) > per_node else ""
    return f"torchrun {nodes}--nproc_per_node={per_node} -m harness"


def progress_fields(steps: int, plan) -> dict[str, Any]:
    """steps, tokens and FLOPs used after ``steps`` optimizer steps of a ``harness.flops.BudgetPlan``."""
    return {"steps": steps, "tokens": steps * plan.tokens_per_step, "flops_used": steps * plan.flops_per_step}


def training_record(spec, *, counts: dict, config_flops: dict, plan, start_step: int, data: dict, layout: dict,
                    settings, kernels: dict) -> dict[str, Any]:
    """A pre-training run's ``running`` record (see the module docstring for the fields).

    ``config_flops``: {forward_flops_per_token, train_flops_per_token} at the run's seq_len;
    ``layout``: {grad_accum, world_size, micro_batch_per_rank}; ``settings``: the
    ``harness.device.DeviceSettings`` in use.
    """
    return {
        "run_id": spec.run_id(),
        "status": "running",
        "error": None,
        "arch": spec.arch,
        "size": spec.size,
        **counts,
        "seq_len": spec.recipe.seq_len,
        **config_flops,
        "flop_convention": convention(spec.attention_flops),
        "attention_flops": spec.attention_flops,
        "match": "tokens" if spec.train_tokens else "compute",
        "train_tokens": spec.train_tokens,
        "budget_flops": plan.budget_flops,
        "planned_steps": plan.steps,
        "tokens_per_step": plan.tokens_per_step,
        **progress_fields(start_step, plan),
        "seed": spec.seed,
        "data": data,
        "recipe": {**vars(spec.recipe), **layout},
        "world_size": layout["world_size"],
        "device": settings.device_name,
        "dtype": settings.dtype_name,
        "device_settings": settings.to_dict(),
        "kernels": kernels,
        **provenance(),
        "machine_load": {"start": machine_load()},
    }


def closing_fields(*, status: str, error: str | None, step: int, start_step: int, plan, wall_s: float,
                   wall_before: float, last_metrics: dict) -> dict[str, Any]:
    """The fields a run's loop settles: status, progress, wall time (s) and tokens/s of this session."""
    return {
        "status": status,
        "error": error,
        **progress_fields(step, plan),
        "wall_s": wall_s,
        "tokens_per_s": (step - start_step) * plan.tokens_per_step / max(wall_s - wall_before, 1e-9),
        "last_metrics": last_metrics,
    }


def utilization_fields(tokens_per_s: float, train_flops_per_token: float, peak_flops_per_s: float | None,
                       world_size: int) -> dict[str, Any]:
    """Achieved FLOP/s (all ranks' tokens) and MFU against all ranks' peak (None without a peak).

    ``train_flops_per_token`` should be counted in PaLM's convention (``attention_flops="full"``),
    as MFU figures elsewhere are; the record says so in ``mfu_convention``.
    """
    achieved = tokens_per_s * train_flops_per_token
    mfu = achieved / (peak_flops_per_s * world_size) if peak_flops_per_s else None
    return {"achieved_flops_per_s": achieved, "peak_flops_per_s": peak_flops_per_s, "mfu": mfu,
            "mfu_convention": "achieved FLOP/s / peak, FLOPs counted as PaLM does (attention_flops=full)"}
