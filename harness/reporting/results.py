"""Results as data: run records → a pandas DataFrame, metrics.jsonl curves → a long frame.

    from harness.reporting.results import load_results, load_curves
    runs = load_results()                       # one row per run in results/ (HARNESS_RESULTS_DIR)
    curves = load_curves(runs["run_dir"])       # run_id, step, tokens, flops, wall_s, metric, value

Columns of the runs frame: every scalar field of ``record.json`` under its own name
(``final_val_loss``, ``params``, ``tokens_per_s``, ``mfu``, ...; units as in
``harness/runs/records.py``), nested dicts flattened with ``/`` (``data/spec``, ``recipe/lr``,
``device_settings/...``), the evaluation as ``eval/<task>/<metric>`` with
``eval/<task>/<metric>/stderr`` and ``.../n``, synthetic per-segment metrics as
``segment/<name>/<key>``, and from ``config.json`` the model shape as ``model/<field>`` and
the overrides as ``overrides`` (``"d_model=96"``). A ``running`` record whose process died
(no live process holds its ``harness.runs.lock``) has status ``interrupted (stale)``. ``variant`` names the model within its
architecture (``size`` plus overrides) and ``run_dir`` locates the run.

A record that cannot be read is skipped with a ``RecordSkipped`` warning naming its file,
and loading goes on.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from harness.io import read_json
from harness.paths import results_dir as default_results_dir
from harness.runs.records import RECORD_NAME, load_record
from harness.runs.run_dir import CONFIG_NAME, METRICS_NAME
from harness.runs.lock import is_held

STALE_STATUS = "interrupted (stale)"  # a `running` record that no live process holds

# Columns that lead the frame when present, in this order.
LEADING_COLUMNS = (
    "run_id", "status", "arch", "size", "variant", "overrides", "seed", "budget_flops", "flops_used", "tokens",
    "steps", "params", "non_embedding_params", "active_params", "forward_flops_per_token", "train_flops_per_token",
    "final_val_loss", "val_bpb", "entropy_floor", "excess_loss", "unigram_val_loss", "unigram_val_bpb",
    "unigram_excess_loss", "wall_s", "tokens_per_s", "achieved_flops_per_s", "peak_flops_per_s", "mfu",
)
# Record fields not flattened into the frame (curves cover last_metrics; results kept aside by a
# smaller or larger n stay in the record, harness.evaluation.kept).
SKIPPED_FIELDS = ("last_metrics", "evaluation_kept_aside")
# Columns of the long curves frame besides metric/value.
CURVE_INDEX = ("run_id", "arch", "variant", "seed", "step", "tokens", "flops", "wall_s")


class RecordSkipped(UserWarning):
    """A run folder whose record (or metrics line) could not be read; the message names it."""


def _warn(message: str) -> None:
    warnings.warn(message, RecordSkipped, stacklevel=3)


def run_dirs(results_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders under ``results_dir`` that hold a ``record.json``, sorted by name."""
    root = Path(results_dir) if results_dir is not None else default_results_dir()
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and (path / RECORD_NAME).exists())


def format_overrides(overrides: dict[str, Any] | None) -> str:
    """``{"d_model": 96}`` → ``"d_model=96"`` (sorted, comma-separated; "" when none)."""
    if not overrides:
        return ""
    return ",".join(f"{key}={value}" for key, value in sorted(overrides.items()))


def load_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """One run's record plus ``run_dir``, ``config`` (config.json or None) and ``overrides``.

    Raises ``ValueError``/``FileNotFoundError`` (naming the file) when the record is unreadable.
    """
    run_dir = Path(run_dir)
    record = dict(load_record(run_dir))
    if record.get("status") == "running" and not is_held(run_dir):
        record["status"] = STALE_STATUS  # its process died without closing the record
    config = None
    config_path = run_dir / CONFIG_NAME
    if config_path.exists():
        try:
            config = read_json(config_path)
        except ValueError:
            _warn(f"{config_path} is not valid JSON; the model shape of {run_dir.name} is left out.")
    overrides = ((config or {}).get("run") or {}).get("overrides") or {}
    record["run_dir"] = str(run_dir)
    record["config"] = config
    record["overrides"] = format_overrides(overrides)
    return record


