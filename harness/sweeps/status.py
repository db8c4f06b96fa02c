"""The status of a sweep or study, from its ``runs.json`` and its runs' records: one row per run.

A run's state comes from the sweep's runs file (``harness.sweeps.state``) corrected by what is on
disk now: a run whose lock a live process holds is ``running``; a record left ``running`` by a
process that died is ``interrupted``; ``ok`` / ``failed`` / ``interrupted`` records say so. Elapsed
time and FLOPs done come from the record, or for a running run from its last metrics line.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.sweeps.state import STATES


@dataclass
class StatusRow:
    run_id: str
    arch: str
    size: str
    seed: int | None
    state: str
    executor: str | None
    job_id: str | None
    elapsed_s: float | None  # training wall time so far, seconds
    flops_done: float | None  # training FLOPs done (2 per multiply-add)
    budget_flops: float | None
    error: str | None = None


def last_metrics(run_dir: Path) -> dict[str, Any]:
    """The last complete line of ``metrics.jsonl`` ({} when there is none), read from the file's end."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 8192))
            lines = file.read().decode(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            return item
    return {}


def live_state(entry_state: str, record: dict[str, Any], held: bool) -> str:
    """A run's state now (see the module docstring)."""
    status = record.get("status")
    if held:
        return "running"
    if status in ("ok", "interrupted"):
        return status
    if status == "running":
        return "interrupted"  # its process died without closing the record
    if status == "failed":
        return "queued" if entry_state == "queued" else "failed"  # queued: a retry is waiting
    if entry_state == "running":
        return "interrupted"
    return entry_state if entry_state in STATES else "planned"


def status_row(run_id: str, entry: dict[str, Any], results_dir: Path) -> StatusRow:
    from harness.runs.lock import is_held
    from harness.runs.records import load_record

    run_dir = results_dir / run_id
    try:
        record = load_record(run_dir)
    except (OSError, ValueError):
        record = {}
    held = run_dir.is_dir() and is_held(run_dir)
    state = live_state(entry.get("state", "planned"), record, held)
    launcher = record.get("launcher") or {}
    elapsed, flops = record.get("wall_s"), record.get("flops_used")
    if state == "running" or (record.get("status") == "running"):
        metrics = last_metrics(run_dir)
        elapsed, flops = metrics.get("wall_s", elapsed), metrics.get("flops", flops)
    parts = run_id.rsplit("-s", 1)
    seed = entry.get("seed", record.get("seed", int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else None))
    return StatusRow(run_id, entry.get("arch") or record.get("arch", "?"), entry.get("size") or record.get("size", "?"),
                     seed, state, entry.get("executor") or launcher.get("kind"), entry.get("job_id") or launcher.get("job_id"),
                     elapsed, flops, entry.get("budget_flops") or record.get("budget_flops"),
                     record.get("error") if state in ("failed", "interrupted") else None)


def sweep_status(run_ids: list[str], entries: dict[str, dict[str, Any]], results_dir: Path) -> list[StatusRow]:
    """One row per run id, in order (``entries``: the runs file's ``runs``)."""
    return [status_row(run_id, entries.get(run_id) or {}, Path(results_dir)) for run_id in run_ids]


def study_targets(path: Path) -> tuple[str, list[str], dict[str, dict[str, Any]]]:
    """A study file → (its report name, every planned run id, planned entries: arch, size, seed, budget);
    with a ``tune:`` block the tuning grid, and the comparison runs once ``data/tuning.json`` exists."""
    from harness.paths import reports_dir
    from harness.sweeps.state import initial_states, states_payload
    from harness.sweeps.study import load_study
    from harness.sweeps.tuning_run import study_plans

    spec = load_study(path)
    tuning, plans = study_plans(spec, reports_dir() / spec.name / "data")  # comparisons: once tuning.json exists
    entries: dict[str, dict[str, Any]] = states_payload(initial_states([run.spec for run in tuning]))
    for plan in (plans or {}).values():
        entries.update(states_payload(initial_states(plan.specs)))
    return spec.name, list(entries), entries


def format_status(rows: list[StatusRow]) -> str:
    """The table and a summary line (times in seconds, FLOPs = 2 per multiply-add, training)."""
    header = ("run_id", "arch", "size", "seed", "state", "executor", "job", "elapsed_s", "FLOPs done / budget")
    table = [header] + [(
        row.run_id, row.arch, row.size, "" if row.seed is None else str(row.seed), row.state, row.executor or "-",
        row.job_id or "-", "-" if row.elapsed_s is None else f"{row.elapsed_s:.0f}",
        f"{_flops(row.flops_done)} / {_flops(row.budget_flops)}") for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines += [f"  {row.run_id}: {row.error}" for row in rows if row.error]
    return "\n".join(lines + [summary_line(rows)])


def summary_line(rows: list[StatusRow]) -> str:
    """``8 runs: 5 ok, 1 running, 2 planned; 3.1e+11 of 8e+11 training FLOPs done (2 per multiply-add)``."""
    counts = Counter(row.state for row in rows)
    states = ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])
    done = sum(row.flops_done or 0.0 for row in rows)
    budget = sum(row.budget_flops or 0.0 for row in rows)
    return (f"{len(rows)} runs: {states or 'none'}; {done:.3g} of {budget:.3g} training FLOPs done "
            f"(2 per multiply-add)")


def _flops(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
