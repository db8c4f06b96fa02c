"""Which runs a comparison report covers, and whether they may be compared.

- ``resolve_targets``: a report name (its ``runs.json``) or run ids → the run ids to report.
- ``load_report_runs``: their records, split into finished trained runs and imported
  reference runs, with one note per run left out (skipped, failed, still missing).
- ``check_comparable``: refuse runs from different datasets or unplanned budgets.
- ``arch_order`` / ``run_groups``: the order every table and figure uses.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.sweeps.runs_file import DEFAULT_ARCHS, RUNS_NAME, read_runs_file, validate_name
from harness.paths import reports_dir as default_reports_dir
from harness.paths import results_dir as default_results_dir
from harness.runs.records import RECORD_NAME
from harness.reporting.results import RecordSkipped, load_records


def numeric(series: pd.Series | None) -> pd.Series:
    """The column as floats (unparsable → nan); an empty series for a missing column."""
    if series is None:
        return pd.Series(dtype=float)
    return pd.to_numeric(series, errors="coerce")


@dataclass
class ReportInputs:
    name: str
    run_ids: list[str]
    meta: dict[str, Any] | None = None  # runs.json of a compare report
    missing: list[str] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)  # every run id asked for (run ids → the new runs.json)


def resolve_targets(targets: Sequence[str], name: str | None = None, reports_root: Path | None = None,
                    results_root: Path | None = None) -> ReportInputs:
    """A report name (``reports/<name>/runs.json``) or run ids → the run ids to report."""
    reports_root = reports_root or default_reports_dir()
    results_root = results_root or default_results_dir()
    targets = [t for t in targets if t]
    if not targets:
        raise ValueError("give a report name (made by `harness compare`) or one or more run ids.")
    if len(targets) == 1 and (reports_root / targets[0] / RUNS_NAME).exists() and not (results_root / targets[0]).is_dir():
        from harness.runs.compact import data_runs_dir

        meta = read_runs_file(reports_root / targets[0])
        run_ids = list(dict.fromkeys(meta["run_ids"]))
        kept = data_runs_dir(reports_root / targets[0])
        present = [r for r in run_ids if (results_root / r / RECORD_NAME).exists() or (kept / r / RECORD_NAME).exists()]
        missing = [r for r in run_ids if r not in present]
        return ReportInputs(validate_name(name or targets[0]), present, meta, missing)
    run_ids = list(dict.fromkeys(targets))
    for run_id in run_ids:
        if not (results_root / run_id / RECORD_NAME).exists():
            known = reports_root / run_id
            hint = f" ({known} has no {RUNS_NAME})" if known.is_dir() else ""
            raise FileNotFoundError(
                f"{run_id!r} is neither a report in {reports_root}{hint} nor a run in {results_root}; "
                f"list runs with `python -m harness results`."
            )
    if name is None:
        name = "runs-" + hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:8]
    return ReportInputs(validate_name(name), run_ids, None, [])


@dataclass
class ReportRuns:
    """Finished trained runs (``records``), imported reference runs and a note per run left out."""

    records: list[dict[str, Any]]
    references: list[dict[str, Any]]
    notes: list[str]


def warning_notes(records: list[dict]) -> list[str]:
    """One note per entry of a record's ``warnings`` (the run still counts as ``ok``)."""
    return [f"Run `{r['run_id']}`: warning: {w}." for r in records for w in r.get("warnings") or []]


