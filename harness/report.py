"""The comparison report, regenerated from run records alone.

    from harness.report import build_report
    report = build_report(["compare-nano-2e11"])          # a name made by `harness compare`
    report = build_report(["gpt2-nano-...-s0", "gpt3-nano-...-s0"], name="mine")   # run ids

writes ``reports/<name>/``: ``report.md`` (summary table, significance against the
reference architecture, isoFLOP fits when the runs hold several sizes at a budget, figures,
methods), ``figures/*.png`` and ``*.svg``, ``runs.csv`` (one row per run, the
``harness.results`` frame's main columns), ``summary.csv`` (the summary table's numbers)
and ``runs.json`` (the run ids, so ``python -m harness report <name>`` regenerates it).

Refusals (``ValueError``, one sentence): runs on different datasets, or from budgets the
report was not planned for, unless ``allow_mixed``; no readable finished run at all.
"""

from __future__ import annotations

import hashlib
import math
import platform
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.runs_file import DEFAULT_ARCHS, REFERENCE_ARCH, RUNS_NAME, read_runs_file, validate_name
from harness.io import write_json_atomic, write_text_atomic
from harness.paths import reports_dir as default_reports_dir
from harness.paths import results_dir as default_results_dir
from harness.results import RecordSkipped, eval_columns, load_curves, load_records, records_frame
from harness.stats import IsoFlopFit, compare_optima, fit_isoflop, t_interval, welch_test

REPORT_NAME = "report.md"
FIGURES_DIR = "figures"
ISOFLOP_X = "active_params"
NOISY_THROUGHPUT = 1.5  # max/min tokens/s across seeds of one model above which the report warns
RUNS_CSV_COLUMNS = (
    "run_id", "status", "arch", "variant", "seed", "budget_flops", "flops_used", "tokens", "steps", "params",
    "active_params", "train_flops_per_token", "final_val_loss", "val_bpb", "excess_loss", "wall_s", "tokens_per_s",
    "mfu", "device", "dtype", "git_commit",
)


# ----------------------------------------------------------------------------- formatting


