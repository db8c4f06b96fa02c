"""Findings: planned comparisons → Welch tests → Holm correction → sentences.

A ``Comparison`` holds the per-seed values of one metric for two groups (e.g. GPT-3 and
GPT-2 recall accuracy 48 tokens back) and what the literature expects of the first
relative to the second. ``assess`` tests every comparison of a family with Welch's t-test
(``harness.reporting.stats.welch_test``) and corrects the p-values for the family with Holm's
step-down method (``harness.reporting.stats.holm_adjust``); a comparison is *resolved* when its
Holm-adjusted p < α (default 0.05). ``findings_markdown`` writes one sentence per
comparison from those numbers alone — nothing is written by hand — listing the resolved
ones first and, separately, what did not reach significance. A resolved result against the
literature's expectation is reported as measured, with a note saying so.

Conventions: Δ = mean(a) − mean(b) in the metric's unit; "better" follows the metric's
direction (``higher_is_better``); the 95 % interval of Δ is Welch–Satterthwaite's and is
not adjusted for multiplicity (the Holm-adjusted p is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

from harness.reporting.formatting import fmt_p
from harness.reporting.stats import WelchResult, holm_adjust, welch_test

ALPHA = 0.05
Expectation = Literal["better", "worse", "no difference"]


@dataclass
class Comparison:
    """One planned comparison: the per-seed values of ``metric`` for groups ``a`` and ``b``."""

    key: str  # stable identifier, e.g. "recall_48/gpt3-vs-gpt2"
    topic: str  # the question, e.g. "banded vs dense attention"
    metric: str  # what was measured, e.g. "recall accuracy 48 tokens back (beyond the 32-token band)"
    unit: str  # e.g. "accuracy", "nats/token"
    a_label: str
    b_label: str
    a: list[float]
    b: list[float]
    higher_is_better: bool
    expected: Expectation | None = None  # what the literature expects of a relative to b
    rationale: str = ""  # why, in a clause: "its banded layers cannot attend past the window"
    context: str = ""  # measured circumstances worth reading with the result (a sentence, from the records)


@dataclass
class Finding:
    comparison: Comparison
    test: WelchResult
    p_holm: float = math.nan
    alpha: float = ALPHA

    @property
    def resolved(self) -> bool:
        return self.test.available and math.isfinite(self.p_holm) and self.p_holm < self.alpha

    @property
    def outcome(self) -> Expectation | None:
        """``better``/``worse`` for a resolved difference (in the metric's direction), else None."""
        if not self.resolved:
            return None
        a_higher = self.test.diff > 0
        return "better" if a_higher == self.comparison.higher_is_better else "worse"

    @property
    def agrees(self) -> bool | None:
        """Whether a resolved outcome matches the expectation (None: nothing to compare)."""
        expected = self.comparison.expected
        if expected is None or self.outcome is None:
            return None
        return self.outcome == expected

    def sentence(self) -> str:
        return finding_sentence(self)


def assess(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Finding]:
    """Welch-test every comparison, then Holm-adjust the p-values across the whole family."""
    findings = [Finding(c, welch_test(c.a, c.b), alpha=alpha) for c in comparisons]
    adjusted = holm_adjust([f.test.p if f.test.available else math.nan for f in findings])
    for finding, p_holm in zip(findings, adjusted):
        finding.p_holm = p_holm
    return findings


def _num(value: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.2e}"


def _p(name: str, value: float) -> str:
    """``p = 0.012`` or ``p < 1e-4``."""
    text = fmt_p(value)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def _means(finding: Finding) -> tuple[float, float]:
    c = finding.comparison
    clean = lambda xs: [x for x in xs if x is not None and math.isfinite(x)]  # noqa: E731
    a, b = clean(c.a), clean(c.b)
    return (sum(a) / len(a) if a else math.nan, sum(b) / len(b) if b else math.nan)


def _statistics(finding: Finding) -> str:
    t, c = finding.test, finding.comparison
    mean_a, mean_b = _means(finding)
    unit = f" {c.unit}" if c.unit else ""
    if not t.available:
        return f"{_num(mean_a)} vs {_num(mean_b)}{unit}; not testable: {t.reason}"
    return (f"{_num(mean_a)} vs {_num(mean_b)}{unit}, Δ = {t.diff:+.3g} "
            f"(95 % CI [{t.ci_low:+.3g}, {t.ci_high:+.3g}]), {_p('Welch p', t.p)}, "
            f"{_p('Holm-adjusted p', finding.p_holm)}, {t.n_a} vs {t.n_b} seeds")


def finding_sentence(finding: Finding) -> str:
    """One sentence from the numbers: the outcome, the statistics and how it stands to the literature."""
    c = finding.comparison
    if finding.resolved:
        head = f"**{c.a_label} is {finding.outcome} than {c.b_label}** on {c.metric}"
        tail = ""
        if finding.agrees is True:
            tail = f" As the literature expects ({c.rationale})." if c.rationale else " As expected."
        elif finding.agrees is False:
            tail = (f" This contradicts the expectation that {c.a_label} would be {c.expected} "
                    f"({c.rationale}); reported as measured.")
        elif c.expected == "no difference":
            tail = (f" The literature expects no difference here ({c.rationale}); this study measured one "
                    "and reports it as measured.")
        return f"{head}: {_statistics(finding)}.{tail}{' ' + c.context if c.context else ''}"
    head = f"{c.a_label} vs {c.b_label} on {c.metric}: not resolved"
    tail = ""
    if c.expected in ("better", "worse"):
        tail = (f" The literature expects {c.a_label} to be {c.expected} ({c.rationale}); this study cannot "
                "confirm or reject it at its budget and seed count.")
    elif c.expected == "no difference":
        tail = f" Consistent with the expectation of no difference ({c.rationale}), though not a proof of equality."
    return f"{head} ({_statistics(finding)}).{tail}{' ' + c.context if c.context else ''}"


@dataclass
class FindingsSummary:
    resolved: list[Finding] = field(default_factory=list)
    unresolved: list[Finding] = field(default_factory=list)


def split(findings: Sequence[Finding]) -> FindingsSummary:
    summary = FindingsSummary()
    for finding in findings:
        (summary.resolved if finding.resolved else summary.unresolved).append(finding)
    return summary


def findings_markdown(findings: Sequence[Finding]) -> str:
    """The Findings section: resolved sentences, then unresolved ones, then how they were tested."""
    if not findings:
        return "No planned comparison had data in these records."
    parts = split(findings)
    alpha = findings[0].alpha
    lines = [f"**Resolved** (Holm-adjusted p < {alpha:g} across the {len(findings)} comparisons below):", ""]
    lines += [f"- {f.sentence()}" for f in parts.resolved] or ["- none: no comparison reached significance."]
    lines += ["", "**Not resolved** (did not reach significance after the correction):", ""]
    lines += [f"- {f.sentence()}" for f in parts.unresolved] or ["- none."]
    lines += [
        "",
        f"Each comparison is Welch's unequal-variance t-test on the per-seed values; the family of "
        f"{len(findings)} comparisons is corrected with Holm's step-down method (family-wise error ≤ {alpha:g}). "
        "Δ = first − second in the metric's unit, with the uncorrected Welch 95 % interval. "
        "Seeds vary initialisation and data order together; \"not resolved\" means not shown at this budget "
        "and seed count, not equal. The sentences are generated from these numbers (`harness.reporting.findings`).",
    ]
    return "\n".join(lines)


def findings_rows(findings: Sequence[Finding]) -> list[dict]:
    """One dict per finding for ``findings.csv``."""
    rows = []
    for f in findings:
        c, t = f.comparison, f.test
        mean_a, mean_b = _means(f)
        rows.append({
            "key": c.key, "topic": c.topic, "metric": c.metric, "unit": c.unit, "a": c.a_label, "b": c.b_label,
            "mean_a": mean_a, "mean_b": mean_b, "diff": t.diff, "ci_low": t.ci_low, "ci_high": t.ci_high,
            "t": t.t, "dof": t.dof, "p": t.p, "p_holm": f.p_holm, "n_a": t.n_a, "n_b": t.n_b,
            "resolved": f.resolved, "outcome": f.outcome or "", "expected": c.expected or "",
            "agrees": "" if f.agrees is None else f.agrees, "note": t.reason,
        })
    return rows
