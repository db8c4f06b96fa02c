"""The study report: Findings from the statistics, then each setting's tables and figures.

    from harness.reporting.study_report import build_study_report
    build_study_report("gpt-family-cpu")     # reports/gpt-family-cpu/runs.json (mode "study")

First refreshes ``reports/<name>/data/runs/`` (``harness.runs.compact``) from the results folder
for every run it holds, then reads only that data folder — the compact records, configs and
metrics of the study's runs and ``data/plan.json`` (the pre-registered comparisons,
``harness.sweeps.plan``) — and writes ``reports/<name>/report.md``, ``figures/*.png|svg``,
``findings.csv`` and one ``<sweep>.csv`` per sweep (a row per run). So the page and every figure
regenerate byte for byte from a clone without ``results/``. Every sentence of the Findings
section comes from ``harness.reporting.findings``; every ± is a 95 % t-interval over seeds,
accuracies carry Wilson intervals.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from harness.reporting import figures as fig
from harness.reporting.planned import planned_comparisons
from harness.runs.compact import DATA_DIR, data_runs_dir, sync_runs
from harness.reporting.plan_sections import deviation_lines, preregistration_lines
from harness.sweeps.plan import effective_comparisons, read_plan_file
from harness.sweeps.runs_file import RUNS_NAME, read_runs_file, validate_name
from harness.reporting.findings import assess, findings_markdown, findings_rows
from harness.io import write_text_atomic
from harness.paths import reports_dir as default_reports_dir
from harness.paths import results_dir as default_results_dir
from harness.reporting.formatting import fmt_sci, markdown_figure, markdown_notes
from harness.runs.records import record_path
from harness.reporting.report import FIGURES_DIR, RUNS_CSV_COLUMNS
from harness.reporting.serving import serving_section
from harness.reporting.wallclock import read_step_times, wallclock_section
from harness.reporting.tuning_report import FIGURE_KEY as TUNING_FIGURE, lr_tuning_figure, read_tuning_data, tuning_section
from harness.reporting.results import RecordSkipped, load_curves, load_records, records_frame
from harness.sweeps.study import STUDY_MODE, add_curve_measures
from harness.sweeps.probe_measures import ProbeSettings, add_probe_measures
from harness.reporting.study_sections import probe_sections, setting_sections, study_figures_drawn
from harness.reporting.study_tables import Setting, ordered_archs, throughput_table


def is_study(name: str, reports_root: Path | None = None) -> bool:
    path = (reports_root or default_reports_dir()) / name / RUNS_NAME
    try:
        return path.exists() and read_runs_file(path.parent).get("mode") == STUDY_MODE
    except ValueError:
        return False


def _load_setting(name: str, sweep: dict, results_root: Path, notes: list[str],
                  probes: ProbeSettings | None = None) -> Setting | None:
    present = [r for r in sweep["run_ids"] if record_path(results_root / r).exists()]
    if len(present) < len(sweep["run_ids"]):
        notes.append(f"{name}: {len(sweep['run_ids']) - len(present)} planned run(s) have no record (sweep unfinished?).")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordSkipped)
        records = load_records(results_root, present)
    notes += [f"{name}: skipped {w.message}" for w in caught if issubclass(w.category, RecordSkipped)]
    for record in records:
        if record.get("status") != "ok":
            notes.append(f"{name}: run `{record['run_id']}` is {record.get('status')} ({record.get('error')}); left out.")
    records = [r for r in records if r.get("status") == "ok" and r.get("final_val_loss") is not None]
    if not records:
        return None
    runs = records_frame(records)
    curves = load_curves(runs)
    runs = add_probe_measures(add_curve_measures(runs, curves), curves, probes)
    return Setting(name, sweep["role"], sweep.get("command") or "", runs, curves, records)


# ----------------------------------------------------------------------------- assembling


@dataclass
class StudyReport:
    name: str
    path: Path
    directory: Path
    figures: list[Path]
    findings: list
    notes: list[str]


def _provenance(settings: Sequence[Setting]) -> tuple[str, list[str]]:
    """A sentence on the code the runs trained at, and loud notes when it was not one clean commit."""
    commits = sorted({str(r.get("git_commit")) for s in settings for r in s.records})
    notes = []
    dirty = [c for c in commits if c.endswith("-dirty") or c == "None"]
    if dirty:
        notes.append(f"**Not reproducible from a commit**: runs trained from a modified or unknown checkout "
                     f"({', '.join(dirty)}).")
    if len(commits) > 1:
        notes.append(f"Runs trained at {len(commits)} different commits ({', '.join(commits)}).")
    sentence = (f"all {sum(len(s.records) for s in settings)} runs trained at commit `{commits[0]}` (a clean checkout)"
                if len(commits) == 1 and not dirty else f"runs trained at {', '.join(f'`{c}`' for c in commits)}")
    return sentence, notes


def _intro(meta: dict, settings: dict[str, Setting], provenance: str) -> str:
    runs = [s for s in settings.values()]
    n_runs = sum(len(s.records) for s in runs)
    wall = sum(float(r.get("wall_s") or 0) for s in runs for r in s.records)
    flops = sum(float(r.get("flops_used") or 0) for s in runs for r in s.records)
    first = next(iter(settings.values())).records[0]
    return (f"{n_runs} training runs in {len(settings)} sweeps ({', '.join(s.name for s in runs)}), "
            f"{fmt_sci(flops)} training FLOPs in all (2 per multiply-add), {wall / 60:.0f} minutes of training wall time "
            f"on {first.get('device')}; {provenance}. Every number below is computed "
            f"from the run records kept in `data/`; `python -m harness report {meta['name']}` regenerates this page and "
            "its figures from them, with or without `results/`.")


def _methods(meta: dict, settings: dict[str, Setting]) -> list[str]:
    from harness.reporting.methods import convention_line

    lines = []
    for setting in settings.values():
        record = setting.records[0]
        data, recipe = record.get("data") or {}, record.get("recipe") or {}
        sweep = meta.get("sweeps", {}).get(setting.name) or {}
        tuned, source = sweep.get("lr_by_arch"), (sweep.get("sweep") or {}).get("lr_from")
        command = (f". Command, at the size's default rate (the study passes each architecture its tuned rate, "
                   f"which a command line cannot carry): `{setting.command}`" if tuned and setting.command
                   else f". Command: `{setting.command}`" if setting.command else ".")
        lines.append(f"- **{setting.name}** ({setting.role}): `{data.get('spec')}`, {data.get('tokenizer')} vocabulary "
                     f"{data.get('vocab_size')}; {record.get('budget_flops'):.3g} training FLOPs per run, "
                     f"{recipe.get('batch_tokens')} tokens/step, {_peak_lr(setting, tuned, source)}, "
                     f"{len(setting.records)} runs" + command)
    lines.append("- **Recipe** (every architecture): GPT-3's AdamW (β 0.9/0.95, weight decay 0.1 on matrices), "
                 "clip 1.0, warm-up then cosine to 10 %; seed i gives every architecture the same data order.")
    lines.append(f"- **FLOP convention**: {convention_line([r for s in settings.values() for r in s.records])}.")
    lines.append("- **Statistics**: ± is the 95 % t-interval over seeds; accuracies are pooled over items with "
                 "95 % Wilson intervals; each comparison uses the primary test its plan declares (paired t-test on "
                 "per-seed differences with the exact sign-flip p, or Welch's t-test) with Holm's correction across "
                 "the planned confirmatory family; *at chance* marks a score whose 95 % interval (seed spread plus "
                 "lm-eval's item stderr) reaches the chance level (`harness.evaluation.chance`).")
    if meta.get("source"):
        lines.append(f"- **Study file**: `{meta['source']}` (`python -m harness study {meta['source']}` reruns it; "
                     "finished runs are reused).")
    return lines


def _peak_lr(setting: Setting, tuned: dict | None = None, source: str | None = None) -> str:
    """``peak lr 0.002``, or the tuned rate of each architecture (``tuned``: the sweep's ``lr_by_arch``;
    ``source``: the sweep whose tuning chose them, when it is another one, ``lr_from``)."""
    if tuned:
        where = f" on `{source}`" if source else ""
        return (f"peak lr tuned per architecture{where} ("
                + ", ".join(f"{arch} {lr:g}" for arch, lr in tuned.items()) + ")")
    rates = sorted({(r.get("recipe") or {}).get("lr") for r in setting.records}, key=str)
    return f"peak lr {rates[0]}" if len(rates) == 1 else "peak lr per architecture (tuned, see below)"


def _tuning(out_dir: Path) -> tuple[list[str], list[Path]]:
    """The tuning section with its figure, from ``data/tuning.json`` (nothing when the study tuned nothing)."""
    data = read_tuning_data(out_dir / DATA_DIR)
    if data is None:
        return [], []
    parts, paths = ["## Learning rate, tuned per architecture", ""] + tuning_section(data), []
    figure = lr_tuning_figure(data)
    if figure is not None:
        paths = fig.save_figure(figure, out_dir / FIGURES_DIR, TUNING_FIGURE)
        parts += markdown_figure("Final validation loss against the peak learning rate in the tuning runs (mean "
                                 "over tuning seeds, each seed faint, ★ the chosen rate)", FIGURES_DIR, TUNING_FIGURE)
    return parts, paths


def _settings(meta: dict, data_root: Path, notes: list[str]) -> tuple[dict[str, Setting], dict[str, Setting]]:
    """The study's sweeps with data, by role and by sweep name."""
    by_role, by_name = {}, {}
    probes = ProbeSettings.from_dict(meta["probes"], "runs.json") if meta.get("probes") else None
    for sweep_name, sweep in meta["sweeps"].items():
        setting = _load_setting(sweep_name, sweep, data_root, notes, probes)
        if setting is not None:
            by_role[sweep["role"]] = by_name[sweep_name] = setting
    return by_role, by_name


