"""The comparison report, regenerated from run records alone.

    from harness.reporting.report import build_report
    report = build_report(["compare-nano-2e11"])          # a name made by `harness compare`
    report = build_report(["gpt2-nano-...-s0", "gpt3-nano-...-s0"], name="mine")   # run ids

writes ``reports/<name>/``: ``report.md`` (summary table, significance against the
reference architecture, isoFLOP fits when the runs hold several sizes at a budget, figures,
methods), ``figures/*.png`` and ``*.svg``, ``runs.csv`` (one row per run, the
``harness.reporting.results`` frame's main columns), ``summary.csv`` (the summary table's numbers)
and ``runs.json`` (the run ids, so ``python -m harness report <name>`` regenerates it).

The report is computed from ``reports/<name>/data/runs/`` (``harness.runs.compact``): the compact
copies of its runs (and fine-tuning runs) are refreshed from the results folder first, then only
they are read, so the page and its figures regenerate byte for byte without ``results/``.

The parts: ``harness.reporting.inputs`` picks and checks the runs, ``harness.reporting.tables``
computes each table's rows, ``harness.reporting.sections`` and ``harness.reporting.methods``
render them; this module draws the figures and assembles and writes the page.

Refusals (``ValueError``, one sentence): runs on different datasets, or from budgets the
report was not planned for, unless ``allow_mixed``; no readable finished run at all.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.reporting.formatting import fmt_sci, markdown_figure, markdown_notes
from harness.sweeps.runs_file import REFERENCE_ARCH, write_runs_file
from harness.io import write_text_atomic
from harness.paths import reports_dir as default_reports_dir
from harness.paths import results_dir as default_results_dir
from harness.reporting.adaptation import adaptation_section
from harness.reporting.finetune_report import is_finetune, write_finetune_report
from harness.reporting.serving import serving_section
from harness.reporting.inputs import ReportInputs, arch_order, check_comparable, load_report_runs, numeric, resolve_targets
from harness.reporting.methods import methods_section
from harness.reporting.sections import isoflop_section, runs_section, significance_section, summary_section
from harness.reporting.tables import (ISOFLOP_X, IsoFlopRow, flops_breakdowns, isoflop_fits, isoflop_frame, isoflop_rows,
                                   noisy_throughput, significance_frame, significance_rows, summary_frame,
                                   summary_rows)
from harness.reporting.results import eval_columns, load_curves, records_frame

REPORT_NAME = "report.md"
FIGURES_DIR = "figures"
RUNS_CSV_COLUMNS = (
    "run_id", "status", "arch", "variant", "seed", "budget_flops", "flops_used", "tokens", "steps", "params",
    "active_params", "train_flops_per_token", "final_val_loss", "val_bpb", "excess_loss", "wall_s", "tokens_per_s",
    "mfu", "device", "dtype", "git_commit",
)


@dataclass
class Report:
    name: str
    path: Path  # report.md
    directory: Path
    figures: list[Path]
    run_ids: list[str]
    notes: list[str]
    summary: pd.DataFrame
    significance: pd.DataFrame
    isoflop: pd.DataFrame


@dataclass
class ReportScope:
    """What every part of one report shares: the runs and the decisions taken about them."""

    inputs: ReportInputs
    records: list[dict[str, Any]]  # finished trained runs
    references: list[dict[str, Any]]  # imported runs (reference rows)
    runs: pd.DataFrame
    archs: list[str]
    reference: str
    kind: str  # the data's kind: text or synthetic
    evals: list[tuple[str, str, str]]
    allow_mixed: bool
    out_dir: Path
    results_root: Path

    @property
    def command(self) -> str:
        return f"python -m harness report {shlex.quote(self.inputs.name)}"


@dataclass
class DrawnFigures:
    keys: list[str]  # drawn, in page order
    paths: list[Path]
    skipped: dict[str, str]  # key → why it was not drawn
    captions: dict[str, str]


def _draw_figures(scope: ReportScope, isoflop: Sequence[IsoFlopRow]) -> DrawnFigures:
    from harness.reporting import figures as fig

    runs, archs, curves = scope.runs, scope.archs, load_curves(scope.runs)
    drawn: dict[str, Any] = {
        "loss_vs_flops": fig.loss_curves(runs, curves, archs, "flops"),
        "loss_vs_wall": fig.loss_curves(runs, curves, archs, "wall_s"),
        "pareto": fig.pareto(runs, archs),
        "throughput": fig.throughput(runs, archs),
        "flops_breakdown": fig.flops_breakdown(flops_breakdowns(scope.records, runs, archs), archs),
        "evaluation": fig.evaluation(runs, scope.evals, archs),
    }
    skipped = {} if scope.evals else {"evaluation": "no lm-eval results in these records"}
    if scope.kind == "synthetic":
        names = list((scope.records[0].get("data") or {}).get("segment_names") or
                     sorted({c.split("/")[1] for c in runs.columns if c.startswith("segment/")}))
        drawn["segments"] = fig.segments(runs, names, archs)
    if isoflop:
        drawn["isoflop"] = fig.isoflop(runs.dropna(subset=["final_val_loss"]), isoflop_fits(isoflop), archs, ISOFLOP_X)
    paths = []
    for key, figure in drawn.items():
        if figure is None:
            skipped.setdefault(key, "no data for it in these records")
        else:
            paths += fig.save_figure(figure, scope.out_dir / FIGURES_DIR, key)
    keys = [key for key, figure in drawn.items() if figure is not None]
    return DrawnFigures(keys, paths, skipped, fig.describe_figures())


def _heading(scope: ReportScope, has_isoflop: bool) -> list[str]:
    runs, archs = scope.runs, scope.archs
    budgets = sorted(set(numeric(runs["budget_flops"])))
    mode = "isoFLOP sweep" if has_isoflop else "matched-compute comparison"
    seeds = runs.groupby(["arch", "variant", "budget_flops"]).size()
    seed_count = f"{seeds.min()} seed(s)" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()} seed(s)"
    title = f"# {scope.inputs.name}: {', '.join(archs)} at {', '.join(fmt_sci(b) for b in budgets)} training FLOPs"
    intro = (
        f"A {mode} of {len(archs)} architecture(s) ({', '.join(archs)}) on "
        f"`{(scope.records[0].get('data') or {}).get('spec')}`: {len(scope.records)} finished run(s), model(s) "
        f"{', '.join(dict.fromkeys(runs['variant']))}, {seed_count} each, "
        f"the same data order, tokenizer and recipe. Every number below is computed from the run records "
        f"(`results/<run_id>/record.json`, `config.json`, `metrics.jsonl`); `{scope.command}` regenerates this page."
    )
    return [title, "", intro, ""]


def _figure_lines(figures: DrawnFigures) -> list[str]:
    lines = ["## Figures", ""]
    for key in figures.keys:
        lines += markdown_figure(figures.captions[key], FIGURES_DIR, key)
    lines += [f"- *{figures.captions.get(key, key)}*: not drawn — {why}." for key, why in figures.skipped.items()]
    return lines + ([""] if figures.skipped else [])


def _reference_lines(references: list[dict[str, Any]]) -> list[str]:
    if not references:
        return []
    from harness.reporting.reference_models import SECTION_TITLE, reference_section

    return [f"## {SECTION_TITLE}", "", reference_section(references)[0], ""]


def _page(scope: ReportScope, notes: list[str], sections: dict[str, str | None], figures: DrawnFigures) -> str:
    """The report's markdown: heading, notes, the sections present, figures, references, methods, runs."""
    parts = _heading(scope, bool(sections["isoflop"])) + markdown_notes(notes)
    parts += ["## Summary", "", sections["summary"], ""]
    parts += [f"## Significance against {scope.reference}", "", sections["significance"], ""]
    if sections["isoflop"]:
        parts += ["## IsoFLOP: compute-optimal size per architecture", "", sections["isoflop"], ""]
    adaptation = adaptation_section(scope.inputs.meta, scope.results_root, scope.out_dir, scope.archs)
    if adaptation:
        parts += ["## Adaptation: fine-tuning at matched FLOPs", "", adaptation, ""]
    serving = serving_section(scope.records, scope.archs, scope.out_dir)
    if serving:
        parts += ["## Serving cost", "", serving, ""]
    parts += _figure_lines(figures) + _reference_lines(scope.references)
    parts += ["## Methods", "", methods_section(scope.records, scope.runs, scope.inputs.meta, scope.command), ""]
    parts += ["## Runs", "", runs_section(scope.runs, scope.archs), ""]
    parts += ["Data files: `runs.csv` (one row per run), `summary.csv` (the summary table's numbers)"
              + (", `isoflop.csv` (the fits)" if sections["isoflop"] else "") + ", `runs.json` (the run ids).", ""]
    return "\n".join(parts)


