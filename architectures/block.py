"""One transformer block in either arrangement.

- pre-LN (GPT-2/3): ``x = x + Attn(LN1(x)); x = x + FFN(LN2(x))``
- post-LN (GPT-1, the original Transformer): ``h = LN1(x + Attn(x)); x = LN2(h + FFN(h))``

FFN contract: ``ffn(x) -> (output, aux)`` with ``aux`` a dict of already-weighted auxiliary
terms (``{}`` for the dense MLP; MoE's balance / z-loss / dropped fraction), also when the
FFN is wrapped (e.g. by a LoRA adapter); ``ffn.kernels(training)`` describes its dispatch.
"""

from __future__ import annotations

import torch
from torch import nn

from architectures.attention import CausalSelfAttention, PackedMask
from architectures.config import ModelConfig
from architectures.kv_cache import LayerCache
from architectures.mlp import MLP
from architectures.moe import MoE


def make_ffn(config: ModelConfig) -> nn.Module:
    return MoE(config) if config.ffn == "moe" else MLP(config)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        window = config.window if config.layer_attention(layer) == "banded" else None
        self.pre_norm = config.norm_placement == "pre"
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, window=window)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
        self.ffn = make_ffn(config)

    def _ffn(self, x: torch.Tensor, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        out, terms = self.ffn(x)
        aux.update(terms)
        return out

    def forward(
        self,
        x: torch.Tensor,
        cache: LayerCache | None = None,
        packed: PackedMask | None = None,
        keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """``keep`` (flat row·T + t indices): compute the block's output at those positions only, [1, N, d]."""
        aux: dict[str, torch.Tensor] = {}
        residual = x if keep is None else x.reshape(-1, x.shape[-1])[keep][None]
        if self.pre_norm:
            x = residual + self.attn(self.ln_1(x), cache, packed, keep)
            x = x + self._ffn(self.ln_2(x), aux)
        else:
            x = self.ln_1(residual + self.attn(x, cache, packed, keep))
            x = self.ln_2(x + self._ffn(x, aux))
        return x, aux
