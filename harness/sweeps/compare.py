"""Matched-compute sweeps: every architecture × model variant × budget × seed, then a report.

A sweep is planned completely before anything trains (so a bad architecture name or width
fails at once) into a list of ``RunSpec``s in the order seed → budget → variant →
architecture, so an interrupted sweep already holds complete comparisons for the first
seeds. ``harness.sweeps.runner`` hands each spec to an executor (``harness.sweeps.executors``);
a run whose record already says ``ok`` (same resolved spec and seed → same run id) is
reused whatever executor ran it, an interrupted one continues from its checkpoint, so
re-running the same command resumes the sweep and trains nothing twice.

Model variants: the ``--size`` preset, or several (``--sizes nano,micro``), optionally
crossed with ``--widths 64,96,128`` (each overrides ``d_model``; n_layer and n_head stay at
the preset's values, so a width must be divisible by n_head, and d_ff follows as 4·d_model).
More than one variant at a budget makes it an isoFLOP sweep (Chinchilla approach 2).

The sweep's run ids and the command that made it go to ``reports/<name>/runs.json``
(``harness.sweeps.runs_file``); ``harness.reporting.report.build_report`` turns them into the report.
Options arrive typed (``SweepOptions``); ``harness.cli.compare`` converts the command line.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from harness.runs.pipeline import EvalOptions
from harness.sweeps.runs_file import DEFAULT_ARCHS, REFERENCE_ARCH
from harness.runs.spec import Recipe, RunSpec
from harness.sweeps.matching import check_match, match_tokens


def _items(text: str | None, what: str) -> list[str]:
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not items:
        raise ValueError(f"{what} is empty; give a comma-separated list.")
    return items


def parse_archs(text: str) -> list[str]:
    """``"gpt1,gpt2"`` → names, checked against the registry (duplicates dropped, order kept)."""
    return check_archs(list(dict.fromkeys(_items(text, "--archs"))))


def check_archs(names: list[str]) -> list[str]:
    """``names`` if every one is a registered architecture, else one ``ValueError`` naming the unknown."""
    from architectures import available

    known = available()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown architecture{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in --archs; "
            f"known: {', '.join(known)}."
        )
    if not names:
        raise ValueError("--archs is empty; give a comma-separated list.")
    return names


def parse_sizes(text: str) -> list[str]:
    """``"nano,micro"`` → size presets (duplicates dropped, order kept; checked when the runs are planned)."""
    return list(dict.fromkeys(_items(text, "--sizes")))


def parse_budgets(text: str | float | list | None) -> list[float] | None:
    """``"1e12,3e12"`` → [1e12, 3e12] FLOPs (None: the size's default budget); ``plan_sweep`` checks the values."""
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


@dataclass(frozen=True)
class SweepOptions:
    """What a sweep trains and how: the typed form of ``harness compare``'s options.

    ``archs``: registered architecture names; ``seeds``: seeds ``first_seed`` .. ``first_seed``+N-1
    are trained for every model (``first_seed`` 0 by default); ``sizes``: size presets; ``widths``: d_model values crossed with every size (None:
    the presets' own); ``budgets``: training FLOPs per run, 2 per multiply-add (None: the
    size's default budget); ``reference``: the architecture the others are tested against
    (None: gpt2 when swept, else the first); ``attention_flops``: how budgets count attention
    (``harness.flops.ATTENTION_FLOPS``); ``match``: ``compute`` or ``tokens``
    (``harness.sweeps.matching``: every run trains the reference's compute-matched tokens). ``data`` … ``compile`` go into every run's
    ``RunSpec`` (``overrides``: model config fields; ``recipe``: copied for each run).
    ``parallel``, ``activation_checkpointing`` and ``train_probes`` (recall distances scored during
    training) likewise. ``lr_by_arch``: architecture → peak learning rate, replacing ``recipe.lr``
    for that architecture's runs (e.g. rates tuned per architecture, ``harness.sweeps.tuning``); the
    others keep ``recipe.lr``.
    ``evaluation`` follows every run; ``force`` retrains finished runs; ``wait`` waits for a
    run another process holds instead of noting it as failed.
    """

    archs: tuple[str, ...] = DEFAULT_ARCHS
    seeds: int = 1
    first_seed: int = 0
    sizes: tuple[str, ...] = ("micro",)
    widths: tuple[int, ...] | None = None
    budgets: tuple[float, ...] | None = None
    data: str = "synthetic"
    vocab_size: int | None = None
    recipe: Recipe = field(default_factory=Recipe)
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    dtype: str | None = None
    compile: bool | None = None
    parallel: str | None = None
    activation_checkpointing: bool = False
    reference: str | None = None
    attention_flops: str = "causal"
    match: str = "compute"
    train_probes: tuple[int, ...] = ()  # recall distances scored during training (RunSpec.train_probes)
    evaluation: EvalOptions = field(default_factory=EvalOptions)
    force: bool = False
    wait: bool = False
    lr_by_arch: dict[str, float] = field(default_factory=dict)


def plan_sweep(options: SweepOptions) -> SweepPlan:
    """Every RunSpec of the sweep, resolved, in training order (raises ``ValueError`` on any bad input first)."""
    archs = check_archs(list(dict.fromkeys(options.archs)))
    if not (isinstance(options.seeds, int) and options.seeds >= 1):
        raise ValueError(f"--seeds must be at least 1 (seeds 0..N-1 are trained for each model), got {options.seeds}.")
    first = options.first_seed
    if isinstance(first, bool) or not (isinstance(first, int) and first >= 0):
        raise ValueError(f"--first-seed must be a whole number ≥ 0, got {first!r}.")
    stray = sorted(set(options.lr_by_arch) - set(archs))
    if stray:
        raise ValueError(f"lr_by_arch names {', '.join(stray)}, not among the sweep's archs ({', '.join(archs)}).")
    sizes = list(dict.fromkeys(options.sizes))
    if not sizes:
        raise ValueError("--sizes is empty; give a comma-separated list.")
    widths = list(dict.fromkeys(options.widths)) if options.widths else None
    if widths and any(not isinstance(width, int) or width < 1 for width in widths):
        raise ValueError(f"every width (d_model) must be a positive integer, got {widths}.")
    if widths and "d_model" in options.overrides:
        raise ValueError("--widths sets d_model; do not also give --set d_model=..., choose one.")
    variants = [Variant(size, {"d_model": width} if widths else {}) for size in sizes for width in (widths or [None])]
    budgets = list(dict.fromkeys(options.budgets)) if options.budgets is not None else None
    for value in budgets or []:  # the one place a sweep's budgets are checked
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"every budget must be a positive number of FLOPs, got {value}.")
    reference = options.reference or (REFERENCE_ARCH if REFERENCE_ARCH in archs else archs[0])
    if reference not in archs:
        raise ValueError(f"--reference {reference!r} is not among --archs ({', '.join(archs)}).")
    specs = [
        _run_spec(options, arch, variant, budget, seed)
        for seed in range(first, first + options.seeds)
        for budget in budgets or [None]
        for variant in variants
        for arch in archs
    ]
    if check_match(options.match) == "tokens":
        specs = match_tokens(specs, reference)
    resolved = sorted({spec.budget_flops for spec in specs})
    if budgets is None and len(resolved) > 1:
        raise ValueError(
            f"the sizes {', '.join(sizes)} have different default budgets; give one --budget so they train at the same compute."
        )
    return SweepPlan(archs, variants, budgets or resolved, options.seeds, specs, reference)


