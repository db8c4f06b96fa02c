"""The baseline file: entries with their tolerances built from measured seeds, written one metric a line, read back checked.

An entry holds the check seed's value and, for quality metrics, the tolerance
``max(TOLERANCE_K x sample std over the seeds, floor)`` and which way is better; for
throughput and the speed ratios (under ``SPEED_GROUP``), the median of every run or measurement
and the fixed ``PERF_TOLERANCE``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from harness.check.settings import (BASELINE_KIND, BASELINE_SCHEMA, DATA_RTOL, DETERMINISTIC_RTOL, FRACTION_FLOOR_DOCS,
                                    LOSS_FLOOR_NATS, PERF_TOLERANCE, SPEED_GROUP, TOLERANCE_K, CheckSettings,
                                    lower_is_better, metric_kind)


def _floor(name: str, settings: CheckSettings) -> float:
    if lower_is_better(name):
        return LOSS_FLOOR_NATS
    return FRACTION_FLOOR_DOCS / settings.eval_limit


def metric_entry(name: str, values_by_seed: dict[int, float], settings: CheckSettings) -> dict[str, Any]:
    """One baseline entry: the check seed's value and, for quality and perf, a tolerance from the spread."""
    value = values_by_seed[settings.seed]
    kind = metric_kind(name)
    if kind in ("exact", "digest"):
        return {"kind": kind, "value": value}
    if kind in ("data", "deterministic"):
        return {"kind": kind, "value": value, "rtol": DATA_RTOL if kind == "data" else DETERMINISTIC_RTOL}
    values = [values_by_seed[s] for s in sorted(values_by_seed)]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    entry: dict[str, Any] = {"kind": kind, "value": value}
    if kind == "perf":
        # throughput does not depend on the seed: the baseline is the median of every run,
        # and the spread (which here measures the machine's load, not the model) is kept for
        # information only; the tolerance is the fixed, wide PERF_TOLERANCE.
        entry["value"] = statistics.median(values)
        entry["tolerance"] = PERF_TOLERANCE
        entry["tolerance_unit"] = "relative, one-sided (slower)"
    else:
        entry["tolerance"] = max(TOLERANCE_K * std, _floor(name, settings))
        entry["better"] = "lower" if lower_is_better(name) else "higher"
    entry["seed_std"] = std
    entry["seed_values"] = values
    return entry


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions = {}
    for name in ("lm_eval", "numpy"):
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def speed_entry(values: list[float]) -> dict[str, Any]:
    """A speed ratio's baseline entry: the median of its measurements, the fixed ``PERF_TOLERANCE``."""
    return {"kind": "perf", "value": statistics.median(values), "tolerance": PERF_TOLERANCE,
            "tolerance_unit": "relative, one-sided (slower)", "measurements": values}


