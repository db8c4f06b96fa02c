"""Learning rates tuned per architecture: a study file's ``tune:`` block, the grid, the choice.

    tune:
      sweeps: [synthetic, text]     # sweeps whose architectures each get their own tuned rate
      lrs: [5.0e-4, 1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3]   # ≥ 5 peak rates, log-spaced (equal ratios)
      seeds: 1                      # tuning seeds first_seed .. first_seed+seeds-1
      first_seed: 100               # disjoint from every sweep's comparison seeds
      budget: 4.0e+12               # training FLOPs per tuning run (2 per multiply-add; default: the sweep's)
      select: final_val_loss        # the rate with the lowest mean over the tuning seeds
      max_extensions: 2             # a best rate at the grid's edge adds the next log step, at most this often

A tuning run is a run of the tuned sweep with ``recipe.lr`` = one grid rate, the tuning seeds and
budget, compute matched and evaluation off. A sweep entry with ``lr_from: <tuned sweep>`` uses the
rates tuned for that sweep; a tuned sweep uses its own. ``harness.sweeps.tuning_run`` runs the grid
and writes ``reports/<name>/data/tuning.json``; this module holds the typed block and the pure logic.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from harness.sweeps.compare import SweepOptions
from harness.runs.pipeline import EvalOptions

TUNE_KEYS = ("sweeps", "lrs", "seeds", "first_seed", "budget", "select", "max_extensions")
SELECT_RULES = ("final_val_loss",)
MIN_RATES = 5
LOG_TOLERANCE = 1e-6  # relative: consecutive ratios must agree to this


@dataclass(frozen=True)
class TuneSpec:
    """The ``tune:`` block, typed; ``written``: the block as written (kept in plan.json and tuning.json)."""

    sweeps: tuple[str, ...]
    lrs: tuple[float, ...]
    seeds: int = 1
    first_seed: int = 100
    budget: float | None = None
    select: str = "final_val_loss"
    max_extensions: int = 2
    written: dict[str, Any] = field(default_factory=dict)

    @property
    def seed_range(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)

    @property
    def ratio(self) -> float:
        """The grid's step: each rate over the one below it."""
        return self.lrs[1] / self.lrs[0]

    @classmethod
    def from_dict(cls, data: Any, where: str = "the study") -> "TuneSpec":
        if not isinstance(data, dict):
            raise ValueError(f"`tune` in {where} must be a mapping ({', '.join(TUNE_KEYS)}).")
        unknown = sorted(set(data) - set(TUNE_KEYS))
        if unknown:
            raise ValueError(f"`tune` in {where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(TUNE_KEYS)}.")
        sweeps = data.get("sweeps")
        if not sweeps or not isinstance(sweeps, list):
            raise ValueError(f"`tune.sweeps` in {where} must list the sweeps to tune, e.g. [synthetic, text].")
        lrs = check_grid(data.get("lrs"), where)
        seeds, first, extensions = (data.get(k, d) for k, d in (("seeds", 1), ("first_seed", 100), ("max_extensions", 2)))
        for key, value, low in (("seeds", seeds, 1), ("first_seed", first, 0), ("max_extensions", extensions, 0)):
            if isinstance(value, bool) or not (isinstance(value, int) and value >= low):
                raise ValueError(f"`tune.{key}` in {where} must be a whole number ≥ {low}, got {value!r}.")
        select = str(data.get("select", "final_val_loss"))
        if select not in SELECT_RULES:
            raise ValueError(f"`tune.select` in {where} must be one of {', '.join(SELECT_RULES)}, got {select!r}.")
        budget = data.get("budget")
        if budget is not None:
            budget = _positive(budget, f"`tune.budget` in {where}")
        return cls(tuple(str(s) for s in sweeps), lrs, seeds, first, budget, select, extensions, dict(data))


