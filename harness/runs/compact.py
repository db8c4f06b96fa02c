"""A run's compact copy in a report's data folder: what a report is computed from, small enough to commit.

    reports/<name>/data/runs/<run_id>/record.json    the record as written (JSON, unchanged)
                                     /config.json    the resolved spec and model config (unchanged)
                                     /metrics.jsonl  the curves the report uses, thinned

The run folder layout is the same as ``results/<run_id>/`` (``harness.runs.run_dir``), so every
reader of run folders reads a compact copy as it reads a run. ``metrics.jsonl`` keeps only the
columns in ``CURVE_COLUMNS`` and those starting with a ``CURVE_PREFIXES`` entry (the in-training
probes), every line with a validation loss, and at most ``MAX_CURVE_ROWS``
other lines (every k-th step, the last always kept); floats keep ``SIGNIFICANT_DIGITS``
significant digits. A report built from a results folder first refreshes the copies
(``sync_runs``), then reads only them, so it regenerates byte for byte once ``results/`` is gone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.io import read_json, write_bytes_atomic, write_text_atomic
from harness.runs.records import RECORD_NAME
from harness.runs.run_dir import CONFIG_NAME, METRICS_NAME

DATA_DIR = "data"
RUNS_DIR = "runs"
CURVE_COLUMNS = ("step", "tokens", "flops", "wall_s", "train_loss", "val_loss", "grad_norm", "moe_balance",
                 "moe_dropped_fraction")
CURVE_PREFIXES = ("probe/",)  # in-training probe accuracies (harness.evaluation.train_probes), fractions in [0, 1]
MAX_CURVE_ROWS = 300
TUNING_CURVE_ROWS = 0  # a tuning run keeps its validation lines only
SIGNIFICANT_DIGITS = 6
FINISHED = ("ok", "failed")


def data_runs_dir(report_dir: str | Path) -> Path:
    """``reports/<name>/data/runs``: the compact copies of a report's runs."""
    return Path(report_dir) / DATA_DIR / RUNS_DIR


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


def thin_metrics(lines: list[dict[str, Any]], max_rows: int = MAX_CURVE_ROWS) -> list[dict[str, Any]]:
    """The metrics lines a report uses (see the module docstring), in step order; ``max_rows`` 0 keeps
    the validation lines only (a tuning run: its report reads ``tuning.json``)."""
    step_lines = [line for line in lines if "val_loss" not in line] if max_rows else []
    every = max(1, math.ceil(len(step_lines) / max_rows)) if max_rows else 1
    keep_ids = {id(line) for line in step_lines[::every]} | ({id(step_lines[-1])} if step_lines else set())
    out = []
    for line in lines:
        if "val_loss" in line or id(line) in keep_ids:
            out.append({k: _round(line[k]) for k in _curve_keys(line) if line[k] is not None})
    return out


def _curve_keys(line: dict[str, Any]) -> list[str]:
    """The kept columns of one metrics line: ``CURVE_COLUMNS`` in their order, then the prefixed ones as logged."""
    return [k for k in CURVE_COLUMNS if k in line] + [k for k in line if k.startswith(CURVE_PREFIXES)]


def _read_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text().splitlines() if path.exists() else []:
        try:
            item = json.loads(text)
        except ValueError:
            continue
        if isinstance(item, dict):
            lines.append(item)
    return lines


def write_compact(run_dir: str | Path, target_dir: str | Path, max_rows: int = MAX_CURVE_ROWS) -> Path:
    """Copy ``run_dir``'s record and config and its thinned metrics (``thin_metrics``) into ``target_dir``
    (atomic writes)."""
    run_dir, target_dir = Path(run_dir), Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in (RECORD_NAME, CONFIG_NAME):
        if (run_dir / name).exists():
            write_text_atomic(target_dir / name, (run_dir / name).read_text())
    thinned = thin_metrics(_read_lines(run_dir / METRICS_NAME), max_rows)
    write_text_atomic(target_dir / METRICS_NAME, "".join(json.dumps(line) + "\n" for line in thinned))
    return target_dir


def is_finished(run_dir: Path) -> bool:
    try:
        return read_json(run_dir / RECORD_NAME).get("status") in FINISHED
    except (ValueError, FileNotFoundError, OSError):
        return False


@dataclass
class Synced:
    """What ``sync_runs`` did: run ids copied, and unreadable records left out (run id → one sentence)."""

    copied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def sync_runs(results_root: str | Path, report_dir: str | Path, run_ids: Iterable[str],
              max_rows: int = MAX_CURVE_ROWS) -> Synced:
    """Refresh the compact copy of every run among ``run_ids`` whose record ``results_root`` holds
    (any status: the report notes unfinished ones). A run only in the data folder (results deleted)
    is left as it is; an unreadable record is not copied and is named in ``skipped``."""
    results_root, target = Path(results_root), data_runs_dir(report_dir)
    synced = Synced()
    for run_id in dict.fromkeys(run_ids):
        source = results_root / run_id
        if not (source / RECORD_NAME).exists():
            continue
        try:
            read_json(source / RECORD_NAME)
        except (ValueError, OSError) as error:
            synced.skipped[run_id] = f"skipping {source / RECORD_NAME}: {error}"
            continue
        write_compact(source, target / run_id, max_rows)
        synced.copied.append(run_id)
    return synced


def has_data(report_dir: str | Path, run_ids: Iterable[str] | None = None) -> bool:
    """Whether the report's data folder holds any run (of ``run_ids``, when given)."""
    root = data_runs_dir(report_dir)
    if not root.is_dir():
        return False
    present = {p.name for p in root.iterdir() if (p / RECORD_NAME).exists()}
    return bool(present if run_ids is None else present & set(run_ids))


def copy_study_file(source: str | Path, report_dir: str | Path) -> Path:
    """``data/study.yaml``: the study file as planned (byte copy)."""
    return write_bytes_atomic(Path(report_dir) / DATA_DIR / "study.yaml", Path(source).read_bytes())
