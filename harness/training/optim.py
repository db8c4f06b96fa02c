"""The optimizer and learning-rate schedule every training loop here uses (pre-training, fine-tuning, bench).

AdamW with nanoGPT's parameter groups — weight decay on matrices and embeddings, none on
biases and LayerNorm gains and biases (``decays``) — and a schedule of linear warm-up over
``warmup_fraction`` of the steps, then cosine decay to ``min_lr_ratio`` × the peak lr.
Only parameters that require gradients are optimized (LoRA trains its adapters alone).
"""

from __future__ import annotations

import math

import torch
from torch import nn


NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


def decays(module: nn.Module, leaf_name: str, parameter: nn.Parameter) -> bool:
    """Whether ``module.<leaf_name>`` takes weight decay: matrices and embeddings (≥ 2 dims) do;
    norm layers' parameters, biases (named ``bias``, or listed in the module's
    ``no_weight_decay`` names, e.g. MoE's stacked per-expert biases) and other vectors do not."""
    if isinstance(module, NORM_TYPES) or leaf_name == "bias" or leaf_name in getattr(module, "no_weight_decay", ()):
        return False
    return parameter.dim() >= 2


def named_trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Parameter]]:
    """(full name, owning module, leaf name, parameter) of every parameter that requires
    gradients, each once (a tied weight under its first name), in ``named_modules`` order."""
    seen: set[int] = set()
    out = []
    for prefix, module in model.named_modules():
        for leaf, parameter in module.named_parameters(recurse=False):
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                out.append((f"{prefix}.{leaf}" if prefix else leaf, module, leaf, parameter))
    return out


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: the parameters that ``decays`` by ``weight_decay``, the rest not at all.

    Only parameters that require gradients are included (LoRA trains its adapters alone).
    """
    named = named_trainable_parameters(model)
    return [
        {"params": [p for _, module, leaf, p in named if decays(module, leaf, p)], "weight_decay": weight_decay},
        {"params": [p for _, module, leaf, p in named if not decays(module, leaf, p)], "weight_decay": 0.0},
    ]


def parameter_group_layout(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[dict]:
    """``[{"weight_decay": float, "names": [parameter names]}]`` per optimizer group, in order
    (a parameter the model does not name appears as ``?``)."""
    names = {id(p): name for name, _, _, p in named_trainable_parameters(model)}
    return [{"weight_decay": float(group["weight_decay"]), "names": [names.get(id(p), "?") for p in group["params"]]}
            for group in optimizer.param_groups]


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
