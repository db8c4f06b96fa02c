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
``evaluation`` = {task: {metric: {value, stderr, n, version}}} (with ``evaluation_step`` when
an unfinished run was scored with ``--allow-partial``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from harness.io import read_json, write_json_atomic

SCHEMA_VERSION = 1
STATUSES = ("running", "ok", "failed", "interrupted")
RECORD_NAME = "record.json"


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


def git_commit() -> str | None:
    """The harness checkout's commit (with ``-dirty`` when modified), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
