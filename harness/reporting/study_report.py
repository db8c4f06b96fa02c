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
from harness.reporting import study_figures as study_fig
from harness.reporting.curve_figures import loss_panels
from harness.reporting.forest import forest_plot
from harness.reporting.planned import planned_comparisons
from harness.runs.compact import DATA_DIR, data_runs_dir, sync_runs
from harness.reporting.plan_sections import deviation_lines, preregistration_lines
from harness.sweeps.plan import effective_comparisons, read_plan_file
from harness.sweeps.runs_file import RUNS_NAME, read_runs_file, validate_name
from harness.evaluation.chance import chance_level
from harness.reporting.findings import assess, family_size, findings_markdown, findings_rows
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
from harness.sweeps.study import STUDY_MODE, add_curve_measures, lr_base
from harness.sweeps.probe_measures import ProbeSettings, add_probe_measures
from harness.reporting import probe_section
from harness.reporting.study_tables import (Setting, band_window, evaluation_table, first_value, matching_table,
                                            moe_table, ordered_archs, quality_table, segment_table, stability_table,
                                            throughput_table)

PROBE_ORDER = ("harness_recall_16", "harness_recall_48", "harness_recall_64", "harness_recall_128", "harness_facts",
               "harness_copy", "harness_heldout")


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


def _lr_base_setting(settings: dict[str, Setting]) -> Setting | None:
    """The setting the lr sweep varies (same data); without an lr sweep the text setting (where the
    post-LN stability comparison is planned), else the synthetic one."""
    if settings.get("lr") is None:
        return settings.get("text") or settings.get("synthetic")
    frame = lr_base({role: s.runs for role, s in settings.items()})
    return next((s for s in settings.values() if s.role != "lr" and s.runs is frame), None)


def _compute_twin(settings: dict[str, Setting]) -> Setting | None:
    """The compute-matched setting the token-matched arm mirrors (same data spec), if any."""
    tokens = settings.get("tokens")
    if tokens is None:
        return None
    spec = first_value(tokens.runs, "data/spec")
    return next((s for role, s in settings.items() if role in ("synthetic", "text")
                 and first_value(s.runs, "data/spec") == spec), None)


def _reference(setting: Setting) -> str:
    archs = ordered_archs(setting.runs)
    return "gpt2" if "gpt2" in archs else archs[0]


def _mean(runs: pd.DataFrame, column: str) -> float | None:
    values = pd.to_numeric(runs[column], errors="coerce").dropna() if column in runs.columns else []
    return float(values.mean()) if len(values) else None


def _figures(settings: dict[str, Setting], figures_dir: Path, findings: list) -> list[tuple[str, str, list[Path]]]:
    """(key, caption, paths) of every figure drawn."""
    syn, text, lr = settings.get("synthetic"), settings.get("text"), settings.get("lr")
    drawn = [("forest", f"Every planned comparison: the difference relative to the second architecture's mean with its 95 % "
              f"interval, resolved / not "
              f"resolved / untestable, family of m = {family_size(findings)}", forest_plot(findings))]
    for setting in (syn, text):
        if setting is not None:
            floor = _mean(setting.runs, "entropy_floor") if setting.role == "synthetic" else None
            figure = loss_panels(setting.runs, setting.curves, ordered_archs(setting.runs),
                                 _mean(setting.runs, "unigram_val_loss"), floor, setting.name)
            drawn.append((f"loss_{setting.role}", f"{setting.name}: validation loss vs training FLOPs (full run and "
                          "the last 30 %) and vs training tokens, with the unigram baseline"
                          + (" and the entropy floor" if floor is not None else ""), figure))
    if syn is not None:
        window = band_window(syn)
        config = (syn.records[0].get("data") or {}).get("synthetic_config")
        distances = [int(c.split("_")[-1].split("/")[0]) for c in syn.runs.columns
                     if c.startswith("eval/harness_recall_") and c.endswith("/acc")]
        drawn.append(("recall_by_distance", "Recall accuracy by distance, with GPT-3's band edge",
                      study_fig.recall_by_distance(syn.runs, ordered_archs(syn.runs), sorted(distances), window,
                                                   chance_level("harness_recall_16", "acc", config))))
        drawn.append(("moe_routing", "GPT-4-style MoE: load balance and dropped assignments over training",
                      study_fig.moe_routing(syn.runs, syn.curves)))
    base = _lr_base_setting(settings)
    if base is not None:
        drawn.append(("grad_norms", f"GPT-1 (post-LN) vs GPT-2 (pre-LN): gradient norms over training ({base.name})",
                      study_fig.grad_norms(base.runs, base.curves)))
    if base is not None and lr is not None:  # per-arch tuned rates have their own figure (lr_tuning)
        frames = [s.runs for s in (base, lr)]
        points = pd.concat(frames)[["arch", "recipe/lr", "final_val_loss"]].rename(columns={"recipe/lr": "lr"})
        drawn.append(("lr_sensitivity", f"GPT-1 vs GPT-2: final loss against the learning rate ({base.name})",
                      study_fig.lr_sensitivity(points[points["arch"].isin(["gpt1", "gpt2"])])))
    out = []
    for key, caption, figure in drawn:
        if figure is not None:
            out.append((key, caption, fig.save_figure(figure, figures_dir, key)))
    return out