def _write_data(scope: ReportScope, summary: pd.DataFrame, isoflop: pd.DataFrame) -> None:
    """runs.csv, summary.csv, isoflop.csv (with fits) and, for run ids, runs.json (ids and --allow-mixed)."""
    out_dir, runs = scope.out_dir, scope.runs
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [c for c in RUNS_CSV_COLUMNS if c in runs.columns] + [c for c, _, _ in scope.evals]
    write_text_atomic(out_dir / "runs.csv", runs[columns].to_csv(index=False))
    write_text_atomic(out_dir / "summary.csv", summary.to_csv(index=False))
    if not isoflop.empty:
        write_text_atomic(out_dir / "isoflop.csv", isoflop.drop(columns=["cov"], errors="ignore").to_csv(index=False))
    if scope.inputs.meta is None:
        write_runs_file(out_dir, {
            "name": scope.inputs.name, "mode": "runs", "archs": scope.archs, "reference": scope.reference,
            "budgets": sorted(set(numeric(runs["budget_flops"]))), "allow_mixed": scope.allow_mixed,
            "run_ids": scope.inputs.listed or scope.inputs.run_ids, "command": None})


def _scope(inputs: ReportInputs, records: list[dict], references: list[dict], allow_mixed: bool,
           reference: str | None, reports_root: Path, results_root: Path) -> tuple[ReportScope, list[str]]:
    """The shared decisions, and the notes on mixed datasets or budgets (refused unless allowed)."""
    meta = inputs.meta or {}
    runs = records_frame(records)
    allow_mixed = allow_mixed or bool(meta.get("allow_mixed"))
    notes = check_comparable(runs, meta.get("budgets"), allow_mixed)
    archs = arch_order(runs, inputs.meta)
    reference = reference or meta.get("reference") or (REFERENCE_ARCH if REFERENCE_ARCH in archs else archs[0])
    kind = (records[0].get("data") or {}).get("kind", "text")
    scope = ReportScope(inputs, records, references, runs, archs, reference, kind, eval_columns(runs), allow_mixed,
                        reports_root / inputs.name, results_root)
    return scope, notes


