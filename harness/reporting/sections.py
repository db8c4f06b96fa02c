"""The comparison report's tables as markdown, rendered from ``harness.reporting.tables`` rows.

Each ``*_section`` returns the section's markdown (tables and the sentences that explain
them); the numbers behind them come from the rows, formatted by ``harness.reporting.formatting``.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from harness.reporting.formatting import fmt_count, fmt_interval, fmt_p, fmt_range, fmt_sci, markdown_table
from harness.reporting.inputs import numeric
from harness.reporting.tables import (NOISY_THROUGHPUT, EvalSummary, IsoFlopRow, SignificanceRow, SummaryRow,
                                   optimum_comparisons)

SUMMARY_CONVENTIONS = (
    "Units and conventions: FLOPs count 2 per multiply-add; train FLOPs/token = 3 × forward "
    "(matmuls only, attention at the executed keys; MoE: router + active experts) — see *Methods*. "
    "Params: total / active per token (MoE activates k of E experts; embeddings included). "
    "Tokens seen and FLOPs used are the training totals (FLOPs used ≤ budget, within one optimizer step). "
    "Losses are validation cross-entropy in nats/token on the same held-out tokens for every model; "
    "± is the 95 % confidence half-width over seeds from the t-distribution (n − 1 degrees of freedom), "
    "shown only with ≥ 2 seeds."
)
SPEED_CONVENTIONS = (
    "Throughput, MFU and wall time: mean over seeds (min–max), as they measure the machine, not the model. "
    "Throughput is training tokens/s over the run's wall time (validation included); "
    "MFU = achieved training FLOP/s ÷ the device's peak FLOP/s (measured or nominal, see *Methods*)."
)


# ----------------------------------------------------------------------------- summary


def _summary_headers(evals: Sequence[tuple[str, str, str]], kind: str, several_budgets: bool,
                     several_variants: bool) -> list[str]:
    quality = ("val bits/byte (mean ± 95 % CI)" if kind == "text"
               else "excess loss over entropy floor (nats/token, mean ± 95 % CI)")
    headers = ["arch"] + (["budget (FLOPs)"] if several_budgets else []) + (["model"] if several_variants else [])
    headers += [
        "seeds", "params total / active", "train FLOPs/token", "tokens seen", "FLOPs used (% of budget)",
        "val loss (nats/token, mean ± 95 % CI)", quality,
    ]
    headers += [f"{task} {metric} (± stderr)" for _, task, metric in evals]
    return headers + ["train tokens/s (mean, min–max)", "MFU (%)", "wall time (s)"]


def _eval_cell(entry: EvalSummary) -> str:
    if not entry.n:
        return "—"
    documents = entry.documents
    scored = (f" (n = {documents[0]})" if len(documents) == 1
              else f" (n = {documents[0]}–{documents[-1]})" if documents else "")
    return f"{entry.mean:.4g}" + (f" ± {entry.stderr_rms:.2g}" if math.isfinite(entry.stderr_rms) else "") + scored


def _summary_cells(row: SummaryRow, several_budgets: bool, several_variants: bool) -> list[str]:
    cells = [row.arch] + ([fmt_sci(row.budget)] if several_budgets else []) + ([row.variant] if several_variants else [])
    cells += [
        f"{row.loss.n}",
        f"{fmt_count(row.params)} / {fmt_count(row.active_params)}",
        fmt_sci(row.train_flops_per_token),
        fmt_count(row.tokens),
        f"{fmt_sci(row.flops_used)} ({100 * row.flops_used / row.budget:.1f} %)",
        fmt_interval(row.loss, 4),
        fmt_interval(row.quality, 4),
    ]
    cells += [_eval_cell(entry) for entry in row.evals]
    return cells + [fmt_range(row.tokens_per_s, 0), fmt_range(row.mfu * 100.0, 2) if len(row.mfu) else "—",
                    fmt_range(row.wall_s, 1)]


def _summary_notes(runs: pd.DataFrame, kind: str, has_evals: bool, noisy: Sequence[tuple[str, str, float]]) -> list[str]:
    notes = [SUMMARY_CONVENTIONS]
    unigram_loss = numeric(runs.get("unigram_val_loss")).dropna()
    if kind == "text":
        notes.append("Bits/byte = summed validation loss / (ln 2 × UTF-8 bytes of the evaluated text): "
                     "comparable across tokenizers.")
        unigram_quality, unit = runs.get("unigram_val_bpb"), "bits/byte"
    else:
        notes.append("Excess loss = validation loss − the data's entropy floor (the loss of the true generating "
                     "process); 0 is perfect.")
        unigram_quality, unit = runs.get("unigram_excess_loss"), "nats/token excess"
    unigram_quality = numeric(unigram_quality).dropna()
    if len(unigram_loss) and len(unigram_quality):
        notes.append(f"For scale, a unigram model fitted on the training tokens scores {unigram_loss.mean():.4f} "
                     f"nats/token ({unigram_quality.mean():.4f} {unit}) on the same validation tokens.")
    if has_evals:
        notes.append("Evaluation metrics are lm-eval's (mean over seeds; ± is lm-eval's bootstrap/analytic stderr, "
                     "root-mean-square over seeds; n = documents scored per run).")
    notes.append(SPEED_CONVENTIONS)
    if noisy:
        several_variants = runs["variant"].nunique() > 1
        labels = [f"{arch}{' ' + variant if several_variants else ''} ({ratio:.1f}×)" for arch, variant, ratio in noisy]
        notes.append(f"**Caution**: throughput differs by more than {NOISY_THROUGHPUT:g}× between seeds of "
                     f"{', '.join(labels)}, so the machine was shared or throttled while training: read tokens/s, MFU "
                     "and wall time as upper/lower bounds, and measure speed with `python -m harness bench` on an idle "
                     "machine. Losses are unaffected (the FLOP budget, not the clock, ends a run).")
    return notes


def summary_section(rows: Sequence[SummaryRow], runs: pd.DataFrame, evals: Sequence[tuple[str, str, str]], kind: str,
                    noisy: Sequence[tuple[str, str, float]]) -> str:
    """The summary table and the notes on its units, conventions and throughput noise."""
    several_budgets = runs["budget_flops"].nunique() > 1
    several_variants = runs["variant"].nunique() > 1
    table = markdown_table(_summary_headers(evals, kind, several_budgets, several_variants),
                           [_summary_cells(row, several_budgets, several_variants) for row in rows])
    return table + "\n\n" + " ".join(_summary_notes(runs, kind, bool(evals), noisy))


# ----------------------------------------------------------------------------- significance


def _significance_cells(row: SignificanceRow) -> list[str]:
    test, reference = row.test, row.reference
    if test is None:
        return [reference, "—", "—", "—", "—", f"not tested: no {reference} run at this budget and size"]
    if not test.available:
        diff = f"{test.diff:+.4f}" if math.isfinite(test.diff) else "—"
        return [reference, diff, "—", "—", "—", f"not tested: {test.reason}"]
    verdict = (f"yes ({'worse' if test.diff > 0 else 'better'}, p < 0.05)" if test.significant
               else "no (within seed noise)")
    return [reference, f"{test.diff:+.4f}", f"[{test.ci_low:+.4f}, {test.ci_high:+.4f}]", f"{test.t:.2f}",
            fmt_p(test.p), verdict]


def significance_section(rows: Sequence[SignificanceRow], runs: pd.DataFrame, reference: str) -> str:
    """Each architecture against the reference (same budget and model variant): Welch's t-test."""
    if not rows:
        return f"Not tested: there is no architecture other than the reference ({reference}) to compare."
    headers = ["arch", "vs", "Δ val loss (nats/token)", "95 % CI of Δ", "Welch t", "p-value", "exceeds seed noise?"]
    several = runs["variant"].nunique() > 1 or runs["budget_flops"].nunique() > 1
    if several:
        headers.insert(1, "budget / model")
    cells = [[row.arch] + ([f"{fmt_sci(row.budget)} / {row.variant}"] if several else []) + _significance_cells(row)
             for row in rows]
    left = 3 if several else 2
    return markdown_table(headers, cells, ["l"] * left + ["r"] * (len(headers) - left)) + (
        f"\n\nΔ = mean final validation loss of the architecture − that of {reference} (negative: better). "
        "Welch's unequal-variance t-test (scipy.stats.ttest_ind, equal_var=False) on the per-seed losses; "
        "the difference exceeds the seed noise when p < 0.05, i.e. the Welch 95 % interval of Δ excludes 0. "
        "Seeds change initialisation and data order together, and seed i is the same data order for every "
        "architecture. With few seeds the test has little power: \"no\" means not resolved, not equal."
    )