def fmt_count(value: Any) -> str:
    """1234567 → ``1.23M`` (k, M, B, T)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    value = float(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_sci(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}g}" if 1e-3 <= abs(float(value)) < 1e4 else f"{float(value):.{digits - 1}e}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; ``align`` per column: ``l`` or ``r`` (default: first l, rest r)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    for row in rows:
        lines.append("| " + " | ".join(escape(cell) for cell in row) + " |")
    return "\n".join(lines)


def _num(series: pd.Series | None) -> pd.Series:
    if series is None:
        return pd.Series(dtype=float)
    return pd.to_numeric(series, errors="coerce")


def _range(series: pd.Series | None, digits: int = 3, scale: float = 1.0) -> str:
    """Mean over seeds with the (min–max) range: for throughput, MFU and wall time."""
    values = _num(series).dropna() * scale
    if len(values) == 0:
        return "n/a"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ({values.min():.{digits}f}–{values.max():.{digits}f})"


def _ci(series: pd.Series | None, digits: int = 3, scale: float = 1.0) -> str:
    return t_interval(_num(series).dropna() * scale).format(digits)


# ----------------------------------------------------------------------------- inputs


@dataclass
class ReportInputs:
    name: str
    run_ids: list[str]
    meta: dict[str, Any] | None = None  # runs.json of a compare report
    missing: list[str] = field(default_factory=list)


def resolve_targets(targets: Sequence[str], name: str | None = None, reports_root: Path | None = None,
                    results_root: Path | None = None) -> ReportInputs:
    """A report name (``reports/<name>/runs.json``) or run ids → the run ids to report."""
    reports_root = reports_root or default_reports_dir()
    results_root = results_root or default_results_dir()
    targets = [t for t in targets if t]
    if not targets:
        raise ValueError("give a report name (made by `harness compare`) or one or more run ids.")
    if len(targets) == 1 and (reports_root / targets[0] / RUNS_NAME).exists() and not (results_root / targets[0]).is_dir():
        meta = read_runs_file(reports_root / targets[0])
        run_ids = list(dict.fromkeys(meta["run_ids"]))
        present = [r for r in run_ids if (results_root / r / "record.json").exists()]
        missing = [r for r in run_ids if r not in present]
        return ReportInputs(validate_name(name or targets[0]), present, meta, missing)
    run_ids = list(dict.fromkeys(targets))
    for run_id in run_ids:
        if not (results_root / run_id / "record.json").exists():
            known = reports_root / run_id
            hint = f" ({known} has no {RUNS_NAME})" if known.is_dir() else ""
            raise FileNotFoundError(
                f"{run_id!r} is neither a report in {reports_root}{hint} nor a run in {results_root}; "
                f"list runs with `python -m harness results`."
            )
    if name is None:
        name = "runs-" + hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:8]
    return ReportInputs(validate_name(name), run_ids, None, [])


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


def check_comparable(runs: pd.DataFrame, planned_budgets: Sequence[float] | None = None, allow_mixed: bool = False) -> list[str]:
    """Refuse (``ValueError``) runs from different datasets or unplanned budgets; notes if allowed."""
    notes = []
    keys = runs.apply(_dataset_key, axis=1)
    if keys.nunique() > 1:
        labels = sorted({_dataset_label(row) for _, row in runs.iterrows()})
        if len(labels) == 1:
            labels = [f"{labels[0]} with {keys.nunique()} different validation sets"]
        message = f"the runs were trained on {keys.nunique()} different datasets ({'; '.join(labels)})"
        if not allow_mixed:
            raise ValueError(f"{message}; a report compares runs on one dataset — pass --allow-mixed to report them anyway.")
        notes.append(f"Mixed datasets (--allow-mixed): {message}; their losses are not directly comparable.")
    budgets = sorted(set(_num(runs["budget_flops"]).dropna()))
    unplanned = [b for b in budgets if planned_budgets is None or not any(math.isclose(b, p, rel_tol=1e-9) for p in planned_budgets)]
    if len(budgets) > 1 and (planned_budgets is None or unplanned):
        message = f"the runs come from {len(budgets)} different budgets ({', '.join(f'{b:.3g}' for b in budgets)} FLOPs)"
        if not allow_mixed:
            raise ValueError(
                f"{message}; a matched-compute report needs one budget (or a compare sweep that planned several) — "
                f"pass --allow-mixed to report them side by side anyway."
            )
        notes.append(f"Mixed budgets (--allow-mixed): {message}; rows are grouped by budget.")
    return notes


def arch_order(runs: pd.DataFrame, meta: dict | None) -> list[str]:
    present = list(dict.fromkeys(runs["arch"]))
    preferred = list((meta or {}).get("archs") or []) + list(DEFAULT_ARCHS)
    return [a for a in dict.fromkeys(preferred) if a in present] + sorted(a for a in present if a not in preferred)


def _groups(runs: pd.DataFrame, archs: Sequence[str]):
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


# ----------------------------------------------------------------------------- sections


def summary_section(runs: pd.DataFrame, archs: Sequence[str], evals: list[tuple[str, str, str]], kind: str):
    """The summary table (markdown) and its numbers (DataFrame)."""
    several_budgets = runs["budget_flops"].nunique() > 1
    several_variants = runs["variant"].nunique() > 1
    quality = ("val_bpb", "val bits/byte (mean ± 95 % CI)") if kind == "text" else (
        "excess_loss", "excess loss over entropy floor (nats/token, mean ± 95 % CI)")
    headers = ["arch"]
    if several_budgets:
        headers.append("budget (FLOPs)")
    if several_variants:
        headers.append("model")
    headers += [
        "seeds", "params total / active", "train FLOPs/token", "tokens seen", "FLOPs used (% of budget)",
        "val loss (nats/token, mean ± 95 % CI)", quality[1],
    ]
    headers += [f"{task} {metric} (± stderr)" for _, task, metric in evals]
    headers += ["train tokens/s (mean, min–max)", "MFU (%)", "wall time (s)"]
    rows, numbers = [], []
    for budget, variant, arch, group in _groups(runs, archs):
        first = group.iloc[0]
        row = [arch]
        if several_budgets:
            row.append(fmt_sci(budget))
        if several_variants:
            row.append(variant)
        used = _num(group["flops_used"]).mean()
        loss = t_interval(_num(group["final_val_loss"]).dropna())
        qual = t_interval(_num(group.get(quality[0])).dropna())
        row += [
            f"{loss.n}",
            f"{fmt_count(first['params'])} / {fmt_count(first['active_params'])}",
            fmt_sci(first["train_flops_per_token"]),
            fmt_count(_num(group["tokens"]).mean()),
            f"{fmt_sci(used)} ({100 * used / budget:.1f} %)",
            loss.format(4),
            qual.format(4),
        ]
        number = {
            "budget_flops": budget, "variant": variant, "arch": arch, "seeds": loss.n,
            "params": first["params"], "active_params": first["active_params"],
            "train_flops_per_token": first["train_flops_per_token"], "tokens": _num(group["tokens"]).mean(),
            "flops_used": used, "final_val_loss_mean": loss.mean, "final_val_loss_ci95": loss.half_width,
            f"{quality[0]}_mean": qual.mean, f"{quality[0]}_ci95": qual.half_width,
        }
        for column, task, metric in evals:
            values = _num(group.get(column)).dropna()
            stderr = _num(group.get(f"{column}/stderr")).dropna()
            if len(values) == 0:
                row.append("n/a")
                continue
            rms = float(np.sqrt((stderr**2).mean())) if len(stderr) else math.nan
            row.append(f"{values.mean():.4g}" + (f" ± {rms:.2g}" if math.isfinite(rms) else ""))
            number[f"eval/{task}/{metric}"] = values.mean()
            number[f"eval/{task}/{metric}/stderr"] = rms
        mfu = _num(group.get("mfu")).dropna()
        row += [_range(group["tokens_per_s"], 0), _range(mfu, 2, 100.0) if len(mfu) else "n/a", _range(group["wall_s"], 1)]
        number.update(tokens_per_s=_num(group["tokens_per_s"]).mean(), mfu=mfu.mean() if len(mfu) else math.nan,
                      wall_s=_num(group["wall_s"]).mean())
        rows.append(row)
        numbers.append(number)
    notes = [
        "Units and conventions: FLOPs count 2 per multiply-add; train FLOPs/token = 3 × forward "
        "(matmuls only, attention at the executed keys; MoE: router + active experts) — see *Methods*. "
        "Params: total / active per token (MoE activates k of E experts; embeddings included). "
        "Tokens seen and FLOPs used are the training totals (FLOPs used ≤ budget, within one optimizer step). "
        "Losses are validation cross-entropy in nats/token on the same held-out tokens for every model; "
        "± is the 95 % confidence half-width over seeds from the t-distribution (n − 1 degrees of freedom), "
        "shown only with ≥ 2 seeds.",
    ]
    unigram_loss = _num(runs.get("unigram_val_loss")).dropna()
    if kind == "text":
        notes.append("Bits/byte = summed validation loss / (ln 2 × UTF-8 bytes of the evaluated text): "
                     "comparable across tokenizers.")
        unigram_quality = _num(runs.get("unigram_val_bpb")).dropna()
        unit = "bits/byte"
    else:
        notes.append("Excess loss = validation loss − the data's entropy floor (the loss of the true generating "
                     "process); 0 is perfect.")
        unigram_quality = _num(runs.get("unigram_excess_loss")).dropna()
        unit = "nats/token excess"
    if len(unigram_loss) and len(unigram_quality):
        notes.append(f"For scale, a unigram model fitted on the training tokens scores {unigram_loss.mean():.4f} "
                     f"nats/token ({unigram_quality.mean():.4f} {unit}) on the same validation tokens.")
    if evals:
        notes.append("Evaluation metrics are lm-eval's (mean over seeds; ± is lm-eval's bootstrap/analytic stderr, "
                     "root-mean-square over seeds).")
    notes.append("Throughput, MFU and wall time: mean over seeds (min–max), as they measure the machine, not the model. "
                 "Throughput is training tokens/s over the run's wall time (validation included); "
                 "MFU = achieved training FLOP/s ÷ the device's peak FLOP/s (measured or nominal, see *Methods*).")
    noisy = []
    for budget, variant, arch, group in _groups(runs, archs):
        speeds = _num(group["tokens_per_s"]).dropna()
        if len(speeds) > 1 and speeds.min() > 0 and speeds.max() / speeds.min() > NOISY_THROUGHPUT:
            noisy.append(f"{arch}{'' if runs['variant'].nunique() == 1 else ' ' + variant} ({speeds.max() / speeds.min():.1f}×)")
    if noisy:
        notes.append(f"**Caution**: throughput differs by more than {NOISY_THROUGHPUT:g}× between seeds of "
                     f"{', '.join(noisy)}, so the machine was shared or throttled while training: read tokens/s, MFU and "
                     "wall time as upper/lower bounds, and measure speed with `python -m harness bench` on an idle machine. "
                     "Losses are unaffected (the FLOP budget, not the clock, ends a run).")
    return markdown_table(headers, rows) + "\n\n" + " ".join(notes), pd.DataFrame(numbers)


def significance_section(runs: pd.DataFrame, archs: Sequence[str], reference: str):
    """Each architecture against the reference (same budget and model variant): Welch's t-test."""
    headers = ["arch", "vs", "Δ val loss (nats/token)", "95 % CI of Δ", "Welch t", "p-value",
               "exceeds seed noise?"]
    several = runs["variant"].nunique() > 1 or runs["budget_flops"].nunique() > 1
    if several:
        headers.insert(1, "budget / model")
    rows, numbers = [], []
    groups = _groups(runs, archs)
    by_key = {(b, v, a): g for b, v, a, g in groups}
    for budget, variant, arch, group in groups:
        if arch == reference:
            continue
        ref = by_key.get((budget, variant, reference))
        row = [arch]
        if several:
            row.append(f"{fmt_sci(budget)} / {variant}")
        if ref is None:
            row += [reference, "n/a", "n/a", "n/a", "n/a", f"n/a: no {reference} run at this budget and size"]
            rows.append(row)
            continue
        test = welch_test(_num(group["final_val_loss"]).dropna(), _num(ref["final_val_loss"]).dropna())
        if test.available:
            verdict = (f"yes ({'worse' if test.diff > 0 else 'better'}, p < 0.05)" if test.significant
                       else "no (within seed noise)")
            row += [reference, f"{test.diff:+.4f}", f"[{test.ci_low:+.4f}, {test.ci_high:+.4f}]", f"{test.t:.2f}",
                    fmt_p(test.p), verdict]
        else:
            diff = f"{test.diff:+.4f}" if math.isfinite(test.diff) else "n/a"
            row += [reference, diff, "n/a", "n/a", "n/a", f"n/a: {test.reason}"]
        rows.append(row)
        numbers.append({"budget_flops": budget, "variant": variant, "arch": arch, "reference": reference,
                        **{k: v for k, v in test.to_dict().items()}})
    if not rows:
        return (f"n/a: there is no architecture other than the reference ({reference}) to compare.", pd.DataFrame())
    text = markdown_table(headers, rows, ["l"] * (3 if several else 2) + ["r"] * (len(headers) - (3 if several else 2)))
    text += (
        f"\n\nΔ = mean final validation loss of the architecture − that of {reference} (negative: better). "
        "Welch's unequal-variance t-test (scipy.stats.ttest_ind, equal_var=False) on the per-seed losses; "
        "the difference exceeds the seed noise when p < 0.05, i.e. the Welch 95 % interval of Δ excludes 0. "
        "Seeds change initialisation and data order together, and seed i is the same data order for every "
        "architecture. With few seeds the test has little power: \"no\" means not resolved, not equal."
    )
    return text, pd.DataFrame(numbers)