def _reference_only_report(inputs: ReportInputs, references: list[dict], notes: list[str], reports_root: Path) -> Report:
    from harness.reporting.reference_models import write_reference_report

    path, numbers = write_reference_report(reports_root / inputs.name, inputs.name, references, inputs.run_ids,
                                           notes, with_runs_file=inputs.meta is None)
    return Report(inputs.name, path, path.parent, [], inputs.run_ids, notes, numbers, pd.DataFrame(), pd.DataFrame())


def _from_data(inputs: ReportInputs, reports_root: Path, results_root: Path) -> tuple[ReportInputs, Path, list[str]]:
    """Refresh the report's data folder from ``results_root``; the inputs as found there, its path, and a
    note per unreadable record."""
    from harness.runs.compact import data_runs_dir, sync_runs
    from harness.runs.records import RECORD_NAME

    report_dir = reports_root / inputs.name
    finetune = ((inputs.meta or {}).get("finetune") or {}).get("run_ids") or []
    synced = sync_runs(results_root, report_dir, [*inputs.run_ids, *inputs.missing, *finetune])
    data_root = data_runs_dir(report_dir)
    planned = [*inputs.run_ids, *inputs.missing] if inputs.meta is not None else inputs.run_ids
    present = [r for r in dict.fromkeys(planned) if (data_root / r / RECORD_NAME).exists()]
    missing = [r for r in planned if r not in present and r not in synced.skipped]
    notes = [f"Skipped: {message}" for message in synced.skipped.values()]
    return ReportInputs(inputs.name, present, inputs.meta, missing, list(planned)), data_root, notes