# ----------------------------------------------------------------------------- isoFLOP

ISOFLOP_METHOD = (
    "Method (Hoffmann et al. 2022, approach 2): at each budget, every architecture trains several model "
    "sizes for the same training FLOPs; final validation loss is fitted against x = log10(active parameters) "
    "with a parabola (numpy.polyfit, degree 2, every seed a point). The vertex is the compute-optimal size N* "
    "and its loss. Delta-method: the fit's covariance propagated to the vertex (interval of log10 N* with the "
    "t-quantile at n − 3 degrees of freedom; ± on the loss is one standard error). Seed bootstrap: 95 % "
    "percentile intervals from 1000 refits that resample seeds within each size (with only 2 seeds per size it "
    "understates the spread; the figure's bars show the wider of the two intervals). "
    "Tokens at N* interpolate log(tokens) linearly in log(params) between the trained sizes."
)


def _count_range(interval: tuple[float, float] | None) -> str:
    return "—" if interval is None else f"{fmt_count(interval[0])}–{fmt_count(interval[1])}"


def _isoflop_cells(row: IsoFlopRow) -> list[str]:
    fit = row.fit
    if not fit.ok:
        return [row.arch, fmt_sci(row.budget), f"{row.n_sizes} / {row.n_runs}", "—", "—", "—", "—", "—",
                "—", fit.reason or "—"]
    loss_se = f" ± {fit.loss_opt_se:.4f}" if math.isfinite(fit.loss_opt_se) else ""
    loss_ci = f"{fit.loss_opt_ci[0]:.4f}–{fit.loss_opt_ci[1]:.4f}" if fit.loss_opt_ci else "—"
    note = "optimum outside the trained sizes (extrapolated)" if fit.extrapolated else "—"
    return [row.arch, fmt_sci(row.budget), f"{row.n_sizes} / {row.n_runs}", fmt_count(fit.params_opt),
            _count_range(fit.params_opt_delta_interval()), _count_range(fit.params_opt_ci or None),
            f"{fit.loss_opt:.4f}" + loss_se, loss_ci, fmt_count(row.tokens_opt), note]