def isoflop_section(runs: pd.DataFrame, archs: Sequence[str], reference: str):
    """Chinchilla approach 2: parabola in log10(active params) per (budget, arch); optima compared."""
    points = runs.dropna(subset=["final_val_loss", ISOFLOP_X])
    fits: dict[tuple[float, str], IsoFlopFit] = {}
    rows, numbers = [], []
    for budget in sorted(points["budget_flops"].unique()):
        for arch in archs:
            mine = points[(points["budget_flops"] == budget) & (points["arch"] == arch)]
            if mine["variant"].nunique() < 2:
                continue
            fit = fit_isoflop(_num(mine[ISOFLOP_X]), _num(mine["final_val_loss"]), list(mine["seed"]))
            fits[(budget, arch)] = fit
            tokens_opt = math.nan
            if fit.ok:
                slope = np.polyfit(np.log10(_num(mine[ISOFLOP_X])), np.log10(_num(mine["tokens"])), 1)
                tokens_opt = float(10 ** np.polyval(slope, fit.log10_params_opt))
            from scipy import stats as _stats

            delta_ci = "n/a"
            if fit.ok and math.isfinite(fit.log10_params_opt_se) and fit.n_points > 3:
                half = float(_stats.t.ppf(0.975, fit.n_points - 3)) * fit.log10_params_opt_se
                delta_ci = f"{fmt_count(10 ** (fit.log10_params_opt - half))}–{fmt_count(10 ** (fit.log10_params_opt + half))}"
            boot_ci = (f"{fmt_count(fit.params_opt_ci[0])}–{fmt_count(fit.params_opt_ci[1])}"
                       if fit.ok and fit.params_opt_ci else "n/a")
            l_se = f" ± {fit.loss_opt_se:.4f}" if math.isfinite(fit.loss_opt_se) else ""
            l_ci = f"{fit.loss_opt_ci[0]:.4f}–{fit.loss_opt_ci[1]:.4f}" if fit.ok and fit.loss_opt_ci else "n/a"
            note = fit.reason if not fit.ok else ("optimum outside the trained sizes (extrapolated)" if fit.extrapolated else "")
            rows.append([
                arch, fmt_sci(budget), f"{mine['variant'].nunique()} / {len(mine)}",
                fmt_count(fit.params_opt) if fit.ok else "n/a", delta_ci, boot_ci,
                (f"{fit.loss_opt:.4f}" + l_se) if fit.ok else "n/a", l_ci,
                fmt_count(tokens_opt) if fit.ok else "n/a",
                note or "—",
            ])
            numbers.append({"budget_flops": budget, "arch": arch, "tokens_opt": tokens_opt, **fit.to_dict()})
    if not fits:
        return None, fits, pd.DataFrame()
    headers = ["arch", "budget (FLOPs)", "sizes / runs", "compute-optimal active params N*",
               "N* 95 % CI (delta-method)", "N* 95 % CI (seed bootstrap)", "loss at N* (nats/token ± s.e.)",
               "loss at N* 95 % CI (seed bootstrap)", "tokens at N*", "note"]
    text = markdown_table(headers, rows, ["l"] + ["r"] * 8 + ["l"])
    comparisons = []
    for (budget, arch), fit in fits.items():
        ref = fits.get((budget, reference))
        if arch == reference or ref is None:
            continue
        comparison = compare_optima(fit, ref)
        if comparison.available:
            comparisons.append([arch, fmt_sci(budget), f"{comparison.diff:+.4f} ± {comparison.se:.4f}",
                                fmt_p(comparison.p), f"{comparison.params_ratio:.2f}",
                                "yes" if comparison.significant else "no (within fit uncertainty)"])
        else:
            diff = f"{comparison.diff:+.4f}" if math.isfinite(comparison.diff) else "n/a"
            comparisons.append([arch, fmt_sci(budget), diff, "n/a", fmt_count(comparison.params_ratio)
                                if math.isfinite(comparison.params_ratio) else "n/a", f"n/a: {comparison.reason}"])
    text += (
        "\n\nMethod (Hoffmann et al. 2022, approach 2): at each budget, every architecture trains several model "
        "sizes for the same training FLOPs; final validation loss is fitted against x = log10(active parameters) "
        "with a parabola (numpy.polyfit, degree 2, every seed a point). The vertex is the compute-optimal size N* "
        "and its loss. Delta-method: the fit's covariance propagated to the vertex (interval of log10 N* with the "
        "t-quantile at n − 3 degrees of freedom; ± on the loss is one standard error). Seed bootstrap: 95 % "
        "percentile intervals from 1000 refits that resample seeds within each size (with only 2 seeds per size it "
        "understates the spread; the figure's bars show the wider of the two intervals). "
        "Tokens at N* interpolate log(tokens) linearly in log(params) between the trained sizes."
    )
    if comparisons:
        text += "\n\n**At the optimum, against " + reference + "**\n\n" + markdown_table(
            ["arch", "budget (FLOPs)", f"Δ loss at N* vs {reference} (nats/token ± s.e.)", "p (normal approx.)",
             f"N* / N*({reference})", "difference resolved?"],
            comparisons,
        )
        text += ("\n\nThe standard error of Δ combines the two fits' errors (for each, the larger of delta-method and "
                 "bootstrap) as independent; p is from the normal approximation.")
    return text, fits, pd.DataFrame(numbers)


