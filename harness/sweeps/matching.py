"""What a sweep holds equal across architectures: compute (the default) or tokens.

``compute``: every run trains the whole steps that fit in its FLOP budget (counted in the
run's ``attention_flops`` convention), so cheaper architectures see more tokens.
``tokens``: every run trains the tokens the reference architecture trains at that budget,
so each architecture spends what those tokens cost it — the control that separates "more
tokens" from "better per token".
"""

from __future__ import annotations

import dataclasses

from harness.runs.spec import RunSpec

MATCHES = ("compute", "tokens")


def check_match(match: str) -> str:
    if match not in MATCHES:
        raise ValueError(f"unknown --match {match!r}; use one of: {', '.join(MATCHES)}.")
    return match


def compute_matched_tokens(spec: RunSpec) -> int:
    """Tokens ``spec`` trains at its FLOP budget: whole steps of ``batch_tokens`` (rounded to sequences)."""
    from harness.data import prepare_data
    from harness.flops import plan_budget, train_flops_per_token

    vocab_size = prepare_data(spec.data, vocab_size=spec.vocab_size, seed=spec.seed).tokenizer.vocab_size
    recipe = spec.recipe
    tokens_per_step = recipe.batch_tokens // recipe.seq_len * recipe.seq_len
    flops_per_token = train_flops_per_token(spec.model_config(vocab_size), recipe.seq_len, spec.attention_flops)
    return plan_budget(spec.budget_flops, flops_per_token, tokens_per_step).tokens


def match_tokens(specs: list[RunSpec], reference: str) -> list[RunSpec]:
    """``specs`` with ``train_tokens`` set to the reference architecture's compute-matched tokens at the
    same size, overrides and budget (the token count does not depend on the seed)."""
    counts: dict[tuple, int] = {}

    def key(spec: RunSpec) -> tuple:
        return spec.size, repr(sorted(spec.overrides.items())), spec.budget_flops

    for spec in specs:
        if spec.arch == reference and key(spec) not in counts:
            counts[key(spec)] = compute_matched_tokens(spec)
    return [dataclasses.replace(spec, train_tokens=counts[key(spec)]) for spec in specs]
