"""Running a study's learning-rate tuning grid and writing ``reports/<name>/data/tuning.json``.

``run_tuning`` trains (or reuses, by run id) every tuning run of the ``tune:`` block
(``harness.sweeps.tuning``) through the study's executor (``harness.sweeps.runner.run_sweep``),
round by round: round 0 is the grid; after each round the rate with the lowest mean final
validation loss (nats/token) over the tuning seeds is chosen per (tuned sweep, architecture), and an
architecture whose best rate is at the grid's edge gets the next log step beyond it in the next
round, at most ``max_extensions`` times. Rerunning replays the same rounds from the records, so
finished tuning runs are reused, never retrained. ``comparison_plans`` then plans the comparison
sweeps with ``lr_by_arch`` = the chosen rates.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.io import read_json, write_json_atomic
from harness.sweeps.compare import SweepPlan, plan_sweep
from harness.sweeps.tuning import TuneSpec, edge_step, select_rate, tuning_options

TUNING_NAME = "tuning.json"
RULE = ("the rate with the lowest mean final validation loss (nats/token) over the tuning seeds; a best rate at "
        "the grid's edge adds the next log step beyond it")


@dataclass(frozen=True)
class TuningRun:
    sweep: str
    arch: str
    lr: float
    spec: Any  # RunSpec

    @property
    def run_id(self) -> str:
        return self.spec.run_id()


@dataclass
class TuningResult:
    """What the tuning did: its runs (with status and loss), the chosen rates, the extensions made."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, dict[str, float | None]] = field(default_factory=dict)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    at_edge: dict[str, dict[str, bool]] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    budgets: dict[str, float] = field(default_factory=dict)  # training FLOPs per tuning run, per tuned sweep


def plan_round(spec, rates: dict[tuple[str, str], list[float]]) -> list[TuningRun]:
    """The tuning runs for ``rates`` ((sweep, arch) → rates to train), grouped by sweep and rate."""
    tune, sweeps, out = spec.tune, {s.name: s for s in spec.sweeps}, []
    for name in tune.sweeps:
        by_rate: dict[float, list[str]] = {}
        for (sweep, arch), lrs in rates.items():
            for lr in lrs if sweep == name else []:
                by_rate.setdefault(lr, []).append(arch)
        for lr in sorted(by_rate):
            plan = plan_sweep(tuning_options(sweeps[name].options, tune, lr, tuple(by_rate[lr])))
            out += [TuningRun(name, run_spec.arch, lr, run_spec) for run_spec in plan.specs]
    return out


def first_round(spec) -> list[TuningRun]:
    """Round 0: the whole grid for every architecture of every tuned sweep."""
    sweeps = {s.name: s for s in spec.sweeps}
    return plan_round(spec, {(name, arch): list(spec.tune.lrs) for name in spec.tune.sweeps
                             for arch in sweeps[name].options.archs})


def as_plan(runs: list[TuningRun]) -> SweepPlan:
    """The tuning runs as one ``SweepPlan`` for ``run_sweep`` (order kept)."""
    specs = [run.spec for run in runs]
    return SweepPlan(list(dict.fromkeys(s.arch for s in specs)), [], sorted({s.budget_flops for s in specs}),
                     len({s.seed for s in specs}), specs)


def _result_row(run: TuningRun, roots: list[Path], failed: dict[str, str]) -> dict[str, Any]:
    """The run's row of ``tuning.json`` from its record in the first of ``roots`` that holds it
    (``results/``, then the report's committed ``data/runs``)."""
    from harness.runs.records import load_record

    record: dict[str, Any] = {}
    for root in roots:
        try:
            record = load_record(root / run.run_id)
            break
        except (OSError, ValueError):
            continue
    status = "failed" if run.run_id in failed else record.get("status") or "failed"
    loss = record.get("final_val_loss") if status == "ok" else None
    return {"sweep": run.sweep, "arch": run.arch, "lr": run.lr, "seed": run.spec.seed, "run_id": run.run_id,
            "status": status, "final_val_loss": None if loss is None else float(loss)}


def run_tuning(spec, run_round: Callable[[SweepPlan, Any], Any], root: Path,
               committed: Path | None = None) -> TuningResult | None:
    """Every round of the tuning (see the module docstring); ``run_round(plan, options)``: runs a plan,
    returns its ``SweepOutcome``; records are read from ``root`` (results) or ``committed`` (a report's
    ``data/runs``). None when a round was interrupted."""
    tune: TuneSpec = spec.tune
    sweeps = {s.name: s for s in spec.sweeps}
    rates = {(name, arch): list(tune.lrs) for name in tune.sweeps for arch in sweeps[name].options.archs}
    result, todo = TuningResult(), first_round(spec)
    for round_index in range(tune.max_extensions + 1):
        options = tuning_options(sweeps[tune.sweeps[0]].options, tune, tune.lrs[0], ())
        outcome = run_round(as_plan(todo), options)
        if outcome.interrupted:
            return None
        roots = [root] + ([committed] if committed is not None else [])
        result.runs += [_result_row(run, roots, outcome.failed) for run in todo]
        result.run_ids += [run.run_id for run in todo]
        result.budgets.update({run.sweep: run.spec.budget_flops for run in todo})
        extend = _choose(result, rates, tune.ratio, round_index < tune.max_extensions)
        if not extend:
            break
        for (name, arch), lr in extend.items():
            rates[(name, arch)].append(lr)
            result.extensions.append({"sweep": name, "arch": arch, "after_round": round_index, "lr": lr,
                                      "edge": "low" if lr < min(rates[(name, arch)][:-1]) else "high"})
        todo = plan_round(spec, {key: [lr] for key, lr in extend.items()})
    return result


