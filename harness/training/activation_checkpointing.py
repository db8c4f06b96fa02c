"""Per-block activation checkpointing (``--activation-checkpointing``), for every parallel strategy."""

from __future__ import annotations

import torch
from torch import nn


def checkpoint_activations(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them
    (``torch.utils.checkpoint``, non-reentrant, RNG state preserved so dropout repeats).

    The block's forward is replaced in place, so parameter names and state dicts do not change.
    """
    from torch.utils.checkpoint import checkpoint

    for block in model.blocks:
        def recomputed(*args, _forward=block.forward, **kwargs):
            if not torch.is_grad_enabled():
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = recomputed
