"""Matched-compute sweeps: every architecture × model variant × budget × seed, then a report.

A sweep is planned completely before anything trains (so a bad architecture name or width
fails at once), then run in the order seed → budget → variant → architecture, so an
interrupted sweep already holds complete comparisons for the first seeds. Each run goes
through ``harness.train.train``: a run whose record already says ``ok`` (same resolved
spec and seed → same run id) is reused, an interrupted one continues from its checkpoint,
so re-running the same command resumes the sweep and trains nothing twice.

Model variants: the ``--size`` preset, or several (``--sizes nano,micro``), optionally
crossed with ``--widths 64,96,128`` (each overrides ``d_model``; n_layer and n_head stay at
the preset's values, so a width must be divisible by n_head, and d_ff follows as 4·d_model).
More than one variant at a budget makes it an isoFLOP sweep (Chinchilla approach 2).

The sweep's run ids and the command that made it go to ``reports/<name>/runs.json``;
``harness.report.build_report`` turns them into the report.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.io import read_json, write_json_atomic

DEFAULT_ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")
REFERENCE_ARCH = "gpt2"
RUNS_NAME = "runs.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _items(text: str | None, what: str) -> list[str]:
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not items:
        raise ValueError(f"{what} is empty; give a comma-separated list.")
    return items


def parse_archs(text: str) -> list[str]:
    """``"gpt1,gpt2"`` → names, checked against the registry (duplicates dropped, order kept)."""
    from architectures import available

    known = available()
    names = list(dict.fromkeys(_items(text, "--archs")))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown architecture{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in --archs; "
            f"known: {', '.join(known)}."
        )
    return names


def parse_budgets(text: str | float | list | None) -> list[float] | None:
    """``"1e12,3e12"`` → [1e12, 3e12] FLOPs (None: the size's default budget)."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        values = [float(text)]
    elif isinstance(text, (list, tuple)):
        values = [float(v) for v in text]
    else:
        try:
            values = [float(item) for item in _items(str(text), "--budget")]
        except ValueError as error:
            if "empty" in str(error):
                raise
            raise ValueError(f"--budget takes FLOPs as numbers, e.g. 1e12 or 1e12,3e12; got {text!r}.") from None
    for value in values:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"every budget must be a positive number of FLOPs, got {value}.")
    return list(dict.fromkeys(values))


def parse_widths(text: str | None) -> list[int] | None:
    """``"64,96,128"`` → d_model values (None when not given)."""
    if text is None:
        return None
    try:
        widths = [int(item) for item in _items(text, "--widths")]
    except ValueError as error:
        if "empty" in str(error):
            raise
        raise ValueError(f"--widths takes integers (d_model values), e.g. 64,96,128; got {text!r}.") from None
    if any(width < 1 for width in widths):
        raise ValueError(f"every width (d_model) must be a positive integer, got {text!r}.")
    return list(dict.fromkeys(widths))


def format_budget(value: float) -> str:
    """1e12 → ``1e12``, 2.5e11 → ``2.5e11`` (for names)."""
    mantissa, exponent = f"{value:.3g}".split("e") if "e" in f"{value:.3g}" else (f"{value:.3g}", "0")
    return f"{mantissa}e{int(exponent)}"


@dataclass
class Variant:
    """One model within an architecture: a size preset plus config overrides (d_model)."""

    size: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = ",".join(f"{key}={value}" for key, value in sorted(self.overrides.items()))
        return f"{self.size} {extra}".strip()


@dataclass
class SweepPlan:
    archs: list[str]
    variants: list[Variant]
    budgets: list[float]
    seeds: int
    specs: list = field(default_factory=list)  # RunSpec, in training order
    reference: str = REFERENCE_ARCH

    @property
    def mode(self) -> str:
        """``isoflop`` when several model variants share a budget, else ``matched``."""
        return "isoflop" if len(self.variants) > 1 else "matched"

    @property
    def run_ids(self) -> list[str]:
        return [spec.run_id() for spec in self.specs]


def plan_sweep(args: argparse.Namespace) -> SweepPlan:
    """Every RunSpec of the sweep, resolved (raises ``ValueError`` on any bad input first).

    ``args`` carries ``add_run_arguments`` fields plus ``archs`` (str), ``seeds`` (int),
    ``sizes`` (str or None), ``widths`` (str or None), ``budget`` (list of floats or None).
    """
    from architectures.config import parse_overrides
    from harness.cli.run import spec_from_args

    archs = parse_archs(args.archs)
    seeds = args.seeds
    if seeds is None or seeds < 1:
        raise ValueError(f"--seeds must be at least 1 (seeds 0..N-1 are trained for each model), got {seeds}.")
    sizes = list(dict.fromkeys(_items(args.sizes, "--sizes"))) if getattr(args, "sizes", None) else [args.size]
    widths = parse_widths(getattr(args, "widths", None))
    base_overrides = parse_overrides(args.set)
    if widths and "d_model" in base_overrides:
        raise ValueError("--widths sets d_model; do not also give --set d_model=..., choose one.")
    variants = [Variant(size, {"d_model": width} if widths else {}) for size in sizes for width in (widths or [None])]
    budgets = parse_budgets(args.budget)
    reference = getattr(args, "reference", None) or (REFERENCE_ARCH if REFERENCE_ARCH in archs else archs[0])
    if reference not in archs:
        raise ValueError(f"--reference {reference!r} is not among --archs ({', '.join(archs)}).")

    specs = []
    for seed in range(seeds):
        for budget in budgets or [None]:
            for variant in variants:
                for arch in archs:
                    run_args = copy.copy(args)
                    run_args.size = variant.size
                    run_args.budget = budget
                    run_args.set = list(args.set) + [f"{key}={value}" for key, value in variant.overrides.items()]
                    try:
                        specs.append(spec_from_args(run_args, arch, seed))
                    except ValueError as error:
                        raise ValueError(f"{arch} {variant.label}: {error}") from None
    resolved = sorted({spec.budget_flops for spec in specs})
    if budgets is None and len(resolved) > 1:
        raise ValueError(
            f"the sizes {', '.join(sizes)} have different default budgets; give one --budget so they train at the same compute."
        )
    return SweepPlan(archs, variants, budgets or resolved, seeds, specs, reference)


