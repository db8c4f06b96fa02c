"""The study report's per-setting tables: ``Setting`` (one sweep's runs) → markdown tables.

Every ± is a 95 % t-interval over seeds (``harness.reporting.stats``); losses are in nats/token.
Architectures appear in ``ARCHS`` order, any others after them by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from harness.evaluation.chance import at_chance, chance_level
from harness.reporting.formatting import fmt_count, fmt_interval, markdown_table
from harness.machine import is_contended
from harness.reporting.proportions import POOLED_METRICS, pooled_accuracy
from harness.reporting.stats import t_interval

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")
SHOWN_METRICS = ("acc", "acc_norm", "bits_per_byte", "exact_match", "token_acc", "excess_nll_per_token")
LOWER_IS_BETTER = ("bits_per_byte", "excess_nll_per_token")


@dataclass
class Setting:
    """One sweep of the study: its role (synthetic, text, lr, tokens), command, runs frame, curves and ok records."""

    name: str
    role: str
    command: str
    runs: pd.DataFrame
    curves: pd.DataFrame
    records: list[dict[str, Any]]


def ordered_archs(runs: pd.DataFrame) -> list[str]:
    """The architectures in ``runs``, in ``ARCHS`` order, then any others by name."""
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
    window = first_value(setting.runs[setting.runs["arch"] == "gpt3"], "model/window")
    return int(window) if window is not None else None


def first_value(runs: pd.DataFrame, column: str) -> Any:
    """The first non-missing value of ``column`` in ``runs``, or None."""
    values = runs[column].dropna() if column in runs.columns else []
    return values.iloc[0] if len(values) else None


def quality_table(setting: Setting) -> str:
    """Per architecture: size, tokens, validation loss and quality against the unigram baseline."""
    runs, text = setting.runs, setting.role == "text"
    quality, unigram = ("val_bpb", "unigram_val_bpb") if text else ("excess_loss", "unigram_excess_loss")
    unit = "bits/byte" if text else "excess nats/token"
    headers = ["arch", "seeds", "params total / active", "tokens seen", "val loss (nats/token)",
               f"val {unit}", f"unigram {unit}", "below unigram?"]
    rows = []
    for arch in ordered_archs(runs):
        mine = runs[runs["arch"] == arch]
        model, baseline = t_interval(_values(runs, arch, quality)), _values(runs, arch, unigram).mean()
        below = "yes" if model.n and (model.high if model.n > 1 else model.mean) < baseline else "**no**"
        rows.append([arch, len(mine), f"{fmt_count(first_value(mine, 'params'))} / {fmt_count(first_value(mine, 'active_params'))}",
                     fmt_count(_values(runs, arch, "tokens").mean()), _cell(runs, arch, "final_val_loss", 4),
                     fmt_interval(model, 4), _cell(runs, arch, unigram, 4), below])
    return markdown_table(headers, rows)


def matching_table(compute: Setting, tokens: Setting, reference: str) -> str:
    """Per architecture, the compute-matched and the token-matched arm side by side: tokens, training FLOPs,
    the quality (excess loss, or bits/byte on text) and its paired difference to ``reference`` (seed i vs
    seed i, 95 % t-interval), so "more tokens" and "better per token" can be told apart."""
    text = _values(compute.runs, ordered_archs(compute.runs)[0], "entropy_floor").empty  # no floor: real text
    quality, unit = ("val_bpb", "bits/byte") if text else ("excess_loss", "excess nats/token")
    headers = ["arch"] + [f"{arm}: {what}" for arm in ("compute-matched", "token-matched")
                          for what in ("tokens", "training FLOPs", unit, f"− {reference}")]
    rows = []
    for arch in ordered_archs(pd.concat([compute.runs, tokens.runs])):
        row = [arch]
        for setting in (compute, tokens):
            runs = setting.runs
            flops = _values(runs, arch, "flops_used")
            row += [fmt_count(_values(runs, arch, "tokens").mean()), f"{flops.mean():.3g}" if len(flops) else "—",
                    _cell(runs, arch, quality, 4), fmt_interval(paired_difference(runs, arch, reference, quality), 4)]
        rows.append(row)
    return markdown_table(headers, rows)


def paired_difference(runs: pd.DataFrame, arch: str, reference: str, column: str):
    """``column`` of ``arch`` − of ``reference``, seed by seed (95 % t-interval); empty for the reference itself."""
    if arch == reference or column not in runs.columns:
        return t_interval(pd.Series(dtype=float))
    a = runs[runs["arch"] == arch].set_index("seed")[column]
    b = runs[runs["arch"] == reference].set_index("seed")[column]
    seeds = sorted(set(a.index) & set(b.index))
    return t_interval(pd.to_numeric(pd.Series([a[s] - b[s] for s in seeds]), errors="coerce").dropna())


def segment_table(setting: Setting) -> str:
    runs = setting.runs
    named = list((setting.records[0].get("data") or {}).get("segment_names") or [])
    segments = [s for s in named if f"segment/{s}/excess_loss" in runs.columns  # the segments the data has
                and pd.to_numeric(runs[f"segment/{s}/excess_loss"], errors="coerce").notna().any()]
    headers = ["arch"] + [f"{s} (excess nats/token)" for s in segments]
    rows = [[arch] + [_cell(runs, arch, f"segment/{s}/excess_loss", 3) for s in segments] for arch in ordered_archs(runs)]
    floors = [f"{_values(runs, ordered_archs(runs)[0], f'segment/{s}/entropy_floor').mean():.3f}" for s in segments]
    rows.append(["*entropy floor (nats/token)*"] + floors)
    return markdown_table(headers, rows)


def _eval_columns(runs: pd.DataFrame, order: Sequence[str] = ()) -> list[tuple[str, str]]:
    pairs = [tuple(c.split("/")[1:]) for c in runs.columns if c.startswith("eval/") and c.count("/") == 2]
    pairs = [(t, m) for t, m in pairs if m in SHOWN_METRICS]
    rank = {task: i for i, task in enumerate(order)}
    return sorted(pairs, key=lambda p: (rank.get(p[0], len(rank)), p[0], p[1]))


def _accuracy_cell(runs: pd.DataFrame, arch: str, column: str) -> str | None:
    """``0.031 [0.018, 0.052]``: pooled accuracy with its 95 % Wilson interval (None without item counts)."""
    if column not in runs.columns or f"{column}/n" not in runs.columns:
        return None
    rows = runs[runs["arch"] == arch]
    accuracy, low, high, items = pooled_accuracy(list(pd.to_numeric(rows[column], errors="coerce")),
                                                 list(pd.to_numeric(rows[f"{column}/n"], errors="coerce")))
    return f"{accuracy:.3f} [{low:.3f}, {high:.3f}]" if items else None


def evaluation_table(setting: Setting, order: Sequence[str] = ()) -> str:
    """lm-eval scores with the chance level and an *at chance* mark: accuracies pooled over items with
    the 95 % Wilson interval [low, high] when the records count the items, else mean ± 95 % CI over seeds."""
    runs = setting.runs
    config = (setting.records[0].get("data") or {}).get("synthetic_config")
    pairs = _eval_columns(runs, order)
    if not pairs:
        return "These runs hold no lm-eval results."
    headers = ["arch"] + [f"{task} {metric}" for task, metric in pairs]
    rows = []
    for arch in ordered_archs(runs):
        row = [arch]
        for task, metric in pairs:
            column = f"eval/{task}/{metric}"
            cell = _accuracy_cell(runs, arch, column) if metric in POOLED_METRICS else None
            cell = cell or _cell(runs, arch, column, 3)
            chance = chance_level(task, metric, config)
            flag = at_chance(list(_values(runs, arch, column)), list(_values(runs, arch, f"{column}/stderr")), chance,
                             metric not in LOWER_IS_BETTER)
            row.append(cell + (" *(at chance)*" if flag else ""))
        rows.append(row)
    chances = [chance_level(t, m, config) for t, m in pairs]
    rows.append(["*chance*"] + [f"{c:.3g}" if c is not None else "—" for c in chances])
    rows.append(["*n (documents scored per run)*"] + [_documents(runs, f"eval/{t}/{m}/n") for t, m in pairs])
    return markdown_table(headers, rows)


def _documents(runs: pd.DataFrame, column: str) -> str:
    """The distinct lm-eval n of a column over runs: ``200`` or ``100–200``."""
    counts = sorted({int(n) for n in pd.to_numeric(runs.get(column, pd.Series(dtype=float)), errors="coerce").dropna()})
    if not counts:
        return "not recorded"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def moe_table(setting: Setting) -> str:
    runs = setting.runs
    moe = [a for a in ordered_archs(runs) if _values(runs, a, "moe_dropped_mean").size]
    if not moe:
        return ""
    headers = ["arch", "balance term, last 20 % (1 = uniform)", "dropped %, last 20 %", "dropped %, whole run"]
    rows = [[a, _cell(runs, a, "moe_balance_tail", 3), _cell(runs, a, "moe_dropped_tail", 2, 100),
             _cell(runs, a, "moe_dropped_mean", 2, 100)] for a in moe]
    return markdown_table(headers, rows)


def _rate(runs: pd.DataFrame, arch: str) -> str:
    """The peak learning rate ``arch`` trained at in ``runs`` (each arch may have its own, tuned)."""
    rates = _values(runs, arch, "recipe/lr").unique()
    return ", ".join(f"{rate:g}" for rate in sorted(rates)) or "—"


def stability_table(base: Setting, other: Setting | None) -> str:
    """GPT-1 vs GPT-2: loss at each learning rate, the per-seed change, gradient-norm variability."""
    from harness.sweeps.study import lr_degradation

    headers = ["arch", "peak lr", "val loss (nats/token)"]
    if other is not None:
        headers += ["other peak lr", "val loss there", "change (nats/token)"]
    headers += ["std of ln ‖g‖ after warm-up", "max / median ‖g‖"]
    rows = []
    for arch in ("gpt1", "gpt2"):
        if not _values(base.runs, arch, "final_val_loss").size:
            continue
        row = [arch, _rate(base.runs, arch), _cell(base.runs, arch, "final_val_loss", 4)]
        if other is not None:
            row += [_rate(other.runs, arch), _cell(other.runs, arch, "final_val_loss", 4),
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
        for arch in ordered_archs(setting.runs):
            ids = setting.runs.loc[setting.runs["arch"] == arch, "run_id"]
            loads = [(by_id[i].get("machine_load") or {}).get("end") for i in ids]
            flags = [is_contended(load) for load in loads]
            contended = sum(1 for f in flags if f)
            contended_total += contended
            speeds = _values(setting.runs, arch, "tokens_per_s")
            load_values = [load["loadavg_5m"] for load in loads if load and load.get("loadavg_5m") is not None]
            rows.append([setting.name, arch, f"{speeds.mean():.0f} ({speeds.min():.0f}–{speeds.max():.0f})",
                         f"{sum(load_values) / len(load_values):.1f}" if load_values else "—",
                         f"{contended} of {len(ids)}" if any(f is not None for f in flags) else "unknown"])
    return markdown_table(headers, rows), contended_total

