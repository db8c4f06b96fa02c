"""The comparison report's numbers: runs frame → typed rows, one per table row.

Nothing here writes markdown (``harness.reporting.sections`` does). Groups are (budget, model
variant, architecture) in ``run_groups`` order; statistics come from ``harness.reporting.stats``
(95 % t-intervals over seeds, Welch's t-test, isoFLOP parabola fits); losses are in
nats/token, FLOPs count 2 per multiply-add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.reporting.inputs import numeric, run_groups
from harness.reporting.stats import (Interval, IsoFlopFit, OptimumComparison, WelchResult, compare_optima, fit_isoflop,
                           t_interval, welch_test)

ISOFLOP_X = "active_params"
NOISY_THROUGHPUT = 1.5  # max/min tokens/s across seeds of one model above which the report warns


def quality_column(kind: str) -> str:
    """The tokenizer-independent quality: bits/byte for text, excess loss over the entropy floor otherwise."""
    return "val_bpb" if kind == "text" else "excess_loss"


@dataclass
class EvalSummary:
    """An lm-eval metric over seeds: mean and root-mean-square of lm-eval's stderr (n = 0: not evaluated);
    ``documents``: the distinct numbers of documents scored per seed (lm-eval's n), smallest first."""

    column: str
    task: str
    metric: str
    n: int
    mean: float
    stderr_rms: float
    documents: tuple[int, ...] = ()


@dataclass
class SummaryRow:
    """One (budget, variant, arch) group of the summary table."""

    budget: float
    variant: str
    arch: str
    params: Any
    active_params: Any
    train_flops_per_token: Any
    tokens: float  # mean over seeds
    flops_used: float  # mean over seeds
    loss: Interval
    quality: Interval
    evals: list[EvalSummary]
    tokens_per_s: pd.Series  # per seed
    mfu: pd.Series  # per seed with a value, fraction of peak
    wall_s: pd.Series  # per seed

    def numbers(self, quality: str) -> dict[str, Any]:
        """The row of ``summary.csv``."""
        number = {
            "budget_flops": self.budget, "variant": self.variant, "arch": self.arch, "seeds": self.loss.n,
            "params": self.params, "active_params": self.active_params,
            "train_flops_per_token": self.train_flops_per_token, "tokens": self.tokens,
            "flops_used": self.flops_used, "final_val_loss_mean": self.loss.mean,
            "final_val_loss_ci95": self.loss.half_width,
            f"{quality}_mean": self.quality.mean, f"{quality}_ci95": self.quality.half_width,
        }
        for entry in self.evals:
            if entry.n:
                number[f"eval/{entry.task}/{entry.metric}"] = entry.mean
                number[f"eval/{entry.task}/{entry.metric}/stderr"] = entry.stderr_rms
        number.update(tokens_per_s=self.tokens_per_s.mean(), mfu=self.mfu.mean() if len(self.mfu) else math.nan,
                      wall_s=self.wall_s.mean())
        return number


def _eval_summary(group: pd.DataFrame, column: str, task: str, metric: str) -> EvalSummary:
    values = numeric(group.get(column)).dropna()
    stderr = numeric(group.get(f"{column}/stderr")).dropna()
    if len(values) == 0:
        return EvalSummary(column, task, metric, 0, math.nan, math.nan)
    rms = float(np.sqrt((stderr**2).mean())) if len(stderr) else math.nan
    documents = tuple(sorted({int(n) for n in numeric(group.get(f"{column}/n")).dropna()}))
    return EvalSummary(column, task, metric, len(values), values.mean(), rms, documents)


def summary_rows(runs: pd.DataFrame, archs: Sequence[str], evals: list[tuple[str, str, str]], kind: str) -> list[SummaryRow]:
    """Per group: sizes, tokens, FLOPs, loss and quality intervals, lm-eval metrics, speed."""
    quality = quality_column(kind)
    rows = []
    for budget, variant, arch, group in run_groups(runs, archs):
        first = group.iloc[0]
        rows.append(SummaryRow(
            budget, variant, arch, first["params"], first["active_params"], first["train_flops_per_token"],
            tokens=numeric(group["tokens"]).mean(), flops_used=numeric(group["flops_used"]).mean(),
            loss=t_interval(numeric(group["final_val_loss"]).dropna()),
            quality=t_interval(numeric(group.get(quality)).dropna()),
            evals=[_eval_summary(group, column, task, metric) for column, task, metric in evals],
            tokens_per_s=numeric(group["tokens_per_s"]), mfu=numeric(group.get("mfu")).dropna(),
            wall_s=numeric(group["wall_s"]),
        ))
    return rows


def summary_frame(rows: Sequence[SummaryRow], kind: str) -> pd.DataFrame:
    return pd.DataFrame([row.numbers(quality_column(kind)) for row in rows])


def noisy_throughput(runs: pd.DataFrame, archs: Sequence[str]) -> list[tuple[str, str, float]]:
    """(arch, variant, max/min tokens/s) of the groups whose seeds' speeds differ by over ``NOISY_THROUGHPUT``."""
    noisy = []
    for _, variant, arch, group in run_groups(runs, archs):
        speeds = numeric(group["tokens_per_s"]).dropna()
        if len(speeds) > 1 and speeds.min() > 0 and speeds.max() / speeds.min() > NOISY_THROUGHPUT:
            noisy.append((arch, variant, speeds.max() / speeds.min()))
    return noisy


@dataclass
class SignificanceRow:
    """An architecture against the reference at the same budget and variant (``test`` None: no reference run)."""

    budget: float
    variant: str
    arch: str
    reference: str
    test: WelchResult | None


def significance_rows(runs: pd.DataFrame, archs: Sequence[str], reference: str) -> list[SignificanceRow]:
    """Welch's t-test of the final validation losses of each group against the reference's."""
    groups = run_groups(runs, archs)
    by_key = {(b, v, a): g for b, v, a, g in groups}
    rows = []
    for budget, variant, arch, group in groups:
        if arch == reference:
            continue
        ref = by_key.get((budget, variant, reference))
        test = None if ref is None else welch_test(numeric(group["final_val_loss"]).dropna(),
                                                   numeric(ref["final_val_loss"]).dropna())
        rows.append(SignificanceRow(budget, variant, arch, reference, test))
    return rows


def significance_frame(rows: Sequence[SignificanceRow]) -> pd.DataFrame:
    return pd.DataFrame([{"budget_flops": r.budget, "variant": r.variant, "arch": r.arch, "reference": r.reference,
                          **r.test.to_dict()} for r in rows if r.test is not None])


@dataclass
class IsoFlopRow:
    """The isoFLOP parabola of one architecture at one budget over its trained sizes."""

    budget: float
    arch: str
    n_sizes: int
    n_runs: int
    fit: IsoFlopFit
    tokens_opt: float  # training tokens at N*, interpolated in log–log; nan without an optimum


def _tokens_at(points: pd.DataFrame, fit: IsoFlopFit) -> float:
    if not fit.ok:
        return math.nan
    slope = np.polyfit(np.log10(numeric(points[ISOFLOP_X])), np.log10(numeric(points["tokens"])), 1)
    return float(10 ** np.polyval(slope, fit.log10_params_opt))


def isoflop_rows(runs: pd.DataFrame, archs: Sequence[str]) -> list[IsoFlopRow]:
    """Chinchilla approach 2 per (budget, arch) with at least two sizes: loss against log10(active params)."""
    points = runs.dropna(subset=["final_val_loss", ISOFLOP_X])
    rows = []
    for budget in sorted(points["budget_flops"].unique()):
        for arch in archs:
            mine = points[(points["budget_flops"] == budget) & (points["arch"] == arch)]
            if mine["variant"].nunique() < 2:
                continue
            fit = fit_isoflop(numeric(mine[ISOFLOP_X]), numeric(mine["final_val_loss"]), list(mine["seed"]))
            rows.append(IsoFlopRow(budget, arch, mine["variant"].nunique(), len(mine), fit, _tokens_at(mine, fit)))
    return rows


def isoflop_frame(rows: Sequence[IsoFlopRow]) -> pd.DataFrame:
    return pd.DataFrame([{"budget_flops": r.budget, "arch": r.arch, "tokens_opt": r.tokens_opt, **r.fit.to_dict()}
                         for r in rows])


def isoflop_fits(rows: Sequence[IsoFlopRow]) -> dict[tuple[float, str], IsoFlopFit]:
    return {(r.budget, r.arch): r.fit for r in rows}


def optimum_comparisons(rows: Sequence[IsoFlopRow], reference: str) -> list[tuple[IsoFlopRow, OptimumComparison]]:
    """Each architecture's optimum against the reference's at the same budget."""
    fits = isoflop_fits(rows)
    return [(row, compare_optima(row.fit, fits[(row.budget, reference)])) for row in rows
            if row.arch != reference and (row.budget, reference) in fits]


def flops_breakdowns(records: list[dict], runs: pd.DataFrame, archs: Sequence[str]) -> list[tuple[str, str, dict]]:
    """(arch, variant, forward FLOPs/token by component) once per model, from the recorded config."""
    from architectures.config import ModelConfig
    from harness.flops import forward_breakdown

    by_id = {r["run_id"]: r for r in records}
    out, seen = [], set()
    for _, variant, arch, group in run_groups(runs, archs):
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
