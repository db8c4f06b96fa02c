"""The optimizer and learning-rate schedule every training loop here uses (pre-training, fine-tuning, bench).

AdamW with nanoGPT's parameter groups — weight decay on matrices and embeddings (≥ 2 dims),
none on biases and LayerNorm gains — and a schedule of linear warm-up over
``warmup_fraction`` of the steps, then cosine decay to ``min_lr_ratio`` × the peak lr.
Only parameters that require gradients are optimized (LoRA trains its adapters alone).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: parameters with ≥ 2 dims decay by ``weight_decay``, the rest not at all."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, recipe, fused: bool) -> torch.optim.AdamW:
    """AdamW from a ``harness.runs.spec.Recipe`` (lr, β1, β2, ε, weight decay); ``fused`` on CUDA."""
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(adamw_param_groups(model, recipe.weight_decay), lr=recipe.lr,
                             betas=(recipe.beta1, recipe.beta2), eps=recipe.eps, **kwargs)


def lr_at(step: int, total_steps: int, recipe) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine to ``min_lr_ratio``·lr."""
    warmup = max(1, round(recipe.warmup_fraction * total_steps))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    floor = recipe.min_lr_ratio * recipe.lr
    return floor + 0.5 * (recipe.lr - floor) * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, recipe) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr_at`` as a scheduler: stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, total_steps, recipe) / recipe.lr)