@dataclass
class SweepOutcome:
    run_ids: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: str | None = None


def _needs_evaluation(args: argparse.Namespace, result) -> bool:
    if getattr(args, "no_eval", False) or result.record.get("status") != "ok":
        return False
    done = result.record.get("evaluation") or {}
    if not done:
        return True
    if not args.tasks:
        return False
    return any(task not in done for task in args.tasks.split(","))


def run_sweep(
    plan: SweepPlan,
    args: argparse.Namespace,
    results_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Train (or reuse) and evaluate every run of ``plan``; a failed run is noted and skipped.

    Stops at the first interrupted run (Ctrl-C): its checkpoint is saved and the same
    command resumes. Evaluation uses ``harness.cli.run.evaluate_after_training`` and is
    skipped for a reused run that already holds the requested tasks.
    """
    from harness.paths import results_dir as default_results_dir
    from harness.run_lock import RunLocked, hold_run_lock
    from harness.train import TrainingFailed

    root = Path(results_dir) if results_dir is not None else default_results_dir()
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    outcome = SweepOutcome()
    total = len(plan.specs)
    for index, spec in enumerate(plan.specs, 1):
        run_id = spec.run_id()
        outcome.run_ids.append(run_id)
        overrides = ",".join(f"{k}={v}" for k, v in sorted(spec.overrides.items()))
        what = f"[{index}/{total}] {spec.arch} {spec.size}{' ' + overrides if overrides else ''} seed {spec.seed}"
        started = time.perf_counter()
        try:
            with hold_run_lock(root / run_id, wait=bool(getattr(args, "wait", False)), on_wait=log):
                result = _train_and_evaluate(spec, root, args, outcome, what, log)
        except (TrainingFailed, RunLocked) as failure:
            outcome.failed[run_id] = str(failure)
            log(f"{what}: FAILED ({failure}); continuing with the next run")
            continue
        if result.record.get("status") == "interrupted":
            outcome.interrupted = run_id
            log(f"{what}: interrupted; checkpoint saved, run the same command again to resume the sweep")
            break
        loss = result.record.get("final_val_loss")
        log(
            f"{what}: {'reused' if result.reused else 'trained'} {run_id}"
            f"{f', val loss {loss:.4f} nats/token' if isinstance(loss, (int, float)) else ''}"
            f" ({time.perf_counter() - started:.0f} s)"
        )
    return outcome


def _train_and_evaluate(spec, root: Path, args: argparse.Namespace, outcome: SweepOutcome, what: str, log):
    """One run of the sweep (inside its run lock): train or reuse it, then evaluate it if needed."""
    from harness.cli.run import evaluate_after_training
    from harness.train import train

    run_id = spec.run_id()
    result = train(spec, root, force=bool(getattr(args, "force", False)), progress=False)
    if result.record.get("status") == "interrupted":
        return result
    (outcome.reused if result.reused else outcome.trained).append(run_id)
    if _needs_evaluation(args, result):
        try:
            evaluate_after_training(args, result)
            outcome.evaluated.append(run_id)
        except (ValueError, FileNotFoundError, RuntimeError) as error:
            outcome.failed[run_id] = f"evaluation failed: {error}"
            log(f"{what}: evaluation failed ({error}); the trained run is kept")
    return result


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name or "") or ".." in name:
        raise ValueError(
            f"report name {name!r} must be a folder name of letters, digits, '.', '_', '+' or '-' (no '/')."
        )
    return name


def default_name(plan: SweepPlan) -> str:
    sizes = "+".join(dict.fromkeys(v.size for v in plan.variants))
    if any(v.overrides for v in plan.variants):
        sizes += "-w" + "+".join(str(v.overrides["d_model"]) for v in plan.variants if "d_model" in v.overrides)
    budgets = "+".join(format_budget(b) for b in plan.budgets)
    return f"{'isoflop' if plan.mode == 'isoflop' else 'compare'}-{sizes}-{budgets}"


def write_runs_file(report_dir: str | Path, plan: SweepPlan, outcome: SweepOutcome, command: str, name: str,
                    extra: dict | None = None) -> Path:
    """``reports/<name>/runs.json``: the sweep's run ids and how to make them again (+ ``extra``,
    e.g. ``finetune``: the adaptation stage's run ids, see ``harness.adaptation``)."""
    payload = {
        "name": name,
        "mode": plan.mode,
        "archs": plan.archs,
        "reference": plan.reference,
        "variants": [{"size": v.size, "overrides": v.overrides, "label": v.label} for v in plan.variants],
        "budgets": plan.budgets,
        "seeds": plan.seeds,
        "data": plan.specs[0].data if plan.specs else None,
        "run_ids": outcome.run_ids,
        "failed": outcome.failed,
        "complete": outcome.interrupted is None and len(outcome.run_ids) == len(plan.specs),
        "command": command,
        **(extra or {}),
    }
    return write_json_atomic(Path(report_dir) / RUNS_NAME, payload)


def read_runs_file(report_dir: str | Path) -> dict[str, Any]:
    path = Path(report_dir) / RUNS_NAME
    try:
        payload = read_json(path)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-run the compare command that made it.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("run_ids"), list):
        raise ValueError(f"{path} has no run_ids list; re-run the compare command that made it.")
    return payload