def _findings(registered: dict | None, by_name: dict[str, Setting]) -> list:
    if registered is None:
        return []
    comparisons = planned_comparisons(effective_comparisons(registered), {n: s.runs for n, s in by_name.items()},
                                      {n: s.role for n, s in by_name.items()})
    return assess(comparisons)


def _write_tables(out_dir: Path, settings: dict[str, Setting], findings: list) -> None:
    for setting in settings.values():
        columns = [c for c in RUNS_CSV_COLUMNS if c in setting.runs.columns]
        columns += sorted(c for c in setting.runs.columns if c.startswith(("eval/", "segment/", "probe/")) and
                          not c.endswith("/n")) + [c for c in ("grad_norm_log_std", "moe_dropped_mean")
                                                   if c in setting.runs.columns]
        write_text_atomic(out_dir / f"{setting.name}.csv", setting.runs[columns].to_csv(index=False))
    write_text_atomic(out_dir / "findings.csv", pd.DataFrame(findings_rows(findings)).to_csv(index=False))


def build_study_report(name: str, *, results_dir: str | Path | None = None,
                       reports_dir: str | Path | None = None) -> StudyReport:
    """Write ``reports/<name>/`` for a study from its runs.json and data folder (refreshed from the records)."""
    results_root = Path(results_dir) if results_dir is not None else default_results_dir()
    out_dir = (Path(reports_dir) if reports_dir is not None else default_reports_dir()) / validate_name(name)
    meta = read_runs_file(out_dir)
    if meta.get("mode") != STUDY_MODE:
        raise ValueError(f"{out_dir / 'runs.json'} is not a study (mode {meta.get('mode')!r}); use build_report.")
    synced = sync_runs(results_root, out_dir, meta["run_ids"])
    notes: list[str] = [f"skipped {message}" for message in synced.skipped.values()]
    settings, by_name = _settings(meta, data_runs_dir(out_dir), notes)
    if not settings:
        raise ValueError(f"none of study {name!r}'s runs has a finished record in {results_root} or in "
                         f"{data_runs_dir(out_dir)}; run `python -m harness study {meta.get('source') or 'STUDY.yaml'}` first.")
    registered = read_plan_file(out_dir / DATA_DIR)
    findings = _findings(registered, by_name)
    provenance, provenance_notes = _provenance(list(settings.values()))
    notes = provenance_notes + notes
    throughput_md, contended = throughput_table(list(settings.values()))
    figures = study_figures_drawn(settings, out_dir / FIGURES_DIR, findings)
    wallclock, wallclock_paths = wallclock_section(list(by_name.values()), read_step_times(out_dir / DATA_DIR),
                                                   meta.get("reference") or "gpt2", out_dir / FIGURES_DIR)

    parts = [f"# {name}: the GPT family at matched compute on a CPU", "", _intro(meta, settings, provenance), ""]
    parts += markdown_notes(notes)
    parts += ["## Pre-registration", ""] + preregistration_lines(registered, findings, f"{DATA_DIR}/study.yaml") + [""]
    parts += ["## Findings", "", findings_markdown(findings), ""]
    parts += ["## Deviations from the plan", ""] + deviation_lines(registered) + [""]
    tuning_parts, tuning_paths = _tuning(out_dir)
    parts += tuning_parts
    parts += setting_sections(settings)
    probe_parts, probe_figures = probe_sections(meta, settings, out_dir / FIGURES_DIR)
    parts += probe_parts
    parts += ["## Figures", ""]
    for key, caption, _ in figures:
        parts += markdown_figure(caption, FIGURES_DIR, key)
    parts += ["## Throughput and machine load", "", throughput_md, "",
              (f"**{contended} run(s) trained while other jobs shared the CPU** (5-minute load above the cores at "
               "the end of the run): their tokens/s are lower bounds, not the model's speed; measure speed with "
               "`python -m harness bench` on an idle machine. Losses are unaffected: the FLOP budget, not the "
               "clock, ends a run." if contended else "No run trained on a contended CPU."), ""]
    parts += wallclock
    for setting in settings.values():
        serving = serving_section(setting.records, ordered_archs(setting.runs), out_dir, tag=setting.name)
        if serving:
            parts += [f"## Serving cost (`{setting.name}`)", "", serving, ""]
    parts += ["## Methods", ""]
    if meta.get("description"):
        parts += [f"**Design** (from the study file): {meta['description']}", ""]
    parts += _methods(meta, settings) + [""]
    parts += ["Data files: `findings.csv` (every comparison's numbers), "
              + ", ".join(f"`{s.name}.csv`" for s in settings.values()) + " (one row per run), `runs.json`, "
              "`data/` (what this page is computed from: each run's record, config and thinned curves, the plan "
              "and the study file as planned).", ""]
    _write_tables(out_dir, settings, findings)
    path = write_text_atomic(out_dir / "report.md", "\n".join(parts))
    figure_paths = [p for _, _, paths in figures for p in paths] + wallclock_paths + probe_figures + tuning_paths
    return StudyReport(name, path, out_dir, figure_paths, findings, notes)