def _breakdowns(records: list[dict], runs: pd.DataFrame, archs: Sequence[str]) -> list[tuple[str, str, dict]]:
    from architectures.config import ModelConfig
    from harness.flops import forward_breakdown

    by_id = {r["run_id"]: r for r in records}
    out, seen = [], set()
    for budget, variant, arch, group in _groups(runs, archs):
        if (arch, variant) in seen:
            continue
        record = by_id.get(group.iloc[0]["run_id"]) or {}
        model = (record.get("config") or {}).get("model")
        if not model:
            continue
        try:
            breakdown = forward_breakdown(ModelConfig.from_dict(model), record.get("seq_len"))
        except (ValueError, TypeError):
            continue
        seen.add((arch, variant))
        out.append((arch, variant, breakdown))
    return out


def _unique(values) -> list:
    return list(dict.fromkeys(str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))))


def methods_section(records: list[dict], runs: pd.DataFrame, meta: dict | None, inputs: ReportInputs,
                    report_command: str) -> str:
    from harness.flops import CONVENTION

    first = records[0]
    data = first.get("data") or {}
    lines = []
    kind = data.get("kind", "?")
    data_line = f"- **Data**: `{data.get('spec')}` ({kind})"
    if data.get("n_train_tokens") is not None:
        data_line += f"; {fmt_count(data.get('n_train_tokens'))} training and {fmt_count(data.get('n_val_tokens'))} validation tokens"
    if data.get("content_hash"):
        data_line += f"; content hash `{str(data['content_hash'])[:12]}`"
    lines.append(data_line + f". Validation metrics use the first {fmt_count(first.get('val_tokens'))} held-out tokens, "
                 "the same for every run. Batches are a pure function of (seed, step), so every architecture at a "
                 "seed sees the same tokens in the same order.")
    lines.append(f"- **Tokenizer**: {data.get('tokenizer')} with a vocabulary of {data.get('vocab_size')} tokens "
                 "(one tokenizer for every architecture).")
    recipe = {k: v for k, v in (first.get("recipe") or {}).items()}
    differing = sorted({k for r in records for k, v in (r.get("recipe") or {}).items() if recipe.get(k) != v})
    lines.append(
        f"- **Recipe** (identical for every architecture{'' if not differing else ' except ' + ', '.join(differing)}): "
        f"AdamW β = ({recipe.get('beta1')}, {recipe.get('beta2')}), ε = {recipe.get('eps')}, weight decay "
        f"{recipe.get('weight_decay')} on matrices only, gradient clipping at global norm {recipe.get('grad_clip')}, "
        f"peak learning rate {recipe.get('lr')} with linear warm-up over {recipe.get('warmup_fraction')} of the steps "
        f"then cosine decay to {recipe.get('min_lr_ratio')} × peak; {recipe.get('batch_tokens')} tokens per optimizer "
        f"step ({recipe.get('micro_batch_size')} sequences × {recipe.get('seq_len')} tokens × "
        f"{recipe.get('grad_accum')} accumulation step(s) × {recipe.get('world_size')} process(es))."
    )
    budgets = sorted(set(_num(runs["budget_flops"]).dropna()))
    steps = ", ".join(f"{a} {v}: {int(_num(g['steps']).mean())}" for _, v, a, g in _groups(runs, arch_order(runs, meta)))
    lines.append(f"- **Budget**: {', '.join(fmt_sci(b) for b in budgets)} training FLOPs per run. Steps = ⌊budget ÷ "
                 f"(train FLOPs/token × tokens/step)⌋, so a cheaper model trains on more tokens (steps: {steps}).")
    lines.append(f"- **FLOP convention**: {CONVENTION}. Parameters counted per `model.param_counts()`; "
                 "isoFLOP fits use active parameters (embeddings included).")
    devices = _unique(r.get("device") for r in records)
    dtypes = _unique(r.get("dtype") for r in records)
    peaks = _unique(fmt_sci(r.get("peak_flops_per_s")) for r in records if r.get("peak_flops_per_s"))
    settings = first.get("device_settings") or {}
    hw = f"- **Hardware**: {', '.join(devices)}; dtype {', '.join(dtypes)}"
    if peaks:
        hw += f"; peak used for MFU: {', '.join(peaks)} FLOP/s"
        if settings.get("peak_source"):
            hw += f" ({settings['peak_source']})"
    if settings.get("threads") or settings.get("num_threads"):
        hw += f"; {settings.get('threads') or settings.get('num_threads')} CPU threads"
    lines.append(hw + f"; report machine: {platform.machine()} {platform.system()}, Python {platform.python_version()}.")
    software = [f"torch {', '.join(_unique(r.get('torch_version') for r in records))} (training)"]
    for module in ("numpy", "pandas", "scipy", "matplotlib"):
        try:
            software.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    try:
        from importlib.metadata import version

        software.append(f"lm-eval {version('lm_eval')}")
    except Exception:  # noqa: BLE001 - optional
        pass
    task_versions = sorted({f"{task} v{entry.get('version')}" for r in records for task, metrics in (r.get("evaluation") or {}).items()
                            for entry in (metrics or {}).values() if isinstance(entry, dict) and entry.get("version") is not None})
    lines.append(f"- **Software**: {', '.join(software)}" + (f"; lm-eval tasks {', '.join(task_versions)}" if task_versions else "") + ".")
    from harness.records import git_commit

    commits = _unique(r.get("git_commit") for r in records)
    several = " (the checkout changed during the sweep: `git diff` them to see what)" if len(commits) > 1 else ""
    lines.append(f"- **Code**: runs trained at git commit {', '.join(f'`{c}`' for c in commits) or 'unknown'}{several}; "
                 f"report generated at `{git_commit() or 'unknown'}`.")
    lines.append("- **Statistics**: 95 % confidence intervals over seeds from the t-distribution; Welch's t-test "
                 "for differences; isoFLOP parabolas by least squares with covariance and a seed bootstrap.")
    reproduce = ["", "**Reproduce**", "", "```bash"]
    if meta and meta.get("command"):
        reproduce.append(meta["command"] + "    # trains (or reuses) every run, then writes this report")
    else:
        for command in _unique(r.get("command") for r in records):
            reproduce.append(f"# a run was made with: {command}")
    reproduce.append(report_command + "    # regenerates this report from the records alone")
    reproduce.append("```")
    return "\n".join(lines + reproduce)


