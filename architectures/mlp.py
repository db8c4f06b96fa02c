"""The dense feed-forward block: Linear → activation → Linear (d_model → d_ff → d_model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from architectures.config import ModelConfig


def activation_fn(name: str):
    """Activation by name: ``gelu`` (exact), ``gelu_tanh`` (GPT-1/2's tanh approximation), ``relu``."""
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"activation {name!r} is unknown; known: gelu, gelu_tanh, relu.")


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.proj.is_residual_projection = True
        self.act = activation_fn(config.activation)
        self.dropout = nn.Dropout(config.dropout)

    def kernels(self, training: bool) -> dict[str, str]:
        """Nothing to describe: two ``nn.Linear`` layers (see ``MoE.kernels``)."""
        return {}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(output, auxiliary terms): a dense FFN has none, so ``{}`` (the FFN contract, ``architectures.block``)."""
        return self.dropout(self.proj(self.act(self.fc(x)))), {}