def _choose(result: TuningResult, rates: dict[tuple[str, str], list[float]], ratio: float,
            may_extend: bool) -> dict[tuple[str, str], float]:
    """Set ``chosen`` and ``at_edge`` from the runs so far; the new rate per (sweep, arch) to add."""
    extend = {}
    for (name, arch), lrs in rates.items():
        losses: dict[float, list[float | None]] = {lr: [] for lr in lrs}
        for row in result.runs:
            if row["sweep"] == name and row["arch"] == arch:
                losses[row["lr"]].append(row["final_val_loss"])
        chosen = select_rate(losses)
        step = edge_step(lrs, chosen, ratio) if chosen is not None else None
        result.chosen.setdefault(name, {})[arch] = chosen
        result.at_edge.setdefault(name, {})[arch] = step is not None
        if step is not None and may_extend:
            extend[(name, arch)] = step
    return extend


def tuning_payload(spec, result: TuningResult) -> dict[str, Any]:
    """What ``data/tuning.json`` holds (see ``write_tuning``)."""
    tune = spec.tune
    return {"tune": tune.written, "rule": RULE, "grid": list(tune.lrs), "ratio": tune.ratio,
            "seeds": list(tune.seed_range),
            "budget_flops": result.budgets,
            "runs": result.runs, "chosen": result.chosen, "extensions": result.extensions,
            "at_edge_after_extensions": result.at_edge,
            "units": "lr: peak learning rate; final_val_loss: nats/token; budget_flops: training FLOPs per run, "
                     "2 per multiply-add"}


def write_tuning(data_dir: Path, spec, result: TuningResult) -> Path:
    """``data/tuning.json``, atomically: the block as written, every run, the chosen rates, the extensions
    and whether a chosen rate is still at the grid's edge after ``max_extensions``."""
    return write_json_atomic(Path(data_dir) / TUNING_NAME, tuning_payload(spec, result))


def read_tuning(data_dir: Path, tune: TuneSpec | None) -> dict[str, Any] | None:
    """``data/tuning.json`` when it was made by this ``tune:`` block (as written), else None."""
    path = Path(data_dir) / TUNING_NAME
    if tune is None or not path.exists():
        return None
    data = read_json(path)
    return data if data.get("tune") == tune.written else None


def comparison_plans(spec, chosen: dict[str, dict[str, float | None]]) -> dict[str, SweepPlan]:
    """Every comparison sweep planned, a tuned or ``lr_from`` sweep with ``lr_by_arch`` = the chosen rates."""
    sources, plans = spec.rate_sources(), {}
    for sweep in spec.sweeps:
        options = sweep.options
        if sweep.name in sources:
            rates = chosen.get(sources[sweep.name]) or {}
            missing = [arch for arch in options.archs if not (isinstance(rates.get(arch), float)
                                                              and math.isfinite(rates[arch]))]
            if missing:
                raise ValueError(f"no tuned learning rate for {', '.join(missing)} in sweep {sources[sweep.name]!r}: "
                                 "every tuning run failed; see data/tuning.json.")
            options = dataclasses.replace(options, lr_by_arch={arch: rates[arch] for arch in options.archs})
        plans[sweep.name] = plan_sweep(options)
    return plans


def study_plans(spec, data_dir: Path) -> tuple[list[TuningRun], dict[str, SweepPlan] | None]:
    """(the tuning runs known so far, the comparison plans by sweep). Before ``data_dir/tuning.json`` exists
    for this ``tune:`` block: the grid's first round, and None for the plans (they depend on the tuning);
    after: every tuning run it records (the extensions too) and the plans at the chosen rates."""
    if spec.tune is None:
        return [], {sweep.name: plan_sweep(sweep.options) for sweep in spec.sweeps}
    done = read_tuning(data_dir, spec.tune)
    if not done:
        return first_round(spec), None
    extensions = [plan_round(spec, {(e["sweep"], e["arch"]): [e["lr"]]}) for e in done.get("extensions") or []]
    return first_round(spec) + [run for runs in extensions for run in runs], comparison_plans(spec, done["chosen"])