def load_report_runs(inputs: ReportInputs, results_root: Path) -> ReportRuns:
    """Read the records; unreadable ones are noted (and re-warned), unfinished ones noted and left out."""
    notes: list[str] = []
    if inputs.missing:
        notes.append(f"{len(inputs.missing)} planned run(s) have no record yet (sweep not finished?): "
                     + ", ".join(f"`{r}`" for r in inputs.missing) + ".")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordSkipped)
        records = load_records(results_root, inputs.run_ids)
    for warning in caught:
        if issubclass(warning.category, RecordSkipped):
            notes.append(f"Skipped: {warning.message}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    for record in records:
        if record.get("status") != "ok":
            notes.append(f"Run `{record['run_id']}` is {record.get('status')} "
                         f"({record.get('error') or 'no error recorded'}); it is left out of the tables.")
    references = [r for r in records if r.get("status") == "ok" and r.get("imported")]  # harness import
    records = [r for r in records if r.get("status") == "ok" and r.get("final_val_loss") is not None
               and not r.get("imported")]
    return ReportRuns(records, references, notes + warning_notes(records))


def _dataset_label(row: pd.Series) -> str:
    spec = row.get("data/spec")
    tokenizer = row.get("data/tokenizer")
    vocab = row.get("data/vocab_size")
    label = str(spec)
    if isinstance(tokenizer, str):
        label += f" ({tokenizer}"
        label += f", vocab {int(vocab)})" if isinstance(vocab, (int, float)) and math.isfinite(vocab) else ")"
    return label


def _dataset_key(row: pd.Series) -> tuple:
    return tuple(str(row.get(key)) for key in ("data/spec", "data/tokenizer", "data/vocab_size", "data/val_sha256"))


def _mixed_datasets(runs: pd.DataFrame) -> str | None:
    keys = runs.apply(_dataset_key, axis=1)
    if keys.nunique() <= 1:
        return None
    labels = sorted({_dataset_label(row) for _, row in runs.iterrows()})
    if len(labels) == 1:
        labels = [f"{labels[0]} with {keys.nunique()} different validation sets"]
    return f"the runs were trained on {keys.nunique()} different datasets ({'; '.join(labels)})"


def _mixed_budgets(runs: pd.DataFrame, planned_budgets: Sequence[float] | None) -> str | None:
    budgets = sorted(set(numeric(runs["budget_flops"]).dropna()))
    unplanned = [b for b in budgets
                 if planned_budgets is None or not any(math.isclose(b, p, rel_tol=1e-9) for p in planned_budgets)]
    if len(budgets) <= 1 or (planned_budgets is not None and not unplanned):
        return None
    return f"the runs come from {len(budgets)} different budgets ({', '.join(f'{b:.3g}' for b in budgets)} FLOPs)"


def check_comparable(runs: pd.DataFrame, planned_budgets: Sequence[float] | None = None, allow_mixed: bool = False) -> list[str]:
    """Refuse (``ValueError``) runs from different datasets or unplanned budgets; notes if allowed."""
    notes = []
    message = _mixed_datasets(runs)
    if message:
        if not allow_mixed:
            raise ValueError(f"{message}; a report compares runs on one dataset — pass --allow-mixed to report them anyway.")
        notes.append(f"Mixed datasets (--allow-mixed): {message}; their losses are not directly comparable.")
    message = _mixed_budgets(runs, planned_budgets)
    if message:
        if not allow_mixed:
            raise ValueError(
                f"{message}; a matched-compute report needs one budget (or a compare sweep that planned several) — "
                f"pass --allow-mixed to report them side by side anyway."
            )
        notes.append(f"Mixed budgets (--allow-mixed): {message}; rows are grouped by budget.")
    return notes


def arch_order(runs: pd.DataFrame, meta: dict | None) -> list[str]:
    """The compare's architectures first (as planned), then the defaults, then any others sorted."""
    present = list(dict.fromkeys(runs["arch"]))
    preferred = list((meta or {}).get("archs") or []) + list(DEFAULT_ARCHS)
    return [a for a in dict.fromkeys(preferred) if a in present] + sorted(a for a in present if a not in preferred)


def run_groups(runs: pd.DataFrame, archs: Sequence[str]) -> list[tuple[float, str, str, pd.DataFrame]]:
    """(budget, variant, arch, rows), ordered by budget, model size, architecture."""
    out = []
    for budget in sorted(runs["budget_flops"].unique()):
        at_budget = runs[runs["budget_flops"] == budget]
        variants = at_budget.groupby("variant")["active_params"].mean().sort_values().index
        for variant in variants:
            for arch in archs:
                rows = at_budget[(at_budget["variant"] == variant) & (at_budget["arch"] == arch)]
                if len(rows):
                    out.append((budget, variant, arch, rows))
    return out
