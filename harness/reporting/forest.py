"""The forest plot: every planned comparison on one axis, its effect and interval, and its verdict.

Effects are put on one axis as the difference relative to the second architecture's mean,
100·Δ/|mean(b)| %, with the test's own 95 % interval of Δ scaled the same way (paired: the mean
per-seed difference; Welch: the difference of means), signed so that right of 0 means the first
architecture is better in the metric's direction. Filled markers: resolved (Holm-adjusted p < α in the family
of m); open: not resolved; grey crosses at 0: untestable; diamonds: exploratory (outside the
family). The raw Δ and its interval in the metric's unit are written beside each row.
"""

from __future__ import annotations

import math
from typing import Sequence

from harness.reporting.figures import STYLE, plt
from harness.reporting.findings import Finding, means, family_size

RESOLVED, UNRESOLVED, UNTESTABLE, EXPLORATORY = "#1b7837", "#4d4d4d", "#b0b0b0", "#762a83"


def _row(finding: Finding) -> tuple[float, float, float, str, str]:
    """(effect, low, high, colour, marker) signed so that positive = first is better."""
    t, c = finding.test, finding.comparison
    reference = abs(means(finding)[1])
    if not t.available or not math.isfinite(t.diff) or not reference > 0:
        return 0.0, math.nan, math.nan, UNTESTABLE, "x"
    scale = (100.0 if c.higher_is_better else -100.0) / reference
    low, high = sorted((scale * t.ci_low, scale * t.ci_high))
    if not c.in_family:
        return scale * t.diff, low, high, EXPLORATORY, "D"
    return scale * t.diff, low, high, RESOLVED if finding.resolved else UNRESOLVED, "o"


def forest_plot(findings: Sequence[Finding]):
    """One row per finding (family first, in plan order), or None without findings."""
    if not findings:
        return None
    ordered = [f for f in findings if f.comparison.in_family] + [f for f in findings if not f.comparison.in_family]
    m = family_size(findings)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(11, 0.42 * len(ordered) + 1.6))
        for y, finding in enumerate(reversed(ordered)):
            effect, low, high, color, marker = _row(finding)
            if math.isfinite(low):
                ax.plot([low, high], [y, y], color=color, linewidth=1.6)
            filled = finding.resolved or marker in ("x", "D")
            ax.plot(effect, y, marker=marker, color=color, markersize=7,
                    markerfacecolor=color if filled else "white", markeredgewidth=1.4)
            t, c = finding.test, finding.comparison
            text = (f"Δ {t.diff:+.3g} [{t.ci_low:+.3g}, {t.ci_high:+.3g}] {c.unit}".strip() if t.available
                    else "untestable")
            ax.annotate(text, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=7)
        ax.set_yticks(range(len(ordered)), [f.comparison.key + ("" if f.comparison.in_family else " (exploratory)")
                                            for f in reversed(ordered)], fontsize=7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("difference relative to the second's mean, 100·Δ/|mean(b)| (%), 95 % interval; "
                      "right of 0: first is better")
        for label, color, marker, face in (("resolved", RESOLVED, "o", RESOLVED), ("not resolved", UNRESOLVED, "o", "white"),
                                           ("untestable (p = 1)", UNTESTABLE, "x", UNTESTABLE),
                                           ("exploratory", EXPLORATORY, "D", EXPLORATORY)):
            ax.plot([], [], marker=marker, color=color, markerfacecolor=face, linestyle="", label=label)
        ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=4, frameon=False)
        ax.set_title(f"Every planned comparison: Holm's correction across the family of m = {m}", fontsize=9, pad=22)
        fig.tight_layout()
        return fig