def _setting_sections(settings: dict[str, Setting]) -> list[str]:
    parts = []
    syn, text, lr = settings.get("synthetic"), settings.get("text"), settings.get("lr")
    if syn is not None:
        parts += [f"## Synthetic setting (`{syn.name}`)", "", quality_table(syn), "",
                  "Excess loss = validation loss − the data's exact entropy floor (0 is perfect). Per segment:", "",
                  segment_table(syn), "", "Probes (lm-eval, generated from the same generator; ± over seeds):", "",
                  evaluation_table(syn, PROBE_ORDER), ""]
        moe = moe_table(syn)
        if moe:
            parts += ["MoE routing (Switch balance term: 1 at uniform load; dropped: expert assignments over the "
                      "capacity factor, which then skip the FFN):", "", moe, ""]
    if text is not None:
        parts += [f"## Text setting (`{text.name}`)", "", quality_table(text), "",
                  "lm-eval tasks (mean ± 95 % CI over seeds; perplexities are not shown — bits per byte carries the "
                  "same information on a readable scale):", "", evaluation_table(text), ""]
    tokens = settings.get("tokens")
    twin = _compute_twin(settings)
    if tokens is not None and twin is not None:
        parts += [f"## Compute-matched (`{twin.name}`) vs token-matched (`{tokens.name}`)", "",
                  f"In the token-matched arm every architecture trains the tokens the reference ({_reference(tokens)}) "
                  "trains at the budget, and spends what those tokens cost it; a difference that survives there is "
                  "not explained by the number of tokens seen. − reference: the paired difference, seed i vs seed i.",
                  "", matching_table(twin, tokens, _reference(tokens)), ""]
        if any(c.startswith("eval/") for c in tokens.runs.columns):
            parts += ["Evaluations of the token-matched arm:", "", evaluation_table(tokens, PROBE_ORDER), ""]
    base = _lr_base_setting(settings)
    if base is not None:
        title = (f"learning rate and stability (`{base.name}` and `{lr.name}`)" if lr is not None
                 else f"stability (`{base.name}`)")
        parts += [f"## Post-LN (GPT-1) vs pre-LN (GPT-2): {title}", "", stability_table(base, lr), "",
                  "The gradient norm is the global norm before clipping at 1.0, logged every step"
                  + ("; the change is per seed (same seed and data order at both learning rates), negative when the "
                     "other learning rate helped." if lr is not None else "."), ""]
    return parts


def _probe_sections(meta: dict, settings: dict[str, Setting], figures_dir: Path) -> tuple[list[str], list[Path]]:
    """"Probes during training" for each setting whose runs logged the study's probes; and the figure files."""
    probes = ProbeSettings.from_dict(meta["probes"], "runs.json") if meta.get("probes") else None
    parts, paths = [], []
    for setting in settings.values():
        if not probe_section.has_probes(setting.runs, probes):
            continue
        archs = ordered_archs(setting.runs)
        config = (setting.records[0].get("data") or {}).get("synthetic_config")
        key = "probe_curves" if setting.role == "synthetic" else f"probe_curves_{setting.role}"
        parts += probe_section.section_lines(setting.name, probe_section.threshold_table(setting.runs, archs, probes),
                                             probes)
        figure = probe_section.probe_curves(setting.runs, setting.curves, archs, probes,
                                            chance_level("harness_recall_16", "acc", config))
        if figure is not None:
            paths += fig.save_figure(figure, figures_dir, key)
            parts += markdown_figure(f"{setting.name}: in-training recall accuracy vs training FLOPs, with chance "
                                     f"and the threshold {probes.threshold:g}", FIGURES_DIR, key)
    return parts, paths


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
        tuned = (meta.get("sweeps", {}).get(setting.name) or {}).get("lr_by_arch")
        command = (f". Command, at the size's default rate (the study passes each architecture its tuned rate, "
                   f"which a command line cannot carry): `{setting.command}`" if tuned and setting.command
                   else f". Command: `{setting.command}`" if setting.command else ".")
        lines.append(f"- **{setting.name}** ({setting.role}): `{data.get('spec')}`, {data.get('tokenizer')} vocabulary "
                     f"{data.get('vocab_size')}; {record.get('budget_flops'):.3g} training FLOPs per run, "
                     f"{recipe.get('batch_tokens')} tokens/step, {_peak_lr(setting, tuned)}, "
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


def _peak_lr(setting: Setting, tuned: dict | None = None) -> str:
    """``peak lr 0.002``, or the tuned rate of each architecture (``tuned``: the sweep's ``lr_by_arch``)."""
    if tuned:
        return "peak lr tuned per architecture (" + ", ".join(f"{arch} {lr:g}" for arch, lr in tuned.items()) + ")"
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
    figures = _figures(settings, out_dir / FIGURES_DIR, findings)
    wallclock, wallclock_paths = wallclock_section(list(by_name.values()), read_step_times(out_dir / DATA_DIR),
                                                   meta.get("reference") or "gpt2", out_dir / FIGURES_DIR)

    parts = [f"# {name}: the GPT family at matched compute on a CPU", "", _intro(meta, settings, provenance), ""]
    parts += markdown_notes(notes)
    parts += ["## Pre-registration", ""] + preregistration_lines(registered, findings, f"{DATA_DIR}/study.yaml") + [""]
    parts += ["## Findings", "", findings_markdown(findings), ""]
    parts += ["## Deviations from the plan", ""] + deviation_lines(registered) + [""]
    tuning_parts, tuning_paths = _tuning(out_dir)
    parts += tuning_parts
    parts += _setting_sections(settings)
    probe_parts, probe_figures = _probe_sections(meta, settings, out_dir / FIGURES_DIR)
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
