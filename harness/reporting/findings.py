"""Findings: planned comparisons → paired or Welch tests → Holm correction over the family → sentences.

A ``Comparison`` holds the per-seed values of one metric for two groups (e.g. GPT-3 and GPT-2
recall accuracy 48 tokens back, ``a_seeds``/``b_seeds`` naming the seed of each value) and what
the plan says: the expectation with its reason, the primary test (``paired``: seed i of one arm
against seed i of the other, ``harness.reporting.paired``; ``welch``: independent groups,
``harness.reporting.stats.welch_test``) and whether it is in the confirmatory family.

``assess`` tests every comparison and Holm-corrects the family (every confirmatory comparison,
an untestable one included at p = 1: ``family_size`` is the one m used by Holm and written in
the text); a comparison is *resolved* when it is in the family and its Holm-adjusted p < α.
Exploratory comparisons are tested and reported with their raw p, never as resolved.

Causal words: a sentence says "because" only when the comparison names a ``cause`` and the
planned ``control`` that tests it is in the family and resolved; otherwise it states the
co-occurring fact. ``check_causal`` enforces this on every generated sentence.

Conventions: Δ = mean(a) − mean(b) in the metric's unit (paired: the mean per-seed difference);
"better" follows the metric's direction (``higher_is_better``); the 95 % interval of Δ is the
test's own and is not adjusted for multiplicity (the Holm-adjusted p is).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, Sequence

from harness.reporting.formatting import fmt_p
from harness.reporting.paired import min_sign_flip_p, paired_t_test
from harness.reporting.stats import WelchResult, holm_adjust, welch_test

ALPHA = 0.05
Expectation = Literal["better", "worse", "no difference"]
CAUSAL = re.compile(r"\bbecause\b", re.IGNORECASE)


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
    test: str = "welch"  # the primary test: paired or welch
    in_family: bool = True  # confirmatory: Holm-corrected with the others
    a_seeds: list[int] | None = None  # the seed of each value (paired tests match on it)
    b_seeds: list[int] | None = None
    citation: str = ""
    cause: str = ""  # a candidate explanation of a difference ...
    control: str | None = None  # ... and the key of the planned comparison that tests it
    note: str = ""  # why an exploratory comparison is outside the family


@dataclass
class Finding:
    comparison: Comparison
    test: WelchResult
    p_holm: float = math.nan
    alpha: float = ALPHA
    cause_tested: bool = False  # the planned control of the comparison's cause is in the family and resolved

    @property
    def resolved(self) -> bool:
        return (self.comparison.in_family and self.test.available and math.isfinite(self.p_holm)
                and self.p_holm < self.alpha)

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
        return check_causal(finding_sentence(self), self)


def run_test(c: Comparison) -> WelchResult:
    """The comparison's primary test: paired on matched seeds, or Welch."""
    if c.test != "paired":
        return welch_test(c.a, c.b)
    a_seeds = c.a_seeds if c.a_seeds is not None else list(range(len(c.a)))
    b_seeds = c.b_seeds if c.b_seeds is not None else list(range(len(c.b)))
    b_by_seed = dict(zip(b_seeds, c.b))
    common = [(x, b_by_seed[s]) for s, x in zip(a_seeds, c.a) if s in b_by_seed]
    return paired_t_test([x for x, _ in common], [y for _, y in common])


def assess(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Finding]:
    """Test every comparison, Holm-adjust across the family (untestable at p = 1), mark tested causes."""
    findings = [Finding(c, run_test(c), alpha=alpha) for c in comparisons]
    family = [f for f in findings if f.comparison.in_family]
    adjusted = holm_adjust([f.test.p if f.test.available else math.nan for f in family])
    for finding, p_holm in zip(family, adjusted):
        finding.p_holm = p_holm
    by_key = {f.comparison.key: f for f in findings}
    for finding in findings:
        control = by_key.get(finding.comparison.control or "")
        finding.cause_tested = bool(finding.comparison.cause and control is not None and control.resolved)
    return findings


def family_size(findings: Sequence[Finding]) -> int:
    """m: the planned confirmatory comparisons, untestable ones included (the m Holm used)."""
    return sum(1 for f in findings if f.comparison.in_family)