def build_baseline(
    settings: CheckSettings,
    measured: dict[str, dict[int, dict[str, float]]],
    *,
    command: str,
    wall_s: float,
    speed: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """The baseline document from {arch: {seed: metrics}} (seed ``settings.seed`` plus the spread
    seeds) and, when measured, {speed ratio: [measurements]} (kept under ``SPEED_GROUP``)."""
    import torch

    from harness.device import device_name
    from harness.runs.records import git_commit

    metrics: dict[str, dict[str, Any]] = {}
    shapes: dict[str, dict[str, int]] = {}
    for arch, by_seed in measured.items():
        names = [n for n in by_seed[settings.seed] if not n.startswith("_")]
        metrics[arch] = {
            name: metric_entry(name, {seed: m[name] for seed, m in by_seed.items() if name in m}, settings)
            for name in names
        }
        shapes[arch] = {"vocab_size": by_seed[settings.seed]["_vocab_size"], "seq_len": by_seed[settings.seed]["_seq_len"]}
    if speed:
        metrics[SPEED_GROUP] = {name: speed_entry(values) for name, values in speed.items()}
    return {
        "kind": BASELINE_KIND,
        "schema_version": BASELINE_SCHEMA,
        "produced": {
            "command": command,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "libraries": library_versions(),
            "machine": {
                "cpu": device_name(settings.device),
                "cores": os.cpu_count(),
                "platform": platform.platform(),
            },
            "git_commit": git_commit(),
            "seeds": [settings.seed, *settings.spread_seeds],
            "wall_s": round(wall_s, 1),
        },
        "tolerance_rule": (
            f"quality: max({TOLERANCE_K:g} x sample std over seeds {[settings.seed, *settings.spread_seeds]}, floor), "
            f"floor {LOSS_FLOOR_NATS} nats for losses, {FRACTION_FLOOR_DOCS} documents / eval_limit for fractions, "
            f"two-sided; perf: median of the runs, warn below (1 - {PERF_TOLERANCE}) x baseline, a failure only "
            f"with --strict-perf; exact and digest: equal; data: relative {DATA_RTOL:g}; deterministic: relative "
            f"{DETERMINISTIC_RTOL:g}"
        ),
        "settings": settings.to_dict(),
        "shapes": shapes,
        "metrics": metrics,
    }


def dumps_baseline(baseline: dict[str, Any]) -> str:
    """JSON with one line per metric, so the file stays short and a diff shows what moved."""
    lines = ["{"]
    top = list(baseline.items())
    for index, (key, value) in enumerate(top):
        comma = "," if index < len(top) - 1 else ""
        if key == "metrics":
            lines.append('  "metrics": {')
            archs = list(value.items())
            for a_index, (arch, entries) in enumerate(archs):
                lines.append(f"    {json.dumps(arch)}: {{")
                items = list(entries.items())
                for m_index, (name, entry) in enumerate(items):
                    tail = "," if m_index < len(items) - 1 else ""
                    lines.append(f"      {json.dumps(name)}: {json.dumps(entry)}{tail}")
                lines.append("    }" + ("," if a_index < len(archs) - 1 else ""))
            lines.append("  }" + comma)
        else:
            text = json.dumps(value, indent=2).replace("\n", "\n  ")
            lines.append(f"  {json.dumps(key)}: {text}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def load_baseline(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a baseline; anything wrong is one ``ValueError``/``FileNotFoundError`` sentence."""
    import torch

    path = Path(path)
    create = f"create it with `python -m harness check --update --baseline {path}`"
    if not path.is_file():
        raise FileNotFoundError(f"baseline {path} does not exist; {create}.")
    try:
        baseline = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"baseline {path} is not valid JSON ({error}); {create}.") from None
    if not isinstance(baseline, dict) or baseline.get("kind") != BASELINE_KIND:
        raise ValueError(f"{path} is not a harness check baseline (no \"kind\": \"{BASELINE_KIND}\"); {create}.")
    version = baseline.get("schema_version")
    if version != BASELINE_SCHEMA:
        raise ValueError(
            f"baseline {path} has schema version {version!r} but this harness reads version {BASELINE_SCHEMA}; "
            f"regenerate it with `python -m harness check --update --baseline {path}`."
        )
    for key in ("produced", "settings", "metrics", "shapes"):
        if not isinstance(baseline.get(key), dict):
            raise ValueError(f"baseline {path} has no valid {key!r} section; {create}.")
    made_with = str(baseline["produced"].get("torch_version", ""))
    if made_with.split(".")[0] != torch.__version__.split(".")[0]:
        raise ValueError(
            f"baseline {path} was made with torch {made_with or 'of unknown version'} and this is torch "
            f"{torch.__version__}: results across torch major versions are not comparable; regenerate it with "
            f"`python -m harness check --update --baseline {path}` (or install the torch it names)."
        )
    try:
        settings = CheckSettings.from_dict(baseline["settings"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"baseline {path} has invalid settings ({error}); {create}.") from None
    groups = [*settings.groups(), *([SPEED_GROUP] if SPEED_GROUP in baseline["metrics"] else [])]
    for arch in groups:
        entries = baseline["metrics"].get(arch)
        if not isinstance(entries, dict) or not entries:
            raise ValueError(f"baseline {path} has no metrics for {arch}; {create}.")
        for name, entry in entries.items():
            if isinstance(entry, dict) and entry.get("kind") == "digest" and isinstance(entry.get("value"), str):
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)):
                raise ValueError(f"baseline {path}: {arch} metric {name} has no numeric value; {create}.")
            if entry.get("kind") in ("quality", "perf") and not isinstance(entry.get("tolerance"), (int, float)):
                raise ValueError(f"baseline {path}: {arch} metric {name} has no numeric tolerance; {create}.")
    return baseline

