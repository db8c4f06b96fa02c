"""Size presets shared by every architecture, so CPU comparisons are like for like, and their defaults."""

from __future__ import annotations

from dataclasses import dataclass

CPU_SIZES = {
    # for tests: seconds on a laptop CPU
    "nano": dict(n_layer=2, d_model=64, n_head=4, context=64, vocab_size=4096),
    # between the two: the CPU study's size (micro's context and band, a quarter of its width)
    "mini": dict(n_layer=4, d_model=128, n_head=4, context=256, vocab_size=4096),
    # CPU minutes
    "micro": dict(n_layer=6, d_model=256, n_head=8, context=256, vocab_size=4096),
}


@dataclass(frozen=True)
class SizeDefaults:
    """A size's default training recipe, kept beside the size (None: the harness's generic default).

    ``lr``: peak learning rate; ``micro_batch_size``: sequences per forward pass; ``batch_tokens``:
    tokens per optimizer step; ``budget_flops``: the default pre-training budget and
    ``finetune_budget_flops`` the default fine-tuning budget (FLOPs, 2 per multiply-add).
    """

    lr: float | None = None
    micro_batch_size: int | None = None
    batch_tokens: int | None = None
    budget_flops: float | None = None
    finetune_budget_flops: float | None = None


# Budgets sized so the default run finishes in a few minutes on a 2-core CPU; fine-tuning a tenth of that.
CPU_SIZE_DEFAULTS = {
    "nano": SizeDefaults(lr=3e-3, micro_batch_size=16, batch_tokens=16 * 64, budget_flops=2e11,
                         finetune_budget_flops=2e10),
    "mini": SizeDefaults(lr=2e-3, micro_batch_size=8, batch_tokens=8 * 256, budget_flops=1e13),
    "micro": SizeDefaults(lr=1e-3, micro_batch_size=8, batch_tokens=8 * 256, budget_flops=2e13,
                          finetune_budget_flops=2e12),
}
