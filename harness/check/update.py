"""Updating: re-measure the check seed and the spread seeds, write the baseline atomically, say what changed."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from harness.check.baseline import build_baseline, dumps_baseline
from harness.check.measure import measure, measure_speed
from harness.check.settings import (BASELINE_KIND, BASELINE_SCHEMA, DEFAULT_BASELINE, SPEED_GROUP, SPEED_MEASUREMENTS,
                                    TEXT_GROUP, CheckSettings)
from harness.reporting.formatting import fmt_precise


def baseline_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """Settings and metrics that differ between two baselines, one line each."""
    if old is None:
        return "new baseline (no previous one to compare with)"
    lines = []
    old_settings, new_settings = old.get("settings", {}), new["settings"]
    for key in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(key) != new_settings.get(key):
            lines.append(f"settings.{key}: {old_settings.get(key)!r} -> {new_settings.get(key)!r}")
    old_metrics = old.get("metrics", {})
    for arch in sorted(set(old_metrics) | set(new["metrics"])):
        before, after = old_metrics.get(arch, {}), new["metrics"].get(arch, {})
        for name in list(before) + [n for n in after if n not in before]:
            a, b = before.get(name), after.get(name)
            if a is None:
                lines.append(f"{arch} {name}: added {_fmt(b['value'])}")
            elif b is None:
                lines.append(f"{arch} {name}: removed (was {_fmt(a['value'])})")
            elif a.get("value") != b.get("value") or a.get("tolerance") != b.get("tolerance"):
                tol = ""
                if a.get("tolerance") != b.get("tolerance"):
                    tol = f" (tolerance {fmt_precise(a.get('tolerance'), 3)} -> {fmt_precise(b.get('tolerance'), 3)})"
                lines.append(f"{arch} {name}: {_diff_value(a.get('value'), b['value'])}{tol}")
    return "\n".join(lines) if lines else "no metric changed"


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else fmt_precise(value)


def _diff_value(before: Any, after: Any) -> str:
    """``before -> after`` with enough digits to tell them apart."""
    if isinstance(before, str) or isinstance(after, str):
        return f"{before} -> {after}"
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and fmt_precise(before) == fmt_precise(after):
        return f"{before!r} -> {after!r}"
    return f"{fmt_precise(before)} -> {fmt_precise(after)}"


def _same_settings(old: Any, new: dict[str, Any]) -> bool:
    """Whether ``old`` is a valid baseline of this schema made with ``new``'s settings (archs aside)."""
    if not isinstance(old, dict) or old.get("kind") != BASELINE_KIND or old.get("schema_version") != BASELINE_SCHEMA:
        return False
    settings = old.get("settings")
    if not isinstance(settings, dict) or not isinstance(old.get("metrics"), dict) or not isinstance(old.get("shapes"), dict):
        return False
    if any(a not in old["metrics"] or a not in old["shapes"] for a in settings.get("archs", [])):
        return False
    if settings.get("text_data") and TEXT_GROUP not in old["metrics"]:
        return False
    return {**settings, "archs": None} == {**new["settings"], "archs": None}


def update_baseline(
    baseline_path: str | os.PathLike = DEFAULT_BASELINE,
    settings: CheckSettings | None = None,
    *,
    archs: list[str] | None = None,
    workdir: str | os.PathLike | None = None,
    command: str | None = None,
    speed: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], str]:
    """Measure seed ``settings.seed`` and the spread seeds, write the baseline atomically; (baseline, diff).

    ``archs``: measure only these; when the existing baseline has the same settings, its
    other architectures are kept, else the new file holds only these. ``speed``: also measure
    the speed ratios (``SPEED_MEASUREMENTS`` times, the median kept); without it the previous
    baseline's speed ratios are kept.
    """
    from harness.io import write_text_atomic

    started = time.perf_counter()
    path = Path(baseline_path)
    settings = settings or CheckSettings()
    old = None
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            old = None  # a malformed baseline is replaced; the diff says so
    groups = list(archs) if archs else settings.groups()
    measured_archs = [g for g in groups if g != TEXT_GROUP]
    seeds = [settings.seed, *settings.spread_seeds]
    measured = measure(settings, seeds, archs=groups, workdir=workdir, log=log)
    if command is None:
        command = f"harness.check.update_baseline({str(path)!r}, {settings!r})"
    speed_values = measure_speed(SPEED_MEASUREMENTS, log) if speed else None
    made_with = settings if not archs else replace(settings, archs=tuple(measured_archs) or settings.archs)
    new = build_baseline(made_with, measured, command=command, wall_s=time.perf_counter() - started,
                         speed=speed_values)
    if archs and _same_settings(old, new):
        # keep the previous baseline's other groups (same settings, so still comparable)
        merged = list(old["settings"]["archs"]) + [a for a in measured_archs if a not in old["settings"]["archs"]]
        new["settings"]["archs"] = merged
        kept = [*merged, *([TEXT_GROUP] if settings.text_data else [])]
        new["metrics"] = {a: new["metrics"][a] if a in groups else old["metrics"][a] for a in kept}
        new["shapes"] = {a: new["shapes"][a] if a in groups else old["shapes"][a] for a in kept}
    elif archs and TEXT_GROUP not in groups:
        new["settings"]["text_data"] = None  # a new file of these architectures alone, without a text run
    if not speed and isinstance(old, dict) and isinstance(old.get("metrics"), dict) and SPEED_GROUP in old["metrics"]:
        new["metrics"][SPEED_GROUP] = old["metrics"][SPEED_GROUP]
    write_text_atomic(path, dumps_baseline(new))
    return new, baseline_diff(old if isinstance(old, dict) else None, new)