def load_records(
    results_dir: str | os.PathLike | None = None,
    run_ids: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Records under ``results_dir`` (default ``harness.paths.results_dir()``), sorted by run id.

    ``run_ids``: only these runs, in this order (a missing one is a ``FileNotFoundError``);
    ``statuses``: only records with these statuses (None: all). Corrupt records are skipped
    with a ``RecordSkipped`` warning naming the file.
    """
    root = Path(results_dir) if results_dir is not None else default_results_dir()
    if run_ids is None:
        dirs = run_dirs(root)
    else:
        dirs = []
        for run_id in run_ids:
            path = root / run_id
            if not (path / RECORD_NAME).exists():
                raise FileNotFoundError(
                    f"run {run_id} has no record in {root}; list the runs there with `python -m harness results`."
                )
            dirs.append(path)
    records = []
    for path in dirs:
        try:
            record = load_run(path)
        except (ValueError, FileNotFoundError, OSError) as error:
            _warn(f"skipping {path / RECORD_NAME}: {error}")
            continue
        if statuses is not None and record.get("status") not in statuses:
            continue
        records.append(record)
    return records


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}/{key}", item, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = ",".join(str(v) for v in value) if all(_scalar(v) for v in value) else json.dumps(value)
    else:
        out[prefix] = value


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """One frame row from a record (as returned by ``load_run``); see the module docstring."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key in SKIPPED_FIELDS or key == "config":
            continue
        if key == "evaluation" and isinstance(value, dict):
            for task, metrics in value.items():
                for metric, entry in (metrics or {}).items():
                    base = f"eval/{task}/{metric}"
                    if isinstance(entry, dict):
                        row[base] = entry.get("value")
                        row[f"{base}/stderr"] = entry.get("stderr")
                        row[f"{base}/n"] = entry.get("n")
                    else:
                        row[base] = entry
        elif key == "per_segment" and isinstance(value, dict):
            _flatten("segment", value, row)
        elif isinstance(value, dict):
            _flatten(key, value, row)
        elif isinstance(value, (list, tuple)):
            _flatten(key, value, row)
        else:
            row[key] = value
    config = record.get("config") or {}
    for key, value in (config.get("model") or {}).items():
        if key in ("arch", "size", "extras"):
            continue
        if _scalar(value) or isinstance(value, (list, tuple)):
            _flatten(f"model/{key}", value, row)
    size = record.get("size") or ""
    row["variant"] = f"{size} {record['overrides']}".strip() if record.get("overrides") else size
    return row


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per record; leading columns first, then the rest alphabetically."""
    rows = [flatten_record(record) for record in records]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[c for c in LEADING_COLUMNS])
    leading = [c for c in LEADING_COLUMNS if c in frame.columns]
    rest = sorted(c for c in frame.columns if c not in leading)
    return frame[leading + rest].reset_index(drop=True)


def load_results(
    results_dir: str | os.PathLike | None = None,
    run_ids: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``records_frame(load_records(...))``: the runs in ``results_dir`` as one frame."""
    return records_frame(load_records(results_dir, run_ids, statuses))


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a run's metrics.jsonl; unreadable lines are skipped with a warning."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(item, dict):
            rows.append(item)
    if bad:
        _warn(f"skipping {bad} unreadable line(s) of {path}.")
    return rows


def load_curves(runs: pd.DataFrame | Iterable[str | os.PathLike] | None = None, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Training curves in long format: one row per (run, logged step, metric).

    ``runs``: a runs frame (uses its ``run_dir``, ``arch``, ``variant``, ``seed``), run
    folders, or None for every run in ``results_dir()``. ``metrics``: keep only these
    (e.g. ``["val_loss"]``). Columns: run_id, arch, variant, seed, step, tokens, flops
    (training FLOPs so far, 2 per multiply-add), wall_s, metric, value.
    """
    if runs is None:
        runs = load_results()
    if isinstance(runs, pd.DataFrame):
        if runs.empty:
            return pd.DataFrame(columns=[*CURVE_INDEX, "metric", "value"])
        meta = runs[["run_id", "arch", "variant", "seed", "run_dir"]].to_dict("records")
    else:
        meta = []
        for path in runs:
            path = Path(path)
            meta.append({"run_id": path.name, "arch": None, "variant": None, "seed": None, "run_dir": str(path)})
    frames = []
    for item in meta:
        rows = read_metrics(item["run_dir"])
        if not rows:
            continue
        wide = pd.DataFrame(rows)
        for column in ("step", "tokens", "flops", "wall_s"):
            if column not in wide.columns:
                wide[column] = float("nan")
        value_columns = [c for c in wide.columns if c not in ("step", "tokens", "flops", "wall_s")]
        if metrics is not None:
            value_columns = [c for c in value_columns if c in metrics]
        long = wide.melt(id_vars=["step", "tokens", "flops", "wall_s"], value_vars=value_columns, var_name="metric")
        long = long.dropna(subset=["value"])
        for key in ("run_id", "arch", "variant", "seed"):
            long[key] = item[key]
        frames.append(long)
    if not frames:
        return pd.DataFrame(columns=[*CURVE_INDEX, "metric", "value"])
    curves = pd.concat(frames, ignore_index=True)
    curves = curves[[*CURVE_INDEX, "metric", "value"]]
    curves["value"] = pd.to_numeric(curves["value"], errors="coerce")
    return curves.reset_index(drop=True)


def eval_columns(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(column, task, metric)`` for each evaluation value column of a runs frame."""
    out = []
    for column in frame.columns:
        parts = column.split("/")
        if parts[0] == "eval" and len(parts) == 3:
            out.append((column, parts[1], parts[2]))
    return out
