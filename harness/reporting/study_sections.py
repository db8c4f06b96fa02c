"""The study report's per-setting parts: each setting's tables, its figures and the in-training probe sections.

``setting_sections`` writes the synthetic, recall, text, token-matched and stability sections;
``study_figures_drawn`` draws the forest plot, each setting's loss panels, recall by distance, MoE
routing and gradient norms; ``probe_sections`` the "Probes during training" section of every setting
whose runs logged the study's probes. Settings are keyed by role (``harness.sweeps.study.ROLES``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.evaluation.chance import chance_level, recall_context_baseline
from harness.reporting import figures as fig
from harness.reporting import probe_section
from harness.reporting import study_figures as study_fig
from harness.reporting.curve_figures import loss_panels
from harness.reporting.findings import family_size
from harness.reporting.formatting import markdown_figure
from harness.reporting.forest import forest_plot
from harness.reporting.report import FIGURES_DIR
from harness.reporting.study_tables import (Setting, band_window, evaluation_table, first_value, matching_table,
                                            moe_table, ordered_archs, quality_table, segment_table, stability_table)
from harness.sweeps.probe_measures import ProbeSettings
from harness.sweeps.study import lr_base

PROBE_ORDER = ("harness_recall_16", "harness_recall_48", "harness_recall_64", "harness_recall_128", "harness_facts",
               "harness_copy", "harness_heldout")


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


def _synthetic_config(setting: Setting) -> dict | None:
    """The generator config of the setting's synthetic data (None for text)."""
    return (setting.records[0].get("data") or {}).get("synthetic_config")


def _mean(runs: pd.DataFrame, column: str) -> float | None:
    values = pd.to_numeric(runs[column], errors="coerce").dropna() if column in runs.columns else []
    return float(values.mean()) if len(values) else None


def study_figures_drawn(settings: dict[str, Setting], figures_dir: Path, findings: list) -> list[tuple[str, str, list[Path]]]:
    """(key, caption, paths) of every figure drawn."""
    syn, text, lr = settings.get("synthetic"), settings.get("text"), settings.get("lr")
    drawn = [("forest", f"Every planned comparison: the difference relative to the second architecture's mean with its 95 % "
              f"interval, resolved / not "
              f"resolved / untestable, family of m = {family_size(findings)}", forest_plot(findings))]
    recall = settings.get("recall")
    for setting in (syn, recall, text):
        if setting is not None:
            floor = _mean(setting.runs, "entropy_floor") if setting.role != "text" else None
            figure = loss_panels(setting.runs, setting.curves, ordered_archs(setting.runs),
                                 _mean(setting.runs, "unigram_val_loss"), floor, setting.name)
            drawn.append((f"loss_{setting.role}", f"{setting.name}: validation loss vs training FLOPs (full run and "
                          "the last 30 %) and vs training tokens, with the unigram baseline"
                          + (" and the entropy floor" if floor is not None else ""), figure))
    for setting in (syn, recall):
        if setting is not None:
            key = "recall_by_distance" + ("" if setting.role == "synthetic" else f"_{setting.role}")
            caption = "Recall accuracy by distance, with GPT-3's band edge"
            drawn.append((key, caption if setting.role == "synthetic" else f"{setting.name}: {caption[0].lower()}{caption[1:]}",
                          _recall_by_distance(setting)))
    if syn is not None:
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


def _recall_by_distance(setting: Setting):
    config = _synthetic_config(setting)
    distances = [int(c.split("_")[-1].split("/")[0]) for c in setting.runs.columns
                 if c.startswith("eval/harness_recall_") and c.endswith("/acc")]
    return study_fig.recall_by_distance(setting.runs, ordered_archs(setting.runs), sorted(distances),
                                        band_window(setting), chance_level("harness_recall_16", "acc", config),
                                        recall_context_baseline(config))


def _recall_bar(setting: Setting) -> list[str]:
    """The sentence (and a blank line) that puts recall accuracy against chance and the context baseline."""
    config = _synthetic_config(setting) or {}
    chance, baseline = chance_level("harness_recall_16", "acc", config), recall_context_baseline(config)
    if chance is None or baseline is None:
        return []
    return [(f"Recall accuracy: chance is {chance:.3g} (1 of {config['n_values']} values); guessing among the distinct "
            f"values of the probe's definition block ({config['recall_pairs']} pairs) scores {baseline:.3f} "
            "(E[1 / distinct values]). Only accuracy above that bar shows keys bound to their values."), ""]


def setting_sections(settings: dict[str, Setting]) -> list[str]:
    parts = []
    syn, text, lr = settings.get("synthetic"), settings.get("text"), settings.get("lr")
    if syn is not None:
        parts += [f"## Synthetic setting (`{syn.name}`)", "", quality_table(syn), "",
                  "Excess loss = validation loss − the data's exact entropy floor (0 is perfect). Per segment:", "",
                  segment_table(syn), "", "Probes (lm-eval, generated from the same generator; ± over seeds):", "",
                  evaluation_table(syn, PROBE_ORDER), "", *_recall_bar(syn)]
        moe = moe_table(syn)
        if moe:
            parts += ["MoE routing (Switch balance term: 1 at uniform load; dropped: expert assignments over the "
                      "capacity factor, which then skip the FFN):", "", moe, ""]
    recall = settings.get("recall")
    if recall is not None:
        parts += [f"## Recall setting (`{recall.name}`)", "", quality_table(recall), "",
                  "A synthetic corpus centred on key → value recall (its spec is under Methods). Excess loss per "
                  "segment:", "", segment_table(recall), "", "Probes (lm-eval, generated from the same generator; "
                  "± over seeds):", "", evaluation_table(recall, PROBE_ORDER), "", *_recall_bar(recall)]
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


def probe_sections(meta: dict, settings: dict[str, Setting], figures_dir: Path) -> tuple[list[str], list[Path]]:
    """"Probes during training" for each setting whose runs logged the study's probes; and the figure files."""
    probes = ProbeSettings.from_dict(meta["probes"], "runs.json") if meta.get("probes") else None
    parts, paths = [], []
    for setting in settings.values():
        if not probe_section.has_probes(setting.runs, probes):
            continue
        archs = ordered_archs(setting.runs)
        config = _synthetic_config(setting)
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
