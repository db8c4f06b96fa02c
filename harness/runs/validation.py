"""Numbers checked at the edge: one sentence saying what was wrong and what would be right.

``check_recipe`` and ``check_run_numbers`` run when a ``RunSpec`` resolves (so the CLI,
``compare`` and Python callers get the same checks before any data is prepared);
``check_plan_steps`` refuses a plan of more than ``MAX_PLANNED_STEPS`` optimizer steps
unless forced; ``quality_warnings`` lists what a finished run's record should warn about.
Model-config numbers (``--set``) are checked by ``architectures.config.ModelConfig.validate``.
"""

from __future__ import annotations

import math
from typing import Any

MAX_PLANNED_STEPS = 10_000_000  # a plan above this is almost surely a typo in --budget

# Recipe field -> how a user sets it on the command line
RECIPE_FLAGS = {"lr": "--lr", "seq_len": "--seq-len", "micro_batch_size": "--micro-batch",
                "batch_tokens": "--batch-tokens"}


def _name(field: str) -> str:
    flag = RECIPE_FLAGS.get(field)
    return f"{flag} ({field})" if flag else f"recipe.{field}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_number(name: str, value: Any, what: str = "a positive finite number") -> None:
    if not (_is_number(value) and value > 0):
        raise ValueError(f"{name} must be {what}, got {value!r}.")


def positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}.")


def in_range(name: str, value: Any, low: float, high: float, *, high_open: bool = False) -> None:
    ok = _is_number(value) and low <= value and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value!r}.")


def check_recipe_field(field: str, value: Any) -> None:
    """One whole-number recipe field given by the user (``seq_len`` …), named by its flag."""
    positive_int(_name(field), value)


def check_recipe(recipe) -> None:
    """A resolved ``harness.runs.spec.Recipe``: every number in its valid range."""
    positive_number(_name("lr"), recipe.lr, "a positive finite learning rate, e.g. 1e-3")
    for field in ("seq_len", "micro_batch_size", "batch_tokens"):
        positive_int(_name(field), getattr(recipe, field))
    if recipe.batch_tokens < recipe.seq_len:
        raise ValueError(f"--batch-tokens ({recipe.batch_tokens}) must hold at least one sequence of "
                         f"--seq-len {recipe.seq_len} tokens.")
    in_range(_name("min_lr_ratio"), recipe.min_lr_ratio, 0, 1)
    in_range(_name("beta1"), recipe.beta1, 0, 1, high_open=True)
    in_range(_name("beta2"), recipe.beta2, 0, 1, high_open=True)
    positive_number(_name("eps"), recipe.eps)
    in_range(_name("weight_decay"), recipe.weight_decay, 0, math.inf, high_open=True)
    positive_number(_name("grad_clip"), recipe.grad_clip)
    in_range(_name("warmup_fraction"), recipe.warmup_fraction, 0, 1)


def check_run_numbers(spec) -> None:
    """The numbers of a ``harness.runs.spec.RunSpec`` outside its recipe and model config."""
    positive_number("--budget", spec.budget_flops, "a positive finite number of training FLOPs, e.g. 3e13")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or spec.seed < 0:
        raise ValueError(f"--seed must be a whole number ≥ 0, got {spec.seed!r}.")
    if spec.vocab_size is not None and (isinstance(spec.vocab_size, bool) or not isinstance(spec.vocab_size, int)
                                        or spec.vocab_size < 258):
        raise ValueError(f"--vocab-size must be a whole number ≥ 258 (256 bytes + end-of-text + 1 merge), "
                         f"got {spec.vocab_size!r}.")
    for name, value in (("--checkpoint-interval", spec.checkpoint_interval), ("--eval-interval", spec.eval_interval),
                        ("--tokens", getattr(spec, "train_tokens", None))):
        if value is not None:
            positive_int(name, value)
    positive_number("checkpoint_minutes", spec.checkpoint_minutes)


def check_train_probes(distances: Any) -> tuple[int, ...]:
    """``RunSpec.train_probes`` as a tuple of recall distances in tokens (ints, 1 or at least 3), duplicates dropped."""
    out: list[int] = []
    for value in distances or ():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value == 2:
            raise ValueError(f"train_probes are recall distances in tokens (1, or at least 3, e.g. [16, 64]), "
                             f"got {value!r}.")
        if value not in out:
            out.append(value)
    return tuple(out)


def check_plan_steps(steps: int, budget_flops: float, force: bool) -> None:
    """Refuse a plan of more than ``MAX_PLANNED_STEPS`` steps unless ``force``."""
    if steps > MAX_PLANNED_STEPS and not force:
        raise ValueError(f"a budget of {budget_flops:.3g} FLOPs plans {steps:.3g} optimizer steps, more than "
                         f"{MAX_PLANNED_STEPS:.0e}; check --budget, or add --force to train that long.")


def quality_warnings(record: dict) -> list[str]:
    """Warnings about a finished run's quality (the run still counts as ``ok``)."""
    warnings = []
    loss, unigram = record.get("final_val_loss"), record.get("unigram_val_loss")
    if _is_number(loss) and _is_number(unigram) and loss > unigram:
        warnings.append(f"final validation loss {loss:.3f} nats/token is above the unigram baseline "
                        f"{unigram:.3f}: the model learned less than token frequencies (diverged? "
                        f"try a lower --lr)")
    return warnings