def check_causal(sentence: str, finding: Finding) -> str:
    """``sentence`` unchanged, or ``ValueError`` when it says "because" without a tested cause."""
    if CAUSAL.search(sentence) and not finding.cause_tested:
        raise ValueError(f"the sentence for {finding.comparison.key!r} uses a causal word, but no planned control "
                         "tests that cause.")
    return sentence


def _num(value: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.2e}"


def _p(name: str, value: float) -> str:
    """``p = 0.012`` or ``p < 1e-4``."""
    text = fmt_p(value)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def means(finding: Finding) -> tuple[float, float]:
    c = finding.comparison
    clean = lambda xs: [x for x in xs if x is not None and math.isfinite(x)]  # noqa: E731
    a, b = clean(c.a), clean(c.b)
    return (sum(a) / len(a) if a else math.nan, sum(b) / len(b) if b else math.nan)


def _statistics(finding: Finding) -> str:
    t, c = finding.test, finding.comparison
    mean_a, mean_b = means(finding)
    unit = f" {c.unit}" if c.unit else ""
    if not t.available:
        return f"{_num(mean_a)} vs {_num(mean_b)}{unit}; {t.reason}"
    adjusted = f", {_p('Holm-adjusted p', finding.p_holm)}" if c.in_family else ""
    if t.method == "paired":
        return (f"{_num(mean_a)} vs {_num(mean_b)}{unit}, Δ = {t.diff:+.3g} per seed "
                f"(95 % CI [{t.ci_low:+.3g}, {t.ci_high:+.3g}]; d_z = {t.effect:+.2g}, 95 % CI "
                f"[{t.effect_low:+.2g}, {t.effect_high:+.2g}]), {_p('paired t p', t.p)}, "
                f"{_p('sign-flip p', t.perm_p)} (smallest possible {t.perm_p_min:.3g}){adjusted}, {t.n_a} seed pairs")
    return (f"{_num(mean_a)} vs {_num(mean_b)}{unit}, Δ = {t.diff:+.3g} "
            f"(95 % CI [{t.ci_low:+.3g}, {t.ci_high:+.3g}]), {_p('Welch p', t.p)}{adjusted}, "
            f"{t.n_a} vs {t.n_b} seeds")


def _cause(finding: Finding) -> str:
    c = finding.comparison
    if not c.cause or finding.test.available is False:
        return ""
    if finding.cause_tested:
        return f" This difference is there because of {c.cause}: the planned control `{c.control}` tests it and is resolved."
    return f" It co-occurs with {c.cause}; the planned control `{c.control}` does not resolve that cause, so none is claimed."


def _why(c: Comparison) -> str:
    return f" ({c.rationale})" if c.rationale else ""


def finding_sentence(finding: Finding) -> str:
    """One sentence from the numbers: the outcome, the statistics and how it stands to the literature."""
    c = finding.comparison
    context = f" {c.context}" if c.context else ""
    if finding.resolved:
        head = f"**{c.a_label} is {finding.outcome} than {c.b_label}** on {c.metric}"
        tail = ""
        if finding.agrees is True:
            tail = f" As the literature expects ({c.rationale})." if c.rationale else " As expected."
        elif finding.agrees is False:
            tail = (f" This contradicts the expectation that {c.a_label} would be {c.expected}{_why(c)}; "
                    "reported as measured.")
        elif c.expected == "no difference":
            tail = (f" The literature expects no difference here{_why(c)}; this study measured one "
                    "and reports it as measured.")
        return f"{head}: {_statistics(finding)}.{tail}{_cause(finding)}{context}"
    verdict = "untestable" if not finding.test.available else "not resolved" if c.in_family else "exploratory"
    head = f"{c.a_label} vs {c.b_label} on {c.metric}: {verdict}"
    tail = ""
    if c.expected in ("better", "worse"):
        tail = (f" The literature expects {c.a_label} to be {c.expected}{_why(c)}; this study cannot "
                "confirm or reject it at its budget and seed count.")
    elif c.expected == "no difference":
        tail = f" Consistent with the expectation of no difference{_why(c)}, though not a proof of equality."
    if not c.in_family:
        tail += f" Outside the corrected family{f' ({c.note})' if c.note else ''}: a lead, not a result."
    return f"{head} ({_statistics(finding)}).{tail}{_cause(finding)}{context}"