def _positive(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{what} must be a positive number, got {value!r}.")
    return number


def check_grid(values: Any, where: str) -> tuple[float, ...]:
    """The rates, ascending, if there are ≥ 5 and they are log-spaced (equal ratios), else one ``ValueError``."""
    if not isinstance(values, list) or len(values) < MIN_RATES:
        raise ValueError(f"`tune.lrs` in {where} must list at least {MIN_RATES} learning rates, got {values!r}.")
    rates = sorted(_positive(v, f"every rate of `tune.lrs` in {where}") for v in values)
    ratios = [b / a for a, b in zip(rates, rates[1:])]
    if ratios[0] <= 1 or any(abs(r / ratios[0] - 1) > LOG_TOLERANCE for r in ratios):
        raise ValueError(f"`tune.lrs` in {where} must be log-spaced (the same ratio between neighbours, distinct), "
                         f"got ratios {', '.join(f'{r:.4g}' for r in ratios)}.")
    return tuple(rates)


def check_tuning(tune: TuneSpec, sweeps: dict[str, SweepOptions], lr_from: dict[str, str | None],
                 where: str) -> None:
    """Cross-checks against the study's sweeps (``sweeps``: name → options; ``lr_from``: name → the
    sweep named by its ``lr_from``): known names, no recipe.lr beside a tuned rate, disjoint seeds."""
    for name in tune.sweeps:
        if name not in sweeps:
            raise ValueError(f"`tune.sweeps` in {where} names {name!r}; the study's sweeps are {', '.join(sweeps)}.")
        options = sweeps[name]
        if len(options.sizes) > 1 or options.widths and len(options.widths) > 1:
            raise ValueError(f"tuned sweep {name!r} in {where} has several model variants; tune one size and width.")
    for name, options in sweeps.items():
        source = lr_from.get(name)
        if source is not None and source not in tune.sweeps:
            raise ValueError(f"sweep {name!r} in {where} has lr_from {source!r}, which is not a tuned sweep "
                             f"(tune.sweeps: {', '.join(tune.sweeps)}).")
        if source is not None and set(options.archs) - set(sweeps[source].archs):
            raise ValueError(f"sweep {name!r} in {where} takes its rates from {source!r} but trains "
                             f"{', '.join(sorted(set(options.archs) - set(sweeps[source].archs)))}, which {source!r} "
                             "does not tune; add them there or drop lr_from.")
        if (source is not None or name in tune.sweeps) and options.recipe.lr is not None:
            raise ValueError(f"sweep {name!r} in {where} uses tuned rates and gives recipe.lr; drop recipe.lr.")
        overlap = sorted(set(tune.seed_range) & set(range(options.first_seed, options.first_seed + options.seeds)))
        if overlap:
            raise ValueError(f"tuning seeds {tune.first_seed}..{tune.seed_range[-1]} in {where} overlap sweep "
                             f"{name!r}'s seeds ({', '.join(map(str, overlap))}); set tune.first_seed above them.")


def check_lr_from(lr_from: dict[str, str | None], names: list[str], where: str) -> None:
    """``ValueError`` when an ``lr_from`` names no sweep of the study (or there is no ``tune:`` block)."""
    for name, source in lr_from.items():
        if source is not None and source not in names:
            raise ValueError(f"sweep {name!r} in {where} has lr_from {source!r}, which names no sweep of the study "
                             f"({', '.join(names)}).")


def tuning_options(options: SweepOptions, tune: TuneSpec, lr: float, archs: tuple[str, ...]) -> SweepOptions:
    """The tuned sweep's options for one grid rate: the tuning seeds and budget, compute matched, no evaluation."""
    budgets = (tune.budget,) if tune.budget is not None else options.budgets
    return dataclasses.replace(options, archs=archs, recipe=dataclasses.replace(options.recipe, lr=float(lr)),
                               seeds=tune.seeds, first_seed=tune.first_seed, budgets=budgets, match="compute",
                               reference=None, evaluation=EvalOptions(enabled=False), lr_by_arch={})


def mean_losses(losses: dict[float, list[float | None]]) -> dict[float, float]:
    """Rate → mean loss over the tuning seeds that finished (a non-finite loss counts as +inf: diverged)."""
    out = {}
    for lr, values in losses.items():
        finished = [v if math.isfinite(v) else math.inf for v in values if v is not None]
        if finished:
            out[lr] = sum(finished) / len(finished)
    return out


def select_rate(losses: dict[float, list[float | None]]) -> float | None:
    """The rate with the lowest mean loss (ties: the smaller rate); None when no run finished."""
    means = mean_losses(losses)
    return min(sorted(means), key=lambda lr: means[lr]) if means else None


def edge_step(rates: list[float], chosen: float, ratio: float) -> float | None:
    """The next log step beyond the grid's edge when ``chosen`` is at it (below the lowest rate or
    above the highest), else None."""
    if math.isclose(chosen, min(rates), rel_tol=LOG_TOLERANCE):
        return min(rates) / ratio
    if math.isclose(chosen, max(rates), rel_tol=LOG_TOLERANCE):
        return max(rates) * ratio
    return None


def rate_sources(names: list[str], tune: TuneSpec | None, lr_from: dict[str, str | None]) -> dict[str, str]:
    """Sweep name → the tuned sweep whose rates it uses (itself when tuned; absent when untuned)."""
    if tune is None:
        return {}
    out = {name: name for name in names if name in tune.sweeps}
    out.update({name: source for name, source in lr_from.items() if source is not None})
    return out