def runs_section(runs: pd.DataFrame, archs: Sequence[str]) -> str:
    rows = []
    order = {a: i for i, a in enumerate(archs)}
    for _, row in runs.sort_values(["budget_flops", "seed"]).sort_values("arch", key=lambda s: s.map(order), kind="stable").iterrows():
        loss = row.get("final_val_loss")
        rows.append([f"`{row['run_id']}`", row["arch"], row["variant"], int(row["seed"]), row["status"],
                     f"{loss:.4f}" if isinstance(loss, (int, float)) and math.isfinite(loss) else "n/a",
                     f"{row['wall_s']:.1f}" if isinstance(row.get("wall_s"), (int, float)) and math.isfinite(row.get("wall_s")) else "n/a"])
    return markdown_table(["run id", "arch", "model", "seed", "status", "final val loss (nats/token)", "wall (s)"], rows,
                          ["l", "l", "l", "r", "l", "r", "r"])


# ----------------------------------------------------------------------------- the report


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


def warning_notes(records: list[dict]) -> list[str]:
    """One note per entry of a record's ``warnings`` (the run still counts as ``ok``)."""
    return [f"Run `{r['run_id']}`: warning: {w}." for r in records for w in r.get("warnings") or []]


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
    from harness import figures as fig

    results_root = Path(results_dir) if results_dir is not None else default_results_dir()
    reports_root = Path(reports_dir) if reports_dir is not None else default_reports_dir()
    inputs = resolve_targets(targets, name, reports_root, results_root)
    meta = inputs.meta
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
    not_ok = [r for r in records if r.get("status") != "ok"]
    for record in not_ok:
        notes.append(f"Run `{record['run_id']}` is {record.get('status')} "
                     f"({record.get('error') or 'no error recorded'}); it is left out of the tables.")
    references = [r for r in records if r.get("status") == "ok" and r.get("imported")]  # harness import: reference rows
    records = [r for r in records if r.get("status") == "ok" and r.get("final_val_loss") is not None and not r.get("imported")]
    notes += warning_notes(records)
    if not records and references:
        from harness.reference_models import write_reference_report

        path, numbers = write_reference_report(reports_root / inputs.name, inputs.name, references, inputs.run_ids,
                                               notes, write_runs_file=meta is None)
        return Report(inputs.name, path, path.parent, [], inputs.run_ids, notes, numbers, pd.DataFrame(), pd.DataFrame())
    if not records:
        raise ValueError(f"none of the {len(inputs.run_ids)} run(s) for report {inputs.name!r} has a readable finished "
                         f"record in {results_root}; train them first (`python -m harness compare ...`).")
    runs = records_frame(records)
    allow_mixed = allow_mixed or bool((meta or {}).get("allow_mixed"))
    notes += check_comparable(runs, (meta or {}).get("budgets"), allow_mixed)
    archs = arch_order(runs, meta)
    reference = reference or (meta or {}).get("reference") or (REFERENCE_ARCH if REFERENCE_ARCH in archs else archs[0])
    kind = (records[0].get("data") or {}).get("kind", "text")
    evals = eval_columns(runs)
    out_dir = reports_root / inputs.name
    figures_dir = out_dir / FIGURES_DIR

    summary_md, summary = summary_section(runs, archs, evals, kind)
    significance_md, significance = significance_section(runs, archs, reference)
    isoflop_md, fits, isoflop = isoflop_section(runs, archs, reference)

    curves = load_curves(runs)
    captions = fig.describe_figures()
    drawn: dict[str, Any] = {}
    skipped_figures: dict[str, str] = {}
    drawn["loss_vs_flops"] = fig.loss_curves(runs, curves, archs, "flops")
    drawn["loss_vs_wall"] = fig.loss_curves(runs, curves, archs, "wall_s")
    drawn["pareto"] = fig.pareto(runs, archs)
    drawn["throughput"] = fig.throughput(runs, archs)
    drawn["flops_breakdown"] = fig.flops_breakdown(_breakdowns(records, runs, archs), archs)
    drawn["evaluation"] = fig.evaluation(runs, evals, archs)
    if not evals:
        skipped_figures["evaluation"] = "no lm-eval results in these records (trained with --no-eval)"
    if kind == "synthetic":
        names = list((records[0].get("data") or {}).get("segment_names") or
                     sorted({c.split("/")[1] for c in runs.columns if c.startswith("segment/")}))
        drawn["segments"] = fig.segments(runs, names, archs)
    if fits:
        drawn["isoflop"] = fig.isoflop(runs.dropna(subset=["final_val_loss"]), fits, archs, ISOFLOP_X)
    for key, figure in list(drawn.items()):
        if figure is None:
            skipped_figures.setdefault(key, "no data for it in these records")
            del drawn[key]
    figure_paths = []
    for key, figure in drawn.items():
        figure_paths += fig.save_figure(figure, figures_dir, key)

    # runs.json in the report folder holds the run ids (and the --allow-mixed decision)
    command = f"python -m harness report {shlex.quote(inputs.name)}"

    budgets = sorted(set(_num(runs["budget_flops"])))
    variants = list(dict.fromkeys(runs["variant"]))
    mode = "isoFLOP sweep" if fits else "matched-compute comparison"
    seeds = runs.groupby(["arch", "variant", "budget_flops"]).size()
    title = f"# {inputs.name}: {', '.join(archs)} at {', '.join(fmt_sci(b) for b in budgets)} training FLOPs"
    intro = (
        f"A {mode} of {len(archs)} architecture(s) ({', '.join(archs)}) on `{(records[0].get('data') or {}).get('spec')}`: "
        f"{len(records)} finished run(s), model(s) {', '.join(variants)}, {seeds.min()}–{seeds.max()} seed(s) each, "
        f"the same data order, tokenizer and recipe. Every number below is computed from the run records "
        f"(`results/<run_id>/record.json`, `config.json`, `metrics.jsonl`); `{command}` regenerates this page."
    )
    if seeds.min() == seeds.max():
        intro = intro.replace(f"{seeds.min()}–{seeds.max()} seed(s)", f"{seeds.min()} seed(s)")
    parts = [title, "", intro, ""]
    if notes:
        parts += ["> **Notes**", ">"] + [f"> - {note}" for note in notes] + [""]
    parts += ["## Summary", "", summary_md, ""]
    parts += [f"## Significance against {reference}", "", significance_md, ""]
    if isoflop_md:
        parts += ["## IsoFLOP: compute-optimal size per architecture", "", isoflop_md, ""]
    from harness.report_adaptation import adaptation_section  # the compare's fine-tuning stage, if any

    adaptation_md = adaptation_section(meta, results_root, out_dir, archs)
    if adaptation_md:
        parts += ["## Adaptation: fine-tuning at matched FLOPs", "", adaptation_md, ""]
    parts += ["## Figures", ""]
    for key in drawn:
        parts += [f"**{captions[key]}** ([SVG]({FIGURES_DIR}/{key}.svg))", "",
                  f"![{captions[key]}]({FIGURES_DIR}/{key}.png)", ""]
    for key, why in skipped_figures.items():
        parts += [f"- *{captions.get(key, key)}*: not drawn — {why}."]
    if skipped_figures:
        parts.append("")
    if references:
        from harness.reference_models import SECTION_TITLE, reference_section

        parts += [f"## {SECTION_TITLE}", "", reference_section(references)[0], ""]
    parts += ["## Methods", "", methods_section(records, runs, meta, inputs, command), ""]
    parts += ["## Runs", "", runs_section(runs, archs), ""]
    parts += ["Data files: `runs.csv` (one row per run), `summary.csv` (the summary table's numbers)"
              + (", `isoflop.csv` (the fits)" if fits else "") + ", `runs.json` (the run ids).", ""]

    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [c for c in RUNS_CSV_COLUMNS if c in runs.columns] + [c for c, _, _ in evals]
    write_text_atomic(out_dir / "runs.csv", runs[columns].to_csv(index=False))
    write_text_atomic(out_dir / "summary.csv", summary.to_csv(index=False))
    if fits:
        write_text_atomic(out_dir / "isoflop.csv", isoflop.drop(columns=["cov"], errors="ignore").to_csv(index=False))
    if meta is None:
        write_json_atomic(out_dir / RUNS_NAME, {"name": inputs.name, "mode": "runs", "archs": archs,
                                                "reference": reference, "budgets": budgets, "allow_mixed": allow_mixed,
                                                "run_ids": inputs.run_ids, "command": None})
    report_path = write_text_atomic(out_dir / REPORT_NAME, "\n".join(parts))
    return Report(inputs.name, report_path, out_dir, figure_paths, inputs.run_ids, notes, summary, significance, isoflop)