def _run_spec(options: SweepOptions, arch: str, variant: Variant, budget: float | None, seed: int) -> RunSpec:
    """One run of the sweep; a bad combination names the architecture and model variant."""
    recipe = dataclasses.replace(options.recipe)
    if arch in options.lr_by_arch:
        recipe.lr = float(options.lr_by_arch[arch])
    try:
        return RunSpec(
            arch=arch, size=variant.size, data=options.data, vocab_size=options.vocab_size, seed=seed,
            budget_flops=budget, attention_flops=options.attention_flops, train_probes=tuple(options.train_probes),
            recipe=recipe,
            overrides={**options.overrides, **variant.overrides},
            device=options.device, dtype=options.dtype, compile=options.compile, parallel=options.parallel,
            activation_checkpointing=options.activation_checkpointing,
        )
    except ValueError as error:
        raise ValueError(f"{arch} {variant.label}: {error}") from None


def default_name(plan: SweepPlan) -> str:
    sizes = "+".join(dict.fromkeys(v.size for v in plan.variants))
    if any(v.overrides for v in plan.variants):
        sizes += "-w" + "+".join(str(v.overrides["d_model"]) for v in plan.variants if "d_model" in v.overrides)
    budgets = "+".join(format_budget(b) for b in plan.budgets)
    return f"{'isoflop' if plan.mode == 'isoflop' else 'compare'}-{sizes}-{budgets}"


def runs_payload(plan: SweepPlan, outcome, command: str, name: str, extra: dict | None = None) -> dict[str, Any]:
    """What ``reports/<name>/runs.json`` holds: the sweep's run ids, each run's state
    (``harness.sweeps.state``), and how to make them again (+ ``extra``, e.g. ``finetune``: the
    adaptation stage's run ids, see ``harness.sweeps.adaptation``). ``outcome``: a ``harness.sweeps.runner.SweepOutcome``."""
    from harness.sweeps.state import states_payload

    return {
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
        "complete": outcome.complete,
        "runs": states_payload(outcome.states),
        "command": command,
        **(extra or {}),
    }
