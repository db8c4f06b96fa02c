"""The study report: Findings from the statistics, then each setting's tables and figures.

    from harness.study_report import build_study_report
    build_study_report("gpt-family-cpu")     # reports/gpt-family-cpu/runs.json (mode "study")

Reads only the records, configs and metrics of the study's runs (``harness.study``) and
writes ``reports/<name>/report.md``, ``figures/*.png|svg``, ``findings.csv`` and one
``<sweep>.csv`` per sweep (a row per run). Every sentence of the Findings section comes from
``harness.findings``; every ± is a 95 % t-interval over seeds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness import figures as fig
from harness import study_figures as study_fig
from harness.runs_file import RUNS_NAME, read_runs_file, validate_name
from harness.evaluation.chance import at_chance, chance_level
from harness.findings import assess, findings_markdown, findings_rows
from harness.io import write_text_atomic
from harness.machine import is_contended
from harness.paths import reports_dir as default_reports_dir
from harness.paths import results_dir as default_results_dir
from harness.formatting import fmt_count, fmt_interval, fmt_sci, markdown_figure, markdown_notes, markdown_table
from harness.records import record_path
from harness.report import FIGURES_DIR, RUNS_CSV_COLUMNS
from harness.results import RecordSkipped, load_curves, load_records, records_frame
from harness.stats import t_interval
from harness.study import STUDY_MODE, add_curve_measures, gpt_family_comparisons, lr_base

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")
SHOWN_METRICS = ("acc", "acc_norm", "bits_per_byte", "exact_match", "token_acc", "excess_nll_per_token")
LOWER_IS_BETTER = ("bits_per_byte", "excess_nll_per_token")
PROBE_ORDER = ("harness_recall_16", "harness_recall_48", "harness_recall_128", "harness_facts", "harness_copy",
               "harness_heldout")


@dataclass
class Setting:
    name: str
    role: str
    command: str
    runs: pd.DataFrame
    curves: pd.DataFrame
    records: list[dict[str, Any]]


def is_study(name: str, reports_root: Path | None = None) -> bool:
    path = (reports_root or default_reports_dir()) / name / RUNS_NAME
    try:
        return path.exists() and read_runs_file(path.parent).get("mode") == STUDY_MODE
    except ValueError:
        return False


def _load_setting(name: str, sweep: dict, results_root: Path, notes: list[str]) -> Setting | None:
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
    runs = add_curve_measures(runs, curves)
    return Setting(name, sweep["role"], sweep.get("command") or "", runs, curves, records)


def _archs(runs: pd.DataFrame) -> list[str]:
    present = set(runs["arch"])
    return [a for a in ARCHS if a in present] + sorted(present - set(ARCHS))


def _values(runs: pd.DataFrame, arch: str, column: str) -> pd.Series:
    if column not in runs.columns:
        return pd.Series(dtype=float)
    return pd.to_numeric(runs.loc[runs["arch"] == arch, column], errors="coerce").dropna()


def _cell(runs: pd.DataFrame, arch: str, column: str, digits: int = 3, scale: float = 1.0) -> str:
    return fmt_interval(t_interval(_values(runs, arch, column) * scale), digits)


def band_window(setting: Setting) -> int | None:
    """GPT-3's band width (tokens) in this setting's runs, or None without a gpt3 run."""
    window = _first(setting.runs[setting.runs["arch"] == "gpt3"], "model/window")
    return int(window) if window is not None else None


def _first(runs: pd.DataFrame, column: str) -> Any:
    values = runs[column].dropna() if column in runs.columns else []
    return values.iloc[0] if len(values) else None


# ----------------------------------------------------------------------------- tables


def quality_table(setting: Setting) -> str:
    """Per architecture: size, tokens, validation loss and quality against the unigram baseline."""
    runs, text = setting.runs, setting.role == "text"
    quality, unigram = ("val_bpb", "unigram_val_bpb") if text else ("excess_loss", "unigram_excess_loss")
    unit = "bits/byte" if text else "excess nats/token"
    headers = ["arch", "seeds", "params total / active", "tokens seen", "val loss (nats/token)",
               f"val {unit}", f"unigram {unit}", "below unigram?"]
    rows = []
    for arch in _archs(runs):
        mine = runs[runs["arch"] == arch]
        model, baseline = t_interval(_values(runs, arch, quality)), _values(runs, arch, unigram).mean()
        below = "yes" if model.n and (model.high if model.n > 1 else model.mean) < baseline else "**no**"
        rows.append([arch, len(mine), f"{fmt_count(_first(mine, 'params'))} / {fmt_count(_first(mine, 'active_params'))}",
                     fmt_count(_values(runs, arch, "tokens").mean()), _cell(runs, arch, "final_val_loss", 4),
                     fmt_interval(model, 4), _cell(runs, arch, unigram, 4), below])
    return markdown_table(headers, rows)


def segment_table(setting: Setting) -> str:
    runs = setting.runs
    segments = list((setting.records[0].get("data") or {}).get("segment_names") or [])
    headers = ["arch"] + [f"{s} (excess nats/token)" for s in segments]
    rows = [[arch] + [_cell(runs, arch, f"segment/{s}/excess_loss", 3) for s in segments] for arch in _archs(runs)]
    floors = [f"{_values(runs, _archs(runs)[0], f'segment/{s}/entropy_floor').mean():.3f}" for s in segments]
    rows.append(["*entropy floor (nats/token)*"] + floors)
    return markdown_table(headers, rows)


def _eval_columns(runs: pd.DataFrame, order: Sequence[str] = ()) -> list[tuple[str, str]]:
    pairs = [tuple(c.split("/")[1:]) for c in runs.columns if c.startswith("eval/") and c.count("/") == 2]
    pairs = [(t, m) for t, m in pairs if m in SHOWN_METRICS]
    rank = {task: i for i, task in enumerate(order)}
    return sorted(pairs, key=lambda p: (rank.get(p[0], len(rank)), p[0], p[1]))


def evaluation_table(setting: Setting, order: Sequence[str] = ()) -> str:
    """lm-eval scores (mean ± 95 % CI over seeds) with the chance level and an *at chance* mark."""
    runs = setting.runs
    config = (setting.records[0].get("data") or {}).get("synthetic_config")
    pairs = _eval_columns(runs, order)
    if not pairs:
        return "n/a: these runs hold no lm-eval results."
    headers = ["arch"] + [f"{task} {metric}" for task, metric in pairs]
    rows = []
    for arch in _archs(runs):
        row = [arch]
        for task, metric in pairs:
            column = f"eval/{task}/{metric}"
            cell = _cell(runs, arch, column, 3)
            chance = chance_level(task, metric, config)
            flag = at_chance(list(_values(runs, arch, column)), list(_values(runs, arch, f"{column}/stderr")), chance,
                             metric not in LOWER_IS_BETTER)
            row.append(cell + (" *(at chance)*" if flag else ""))
        rows.append(row)
    chances = [chance_level(t, m, config) for t, m in pairs]
    rows.append(["*chance*"] + [f"{c:.3g}" if c is not None else "—" for c in chances])
    return markdown_table(headers, rows)


def moe_table(setting: Setting) -> str:
    runs = setting.runs
    moe = [a for a in _archs(runs) if _values(runs, a, "moe_dropped_mean").size]
    if not moe:
        return ""
    headers = ["arch", "balance term, last 20 % (1 = uniform)", "dropped %, last 20 %", "dropped %, whole run"]
    rows = [[a, _cell(runs, a, "moe_balance_tail", 3), _cell(runs, a, "moe_dropped_tail", 2, 100),
             _cell(runs, a, "moe_dropped_mean", 2, 100)] for a in moe]
    return markdown_table(headers, rows)


def stability_table(base: Setting, other: Setting | None) -> str:
    """GPT-1 vs GPT-2: loss at each learning rate, the per-seed change, gradient-norm variability."""
    from harness.study import lr_degradation

    base_lr = _first(base.runs, "recipe/lr")
    headers = ["arch", f"val loss at lr {base_lr:g}"]
    if other is not None:
        headers += [f"val loss at lr {_first(other.runs, 'recipe/lr'):g}", "change (nats/token)"]
    headers += ["std of ln ‖g‖ after warm-up", "max / median ‖g‖"]
    rows = []
    for arch in ("gpt1", "gpt2"):
        if not _values(base.runs, arch, "final_val_loss").size:
            continue
        row = [arch, _cell(base.runs, arch, "final_val_loss", 4)]
        if other is not None:
            row += [_cell(other.runs, arch, "final_val_loss", 4),
                    fmt_interval(t_interval(lr_degradation(base.runs, other.runs, arch)), 4)]
        row += [_cell(base.runs, arch, "grad_norm_log_std", 3), _cell(base.runs, arch, "grad_norm_max_ratio", 2)]
        rows.append(row)
    return markdown_table(headers, rows)


def throughput_table(settings: Sequence[Setting]) -> tuple[str, int]:
    """tokens/s per setting and arch, with the machine load: contended runs are discounted."""
    headers = ["setting", "arch", "train tokens/s (mean, min–max)", "5-min load at end (mean)", "runs on a contended CPU"]
    rows, contended_total = [], 0
    for setting in settings:
        by_id = {r["run_id"]: r for r in setting.records}
        for arch in _archs(setting.runs):
            ids = setting.runs.loc[setting.runs["arch"] == arch, "run_id"]
            loads = [(by_id[i].get("machine_load") or {}).get("end") for i in ids]
            flags = [is_contended(load) for load in loads]
            contended = sum(1 for f in flags if f)
            contended_total += contended
            speeds = _values(setting.runs, arch, "tokens_per_s")
            load_values = [load["loadavg_5m"] for load in loads if load and load.get("loadavg_5m") is not None]
            rows.append([setting.name, arch, f"{speeds.mean():.0f} ({speeds.min():.0f}–{speeds.max():.0f})",
                         f"{sum(load_values) / len(load_values):.1f}" if load_values else "n/a",
                         f"{contended} of {len(ids)}" if any(f is not None for f in flags) else "unknown"])
    return markdown_table(headers, rows), contended_total


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
    """The setting the lr sweep varies (same data), else the synthetic one."""
    frame = lr_base({role: s.runs for role, s in settings.items()})
    return next((s for s in settings.values() if s.role != "lr" and s.runs is frame), None)


def _figures(settings: dict[str, Setting], figures_dir: Path) -> list[tuple[str, str, list[Path]]]:
    """(key, caption, paths) of every figure drawn."""
    syn, text, lr = settings.get("synthetic"), settings.get("text"), settings.get("lr")
    drawn = []
    for setting in (syn, text):
        if setting is not None:
            figure = fig.loss_curves(setting.runs, setting.curves, _archs(setting.runs), "flops")
            drawn.append((f"loss_{setting.role}", f"{setting.name}: validation loss vs training FLOPs", figure))
    if syn is not None:
        window = band_window(syn)
        config = (syn.records[0].get("data") or {}).get("synthetic_config")
        distances = [int(c.split("_")[-1].split("/")[0]) for c in syn.runs.columns
                     if c.startswith("eval/harness_recall_") and c.endswith("/acc")]
        drawn.append(("recall_by_distance", "Recall accuracy by distance, with GPT-3's band edge",
                      study_fig.recall_by_distance(syn.runs, _archs(syn.runs), sorted(distances), window,
                                                   chance_level("harness_recall_16", "acc", config))))
        drawn.append(("moe_routing", "GPT-4-style MoE: load balance and dropped assignments over training",
                      study_fig.moe_routing(syn.runs, syn.curves)))
    base = _lr_base_setting(settings)
    if base is not None:
        drawn.append(("grad_norms", f"GPT-1 (post-LN) vs GPT-2 (pre-LN): gradient norms over training ({base.name})",
                      study_fig.grad_norms(base.runs, base.curves)))
        frames = [s.runs for s in (base, lr) if s is not None]
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
    base = _lr_base_setting(settings)
    if base is not None:
        parts += [f"## Post-LN (GPT-1) vs pre-LN (GPT-2): learning rate and stability (`{base.name}`"
                  + (f" and `{lr.name}`)" if lr is not None else ")"), "", stability_table(base, lr), "",
                  "The gradient norm is the global norm before clipping at 1.0, logged every step; the change is "
                  "per seed (same seed and data order at both learning rates), negative when the other learning "
                  "rate helped.", ""]
    return parts


def _intro(meta: dict, settings: dict[str, Setting], provenance: str) -> str:
    runs = [s for s in settings.values()]
    n_runs = sum(len(s.records) for s in runs)
    wall = sum(float(r.get("wall_s") or 0) for s in runs for r in s.records)
    flops = sum(float(r.get("flops_used") or 0) for s in runs for r in s.records)
    first = next(iter(settings.values())).records[0]
    return (f"{n_runs} training runs in {len(settings)} sweeps ({', '.join(s.name for s in runs)}), "
            f"{fmt_sci(flops)} training FLOPs in all (2 per multiply-add), {wall / 60:.0f} minutes of training wall time "
            f"on {first.get('device')}; {provenance}. Every number below is computed "
            f"from the run records; `python -m harness report {meta['name']}` regenerates this page.")


def _methods(meta: dict, settings: dict[str, Setting]) -> list[str]:
    from harness.flops import CONVENTION

    lines = []
    for setting in settings.values():
        record = setting.records[0]
        data, recipe = record.get("data") or {}, record.get("recipe") or {}
        lines.append(f"- **{setting.name}** ({setting.role}): `{data.get('spec')}`, {data.get('tokenizer')} vocabulary "
                     f"{data.get('vocab_size')}; {record.get('budget_flops'):.3g} training FLOPs per run, "
                     f"{recipe.get('batch_tokens')} tokens/step, peak lr {recipe.get('lr')}, "
                     f"{len(setting.records)} runs. Command: `{setting.command or 'n/a'}`")
    lines.append("- **Recipe** (every architecture): GPT-3's AdamW (β 0.9/0.95, weight decay 0.1 on matrices), "
                 "clip 1.0, warm-up then cosine to 10 %; seed i gives every architecture the same data order.")
    lines.append(f"- **FLOP convention**: {CONVENTION}.")
    lines.append("- **Statistics**: ± is the 95 % t-interval over seeds; comparisons are Welch's t-test with "
                 "Holm's correction across the Findings family; *at chance* marks a score whose 95 % interval "
                 "(seed spread plus lm-eval's item stderr) reaches the chance level (`harness.evaluation.chance`).")
    if meta.get("source"):
        lines.append(f"- **Study file**: `{meta['source']}` (`python -m harness study {meta['source']}` reruns it; "
                     "finished runs are reused).")
    return lines


def build_study_report(name: str, *, results_dir: str | Path | None = None,
                       reports_dir: str | Path | None = None) -> StudyReport:
    """Write ``reports/<name>/`` for a study from its runs.json and the records."""
    results_root = Path(results_dir) if results_dir is not None else default_results_dir()
    out_dir = (Path(reports_dir) if reports_dir is not None else default_reports_dir()) / validate_name(name)
    meta = read_runs_file(out_dir)
    if meta.get("mode") != STUDY_MODE:
        raise ValueError(f"{out_dir / 'runs.json'} is not a study (mode {meta.get('mode')!r}); use build_report.")
    notes: list[str] = []
    settings: dict[str, Setting] = {}
    for sweep_name, sweep in meta["sweeps"].items():
        setting = _load_setting(sweep_name, sweep, results_root, notes)
        if setting is not None:
            settings[sweep["role"]] = setting
    if not settings:
        raise ValueError(f"none of study {name!r}'s runs has a finished record in {results_root}; run "
                         f"`python -m harness study {meta.get('source') or 'STUDY.yaml'}` first.")
    syn, lr = settings.get("synthetic"), settings.get("lr")
    window = band_window(syn) if syn is not None else None
    base = _lr_base_setting(settings)
    comparisons = gpt_family_comparisons(
        {role: s.runs for role, s in settings.items()}, window,
        _first(base.runs, "recipe/lr") if base else None, _first(lr.runs, "recipe/lr") if lr else None)
    findings = assess(comparisons)
    provenance, provenance_notes = _provenance(list(settings.values()))
    notes = provenance_notes + notes
    throughput_md, contended = throughput_table(list(settings.values()))
    figures = _figures(settings, out_dir / FIGURES_DIR)

    parts = [f"# {name}: the GPT family at matched compute on a CPU", "", _intro(meta, settings, provenance), ""]
    parts += markdown_notes(notes)
    parts += ["## Findings", "", findings_markdown(findings), ""]
    parts += _setting_sections(settings)
    parts += ["## Figures", ""]
    for key, caption, _ in figures:
        parts += markdown_figure(caption, FIGURES_DIR, key)
    parts += ["## Throughput and machine load", "", throughput_md, "",
              (f"**{contended} run(s) trained while other jobs shared the CPU** (5-minute load above the cores at "
               "the end of the run): their tokens/s are lower bounds, not the model's speed; measure speed with "
               "`python -m harness bench` on an idle machine. Losses are unaffected: the FLOP budget, not the "
               "clock, ends a run." if contended else "No run trained on a contended CPU."), ""]
    parts += ["## Methods", ""]
    if meta.get("description"):
        parts += [f"**Design** (from the study file): {meta['description']}", ""]
    parts += _methods(meta, settings) + [""]
    parts += ["Data files: `findings.csv` (every comparison's numbers), "
              + ", ".join(f"`{s.name}.csv`" for s in settings.values()) + " (one row per run), `runs.json`.", ""]
    for setting in settings.values():
        columns = [c for c in RUNS_CSV_COLUMNS if c in setting.runs.columns]
        columns += sorted(c for c in setting.runs.columns if c.startswith(("eval/", "segment/")) and
                          not c.endswith("/n")) + [c for c in ("grad_norm_log_std", "moe_dropped_mean")
                                                   if c in setting.runs.columns]
        write_text_atomic(out_dir / f"{setting.name}.csv", setting.runs[columns].to_csv(index=False))
    write_text_atomic(out_dir / "findings.csv", pd.DataFrame(findings_rows(findings)).to_csv(index=False))
    path = write_text_atomic(out_dir / "report.md", "\n".join(parts))
    return StudyReport(name, path, out_dir, [p for _, _, paths in figures for p in paths], findings, notes)
