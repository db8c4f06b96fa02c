"""The study report's plan sections: what was pre-registered, and every deviation from it.

Reads ``reports/<name>/data/plan.json`` (``harness.sweeps.plan``): the plan's sha256, when it was
registered and whether that was before any run had data, and each amendment (time, reason,
what it added, changed or removed).
"""

from __future__ import annotations

from typing import Any, Sequence

from harness.reporting.findings import Finding, family_size
from harness.sweeps.plan import amendment_lines


def preregistration_lines(registered: dict[str, Any] | None, findings: Sequence[Finding], study_file: str) -> list[str]:
    """A paragraph on the plan: sha256, registration time, the family size and the study file copy."""
    if registered is None:
        return ["No pre-registered plan: `data/plan.json` is absent, so no comparison is tested. "
                "`python -m harness study` writes the plan before the first run trains."]
    m = family_size(findings)
    exploratory = len(findings) - m
    when = ("before any run had data" if registered.get("before_data", True)
            else "**after runs had data, so every comparison is exploratory**")
    return [f"The comparisons were registered at {registered['registered_at']} {when}: plan sha256 "
            f"`{registered['sha256']}` (`data/plan.json`; the study file as planned: `{study_file}`). "
            f"The confirmatory family has m = {m} comparisons"
            + (f"; {exploratory} more {'is' if exploratory == 1 else 'are'} exploratory." if exploratory else ".")]


def deviation_lines(registered: dict[str, Any] | None) -> list[str]:
    """The "Deviations from the plan" bullets (``- none.`` without any amendment)."""
    if registered is None:
        return ["- n/a: no plan was registered."]
    late = ([] if registered.get("before_data", True) else
            [f"- {registered['registered_at']}: the plan was registered after runs had data; every comparison is "
             "exploratory and none is resolved."])
    return late + amendment_lines(registered) or ["- none: the plan in force is the plan as registered."]
