"""``pretrain`` (a model built from its config, every parameter trained) and ``full`` (a loaded
parent, every parameter fine-tuned): both 3 × forward FLOPs per token."""

from __future__ import annotations

from harness.flops import DEFAULT_ATTENTION_FLOPS, train_flops_per_token
from harness.runs.records import FLOP_CONVENTION
from harness.training.methods.base import Method


class FullMethod(Method):
    """Full fine-tuning: every parameter of the parent trains."""

    name = "full"


class PretrainMethod(Method):
    """Pre-training from scratch; FLOPs exactly ``harness.flops.train_flops_per_token`` (3 × forward)."""

    name = "pretrain"
    flop_convention = FLOP_CONVENTION

    def flops_per_token(self, config, seq_len: int, tokens_per_forward: int,
                        attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> dict[str, float]:
        return {"total": train_flops_per_token(config, seq_len, attention_flops)}

    def record_fields(self) -> dict:
        return {}