def _finetune_report(inputs: ReportInputs, records: list[dict], notes: list[str], reports_root: Path) -> Report:
    """Fine-tunes alone or beside their parents: ``harness.reporting.finetune_report``."""
    finetunes = [r for r in records if is_finetune(r)]
    others = [r for r in records if not is_finetune(r)]
    path = write_finetune_report(reports_root / inputs.name, inputs.name, finetunes, others, inputs.run_ids, notes,
                                 with_runs_file=inputs.meta is None)
    return Report(inputs.name, path, path.parent, [], inputs.run_ids, notes, pd.DataFrame(), pd.DataFrame(),
                  pd.DataFrame())


def build_report(
    targets: Sequence[str],
    *,
    name: str | None = None,
    allow_mixed: bool = False,
    reference: str | None = None,
    results_dir: str | Path | None = None,
    reports_dir: str | Path | None = None,
) -> Report:
    """Write ``reports/<name>/`` from the records of a compare report name or run ids."""
    results_root = Path(results_dir) if results_dir is not None else default_results_dir()
    reports_root = Path(reports_dir) if reports_dir is not None else default_reports_dir()
    inputs, results_root, skipped = _from_data(resolve_targets(targets, name, reports_root, results_root),
                                               reports_root, results_root)
    loaded = load_report_runs(inputs, results_root)
    notes = skipped + loaded.notes
    if any(is_finetune(r) for r in loaded.records):
        return _finetune_report(inputs, loaded.records + loaded.references, notes, reports_root)
    if not loaded.records and loaded.references:
        return _reference_only_report(inputs, loaded.references, notes, reports_root)
    if not loaded.records:
        listed = len(inputs.run_ids) + len(inputs.missing)
        raise ValueError(f"report {inputs.name!r} lists {listed} run(s) and not one has a readable finished record in "
                         f"{results_root}; train them first (`python -m harness compare ...`).")
    scope, mixed_notes = _scope(inputs, loaded.records, loaded.references, allow_mixed, reference, reports_root,
                                results_root)
    notes += mixed_notes
    summary = summary_rows(scope.runs, scope.archs, scope.evals, scope.kind)
    significance = significance_rows(scope.runs, scope.archs, scope.reference)
    isoflop = isoflop_rows(scope.runs, scope.archs)
    sections = {
        "summary": summary_section(summary, scope.runs, scope.evals, scope.kind, noisy_throughput(scope.runs, scope.archs)),
        "significance": significance_section(significance, scope.runs, scope.reference),
        "isoflop": isoflop_section(isoflop, scope.reference),
    }
    figures = _draw_figures(scope, isoflop)
    page = _page(scope, notes, sections, figures)
    summary_numbers, isoflop_numbers = summary_frame(summary, scope.kind), isoflop_frame(isoflop)
    _write_data(scope, summary_numbers, isoflop_numbers)
    report_path = write_text_atomic(scope.out_dir / REPORT_NAME, page)
    return Report(inputs.name, report_path, scope.out_dir, figures.paths, inputs.run_ids, notes, summary_numbers,
                  significance_frame(significance), isoflop_numbers)
