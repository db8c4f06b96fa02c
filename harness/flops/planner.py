"""Budget planning: a training FLOP budget → whole optimizer steps.

The trainer runs exactly ``steps`` steps of ``tokens_per_step`` tokens, so the FLOPs it
uses are ≤ the budget and within one step of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BudgetPlan:
    budget_flops: float
    train_flops_per_token: float
    tokens_per_step: int
    steps: int

    @property
    def flops_per_step(self) -> float:
        return self.train_flops_per_token * self.tokens_per_step

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step

    @property
    def flops_used(self) -> float:
        return self.steps * self.flops_per_step

    def to_dict(self) -> dict:
        return {**asdict(self), "flops_per_step": self.flops_per_step, "tokens": self.tokens, "flops_used": self.flops_used}


def plan_budget(budget_flops: float, train_flops_per_token: float, tokens_per_step: int) -> BudgetPlan:
    """The largest whole number of steps whose training FLOPs fit in ``budget_flops``."""
    if not math.isfinite(budget_flops) or budget_flops <= 0:
        raise ValueError(f"the budget must be a positive number of FLOPs, got {budget_flops}.")
    if tokens_per_step < 1:
        raise ValueError(f"tokens per step must be at least 1, got {tokens_per_step}.")
    flops_per_step = train_flops_per_token * tokens_per_step
    steps = int(budget_flops // flops_per_step)
    if steps < 1:
        raise ValueError(
            f"a budget of {budget_flops:.3g} FLOPs is smaller than one training step "
            f"({flops_per_step:.3g} FLOPs = {train_flops_per_token:.3g} FLOPs/token x {tokens_per_step} tokens); "
            f"use --budget {flops_per_step:.3g} or more."
        )
    return BudgetPlan(budget_flops, train_flops_per_token, tokens_per_step, steps)


def plan_tokens(train_tokens: int, train_flops_per_token: float, tokens_per_step: int) -> BudgetPlan:
    """A token-matched plan: the largest whole number of steps whose tokens fit in ``train_tokens``.

    Its ``budget_flops`` is the FLOPs those steps use (a token-matched arm has no FLOP budget).
    """
    if tokens_per_step < 1:
        raise ValueError(f"tokens per step must be at least 1, got {tokens_per_step}.")
    steps = int(train_tokens // tokens_per_step)
    if steps < 1:
        raise ValueError(f"{train_tokens} training tokens are fewer than one step ({tokens_per_step} tokens); "
                         f"use --tokens {tokens_per_step} or more.")
    return BudgetPlan(steps * train_flops_per_token * tokens_per_step, train_flops_per_token, tokens_per_step, steps)
