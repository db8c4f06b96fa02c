"""Comparing: retrain with a baseline's settings and judge every metric against its entry, one ``Row`` each."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from harness.check.baseline import library_versions, load_baseline
from harness.check.deterministic import resume_pairs
from harness.check.errors import PartialRun
from harness.check.measure import measure_group, measure_speed, workspace
from harness.check.settings import (DATA_RTOL, DEFAULT_BASELINE, DETERMINISTIC_RTOL, SPEED_GROUP, TEXT_GROUP,
                                    CheckSettings, lower_is_better, metric_kind)
from harness.check.text_run import TextDataMissing, missing_is_failure
from harness.reporting.formatting import fmt_precise
from harness.threads import torch_threads


class Direction(Enum):
    """Which way a metric moved past its tolerance: ``BETTER`` (an unexplained improvement,
    still a failure) or ``WORSE`` (a quality loss, or throughput below its floor)."""

    BETTER = "better"
    WORSE = "worse"


@dataclass
class Row:
    """One metric of one architecture: baseline and current value, the tolerance applied, the verdict."""

    arch: str  # an architecture, or a group beside them (``text``, ``speed``)
    metric: str
    kind: str
    baseline: float | str | None  # a string for a ``digest``
    now: float | str | None
    tolerance: str
    verdict: str  # ok | FAIL ... | warn ... | new
    failed: bool = False
    warning: bool = False
    direction: Direction | None = None  # set when the metric moved past its tolerance (not for exact or data)


def compare_metric(arch: str, name: str, entry: dict | None, now: float | None, strict_perf: bool) -> Row:
    """Judge one metric's value ``now`` against its baseline ``entry`` (None: not in the baseline)."""
    if entry is None:
        return Row(arch, name, metric_kind(name), None, now, "-", "new (not in baseline; --update adds it)")
    kind, base = entry.get("kind", metric_kind(name)), entry["value"]
    if now is None:
        return Row(arch, name, kind, base, None, "-", "FAIL missing", failed=True)
    if kind in ("exact", "digest"):
        ok = now == base
        return Row(arch, name, kind, base, now, "exact", "ok" if ok else "FAIL changed", failed=not ok)
    if kind in ("data", "deterministic"):
        rtol = entry.get("rtol", DATA_RTOL if kind == "data" else DETERMINISTIC_RTOL)
        ok = math.isclose(now, base, rel_tol=rtol, abs_tol=0.0)
        return Row(arch, name, kind, base, now, f"rel {rtol:g}", "ok" if ok else "FAIL changed", failed=not ok)
    tolerance = float(entry["tolerance"])
    if kind == "perf":
        limit = base * (1 - tolerance)
        if now >= limit:
            return Row(arch, name, kind, base, now, f"-{tolerance:.0%}", "ok")
        verdict = f"{'FAIL' if strict_perf else 'warn'} slower ({now / base:.2f}x)"
        return Row(arch, name, kind, base, now, f"-{tolerance:.0%}", verdict, failed=strict_perf,
                   warning=not strict_perf, direction=Direction.WORSE)
    delta = now - base
    if not math.isfinite(now) or abs(delta) > tolerance:
        lower = entry.get("better", "lower" if lower_is_better(name) else "higher") == "lower"
        worse = (delta > 0) == lower or not math.isfinite(now)
        direction = Direction.WORSE if worse else Direction.BETTER
        return Row(arch, name, kind, base, now, f"±{fmt_precise(tolerance, 3)}",
                   f"FAIL {direction.value} by {fmt_precise(abs(delta), 3)}", failed=True, direction=direction)
    return Row(arch, name, kind, base, now, f"±{fmt_precise(tolerance, 3)}", "ok")


@dataclass
class CheckResult:
    rows: list[Row]
    wall_s: float
    notes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # arch -> why its run is incomplete

    @property
    def passed(self) -> bool:
        return not self.errors and not any(row.failed for row in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.failed]

    @property
    def warnings(self) -> list[Row]:
        return [row for row in self.rows if row.warning]

    def table(self) -> str:
        return format_table(self.rows)

    def summary(self) -> str:
        failed = ", ".join(f"{r.arch} {r.metric}" for r in self.failures)
        warned = ", ".join(f"{r.arch} {r.metric}" for r in self.warnings)
        parts = [f"{len(self.rows)} metrics, {len(self.failures)} failed, {len(self.warnings)} warnings, "
                 f"{self.wall_s:.0f} s"]
        if self.errors:
            parts.append("incomplete run: " + ", ".join(self.errors))
        if failed:
            parts.append(f"failed: {failed}")
        if warned:
            parts.append(f"warnings: {warned}")
        return ("PASS: " if self.passed else "FAIL: ") + "; ".join(parts)


def format_table(rows: list[Row]) -> str:
    header = ("arch", "metric", "baseline", "now", "tolerance", "verdict")
    cells = [header] + [(r.arch, r.metric, _fmt_value(r.baseline, r.kind), _fmt_value(r.now, r.kind), r.tolerance,
                         r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = (False, False, True, True, True, False)

    def line(row) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths))] + [line(r) for r in cells[1:]])