def _comparisons_table(rows: Sequence[IsoFlopRow], reference: str) -> str | None:
    cells = []
    for row, comparison in optimum_comparisons(rows, reference):
        if comparison.available:
            cells.append([row.arch, fmt_sci(row.budget), f"{comparison.diff:+.4f} ± {comparison.se:.4f}",
                          fmt_p(comparison.p), f"{comparison.params_ratio:.2f}",
                          "yes" if comparison.significant else "no (within fit uncertainty)"])
        else:
            diff = f"{comparison.diff:+.4f}" if math.isfinite(comparison.diff) else "—"
            ratio = fmt_count(comparison.params_ratio) if math.isfinite(comparison.params_ratio) else "—"
            cells.append([row.arch, fmt_sci(row.budget), diff, "—", ratio, f"not compared: {comparison.reason}"])
    if not cells:
        return None
    return markdown_table(["arch", "budget (FLOPs)", f"Δ loss at N* vs {reference} (nats/token ± s.e.)",
                           "p (normal approx.)", f"N* / N*({reference})", "difference resolved?"], cells)


def isoflop_section(rows: Sequence[IsoFlopRow], reference: str) -> str | None:
    """Compute-optimal size and loss per (budget, arch), then each optimum against the reference's (None: no fit)."""
    if not rows:
        return None
    headers = ["arch", "budget (FLOPs)", "sizes / runs", "compute-optimal active params N*",
               "N* 95 % CI (delta-method)", "N* 95 % CI (seed bootstrap)", "loss at N* (nats/token ± s.e.)",
               "loss at N* 95 % CI (seed bootstrap)", "tokens at N*", "note"]
    text = markdown_table(headers, [_isoflop_cells(row) for row in rows], ["l"] + ["r"] * 8 + ["l"])
    text += "\n\n" + ISOFLOP_METHOD
    comparisons = _comparisons_table(rows, reference)
    if comparisons:
        text += f"\n\n**At the optimum, against {reference}**\n\n" + comparisons
        text += ("\n\nThe standard error of Δ combines the two fits' errors (for each, the larger of delta-method and "
                 "bootstrap) as independent; p is from the normal approximation.")
    return text


# ----------------------------------------------------------------------------- runs


def _cell(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def runs_section(runs: pd.DataFrame, archs: Sequence[str]) -> str:
    """One line per run: id, architecture, model, seed, status, final loss and wall time."""
    order = {a: i for i, a in enumerate(archs)}
    ordered = runs.sort_values(["budget_flops", "seed"]).sort_values("arch", key=lambda s: s.map(order), kind="stable")
    rows = [[f"`{row['run_id']}`", row["arch"], row["variant"], int(row["seed"]), row["status"],
             _cell(row.get("final_val_loss"), 4), _cell(row.get("wall_s"), 1)] for _, row in ordered.iterrows()]
    return markdown_table(["run id", "arch", "model", "seed", "status", "final val loss (nats/token)", "wall (s)"], rows,
                          ["l", "l", "l", "r", "l", "r", "r"])