@dataclass
class FindingsSummary:
    resolved: list[Finding] = field(default_factory=list)
    unresolved: list[Finding] = field(default_factory=list)
    untestable: list[Finding] = field(default_factory=list)
    exploratory: list[Finding] = field(default_factory=list)


def split(findings: Sequence[Finding]) -> FindingsSummary:
    summary = FindingsSummary()
    for f in findings:
        if not f.comparison.in_family:
            summary.exploratory.append(f)
        elif f.resolved:
            summary.resolved.append(f)
        elif not f.test.available:
            summary.untestable.append(f)
        else:
            summary.unresolved.append(f)
    return summary


def _method_paragraph(findings: Sequence[Finding], m: int, alpha: float) -> str:
    paired = [f.test.n_a for f in findings if f.comparison.test == "paired"]
    text = (f"The family is the {m} planned confirmatory comparisons (untestable ones included at p = 1), corrected "
            f"with Holm's step-down method (family-wise error ≤ {alpha:g}); exploratory comparisons are outside it. ")
    if paired:
        n = max(paired)
        text += (f"Where seeds are matched (same initialisation seed and data order) the primary test is the paired "
                 f"t-test on per-seed differences, with the exact two-sided sign-flip permutation p beside it; at "
                 f"{n} seed pairs the smallest p that permutation test can reach is {min_sign_flip_p(n):.3g}. ")
    if any(f.comparison.test == "welch" for f in findings):
        text += "Unpaired comparisons use Welch's unequal-variance t-test. "
    return text + ("Δ = first − second in the metric's unit with the test's uncorrected 95 % interval. "
                   "\"Not resolved\" means not shown at this budget and seed count, not equal. The sentences are "
                   "generated from these numbers (`harness.reporting.findings`).")


def findings_markdown(findings: Sequence[Finding]) -> str:
    """The Findings section: resolved, not resolved, untestable, exploratory, then how they were tested."""
    if not findings:
        return "No planned comparison had data in these records."
    parts, m, alpha = split(findings), family_size(findings), findings[0].alpha
    lines = [f"**Resolved** (Holm-adjusted p < {alpha:g} across the {m} planned confirmatory comparisons):", ""]
    lines += [f"- {f.sentence()}" for f in parts.resolved] or ["- none: no comparison reached significance."]
    lines += ["", "**Not resolved** (did not reach significance after the correction):", ""]
    lines += [f"- {f.sentence()}" for f in parts.unresolved] or ["- none."]
    lines += ["", f"**Untestable** (in the family of {m} at p = 1):", ""]
    lines += [f"- {f.sentence()}" for f in parts.untestable] or ["- none."]
    if parts.exploratory:
        lines += ["", "**Exploratory** (not pre-registered as confirmatory; raw p, not corrected, never resolved):", ""]
        lines += [f"- {f.sentence()}" for f in parts.exploratory]
    return "\n".join(lines + ["", _method_paragraph(findings, m, alpha)])


def findings_rows(findings: Sequence[Finding]) -> list[dict]:
    """One dict per finding for ``findings.csv``."""
    rows = []
    for f in findings:
        c, t = f.comparison, f.test
        mean_a, mean_b = means(f)
        rows.append({
            "key": c.key, "topic": c.topic, "metric": c.metric, "unit": c.unit, "a": c.a_label, "b": c.b_label,
            "in_family": c.in_family, "test": t.method, "mean_a": mean_a, "mean_b": mean_b, "diff": t.diff,
            "ci_low": t.ci_low, "ci_high": t.ci_high, "effect": t.effect, "effect_low": t.effect_low,
            "effect_high": t.effect_high, "t": t.t, "dof": t.dof, "p": t.p, "perm_p": t.perm_p,
            "perm_p_min": t.perm_p_min, "p_holm": f.p_holm, "n_a": t.n_a, "n_b": t.n_b, "resolved": f.resolved,
            "outcome": f.outcome or "", "expected": c.expected or "", "agrees": "" if f.agrees is None else f.agrees,
            "note": t.reason or c.note,
        })
    return rows