def _fmt_value(value: float | str | None, kind: str) -> str:
    """A digest as it is; a deterministic value with 10 significant figures (its tolerance is relative 1e-6)."""
    if isinstance(value, str):
        return value
    if kind in ("deterministic", "resume") and isinstance(value, float):
        return f"{value:.10g}"
    return fmt_precise(value)


def equal_row(arch: str, name: str, expected: float, now: float) -> Row:
    """A ``resume`` row: ``now`` (the resumed run) must equal ``expected`` (the uninterrupted run)."""
    same = now == expected or (math.isnan(now) and math.isnan(expected))
    return Row(arch, name, "resume", expected, now, "equal", "ok" if same else "FAIL resumed run differs",
               failed=not same)


def compare(
    baseline: dict[str, Any],
    measured: dict[str, dict[str, float]],
    *,
    strict_perf: bool = False,
) -> list[Row]:
    """Rows for every (arch, metric) of the baseline and of ``measured`` ({arch: metrics})."""
    rows = []
    for arch, now in measured.items():
        entries = baseline["metrics"].get(arch, {})
        names = list(entries) + [n for n in now if n not in entries and not n.startswith("_")]
        rows.extend(compare_metric(arch, name, entries.get(name), now.get(name), strict_perf) for name in names)
    return rows


def _select_archs(settings: CheckSettings, archs: list[str] | None, path: Path) -> list[str]:
    """The groups to measure: every one of the baseline's, or ``archs`` (architectures, and ``text``)."""
    if not archs:
        return settings.groups()
    from architectures import available

    if TEXT_GROUP in archs and not settings.text_data:
        raise ValueError(f"baseline {path} has no text run; make one with `python -m harness check --update`.")
    archs = [a for a in archs if a != TEXT_GROUP] + [TEXT_GROUP] * (TEXT_GROUP in archs)
    unregistered = [a for a in archs if a not in available() and a != TEXT_GROUP]
    if unregistered:
        raise ValueError(f"unknown architecture(s) {', '.join(unregistered)}; known: {', '.join(available())}.")
    unknown = [a for a in archs if a not in settings.groups()]
    if unknown:
        raise ValueError(
            f"baseline {path} has no {', '.join(unknown)} (it has {', '.join(settings.archs)}); "
            f"add it with `python -m harness check --update --archs {','.join(unknown)} --baseline {path}`."
        )
    return list(archs)


def run_check(
    baseline_path: str | os.PathLike = DEFAULT_BASELINE,
    *,
    archs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    strict_perf: bool = False,
    speed: bool = False,
    workdir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> CheckResult:
    """Retrain and evaluate with the baseline's settings, compare; ``result.passed`` is the verdict.

    ``speed``: also time the speed ratios of ``harness.speed_ratios`` (about 25 s) and judge them
    like throughput (a warning below ``1 - PERF_TOLERANCE`` x the baseline; a failure with
    ``strict_perf``).

    ``archs``: a subset of the baseline's groups (architectures, and ``"text"`` for the text run;
    the resume check runs with its architecture). ``overrides``: model config fields
    set on every architecture (``{"init_std": 0.2}``, ``{"n_layer": 1}``): a deliberately
    changed model, to see the gate bite.
    """
    import torch

    started = time.perf_counter()
    path = Path(baseline_path)
    baseline = load_baseline(path)
    settings = CheckSettings.from_dict(baseline["settings"])
    selected = _select_archs(settings, archs, path)
    notes = []
    made_with = baseline["produced"].get("torch_version")
    if made_with != torch.__version__:
        notes.append(f"baseline made with torch {made_with}, this is {torch.__version__}")
    made_with_eval = (baseline["produced"].get("libraries") or {}).get("lm_eval")
    now_eval = library_versions()["lm_eval"]
    if made_with_eval and made_with_eval != now_eval:
        notes.append(f"baseline made with lm-eval {made_with_eval}, this is {now_eval}")
    if overrides:
        notes.append(f"model overrides in effect: {overrides}")
    measured: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    resumed: list[Row] = []
    from harness.device import configure_device

    configure_device(settings.device, settings.dtype, compile=False)
    with workspace(workdir) as root, torch_threads(settings.threads):
        for group in selected:
            try:
                measured[group] = measure_group(group, settings, settings.seed, root, overrides, log)
                if group == settings.resume_arch:
                    pairs = resume_pairs(group, settings, root / "resume", measured[group], overrides)
                    resumed.extend(equal_row(group, name, *pair) for name, pair in pairs.items())
            except TextDataMissing as missing:
                if missing_is_failure():
                    errors[group] = f"{missing} (CI=true: missing shared data is a failure)"
                else:
                    notes.append(f"text run skipped: {missing}")
            except PartialRun as error:
                kept = "" if workdir is not None else " (the check's temporary folder is removed: pass workdir / --workdir DIR to keep it)"
                errors[group] = f"{error}{kept}"
    if speed:
        measured[SPEED_GROUP] = {name: values[0] for name, values in measure_speed(log=log).items()}
    rows = compare(baseline, measured, strict_perf=strict_perf) + resumed
    return CheckResult(rows, time.perf_counter() - started, notes, errors)

