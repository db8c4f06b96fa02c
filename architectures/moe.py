"""Mixture-of-experts feed-forward block: a float32 router picks top-k of E experts per token.

- Routing (Mixtral): softmax over the k selected logits gives the gate weights.
- Switch load-balancing loss: ``α·E·Σ_i f_i·P_i`` with f_i the fraction of the N·k
  assignments sent to expert i and P_i the mean router probability of i; it equals α
  under perfectly uniform routing and grows as routing collapses.
- ST-MoE router z-loss: ``β·mean(logsumexp(logits)²)``.
- Capacity (training only): each expert takes at most ceil(capacity_factor·N·k/E)
  assignments, earlier tokens first; the rest are dropped (the token keeps its residual)
  and ``moe_dropped_fraction`` reports their share. Evaluation is dropless, so a token's
  output never depends on what else is in the batch. ``capacity_factor=None`` is dropless.
- Dispatch sorts assignments by expert and runs each expert once on its contiguous
  rows: a Python loop over the E experts, never over tokens.

Auxiliary terms are returned already weighted (the values added to the loss).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from architectures.config import ModelConfig
from architectures.mlp import activation_fn


class MoE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d, f, E = config.d_model, config.expert_d_ff, config.n_experts
        self.n_experts, self.top_k = E, config.top_k
        self.capacity_factor = config.capacity_factor
        self.balance_weight, self.z_weight = config.moe_balance_weight, config.moe_z_weight
        self.router = nn.Linear(d, E, bias=False)
        self.w_in = nn.Parameter(torch.empty(E, d, f))
        self.b_in = nn.Parameter(torch.zeros(E, f)) if config.bias else None
        self.w_out = nn.Parameter(torch.empty(E, f, d))
        self.b_out = nn.Parameter(torch.zeros(E, d)) if config.bias else None
        self.act = activation_fn(config.activation)
        self.dropout = nn.Dropout(config.dropout)

    def reset_parameters(self, std: float, residual_std: float) -> None:
        nn.init.normal_(self.router.weight, std=std)
        nn.init.normal_(self.w_in, std=std)
        nn.init.normal_(self.w_out, std=residual_std)
        for bias in (self.b_in, self.b_out):
            if bias is not None:
                nn.init.zeros_(bias)

    def expert_parameter_count(self) -> int:
        """Parameters in all experts (router excluded)."""
        return sum(p.numel() for p in (self.w_in, self.b_in, self.w_out, self.b_out) if p is not None)

    def route(self, x_flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router in float32 (autocast off): returns logits [N, E], top-k indices and gates [N, k]."""
        with torch.autocast(device_type=x_flat.device.type, enabled=False):
            logits = F.linear(x_flat.float(), self.router.weight.float())
        top_logits, top_index = logits.topk(self.top_k, dim=-1)
        gates = torch.softmax(top_logits, dim=-1)
        return logits, top_index, gates

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, T, d = x.shape
        x_flat = x.reshape(-1, d)
        N, E, k = x_flat.shape[0], self.n_experts, self.top_k
        logits, top_index, gates = self.route(x_flat)

        # auxiliary losses (float32)
        assignments = top_index.reshape(-1)  # [N·k], token-major
        counts = torch.bincount(assignments, minlength=E)
        fraction = counts.float() / (N * k)
        mean_probability = torch.softmax(logits, dim=-1).mean(dim=0)
        balance = self.balance_weight * E * (fraction * mean_probability).sum()
        z_loss = self.z_weight * torch.logsumexp(logits, dim=-1).pow(2).mean()

        # dispatch: sort assignments by expert (stable: earlier tokens keep priority)
        order = torch.argsort(assignments, stable=True)
        token_of_row = order // k
        gate_of_row = gates.reshape(-1)[order]
        capacity = N * k
        if self.training and self.capacity_factor is not None:
            capacity = math.ceil(self.capacity_factor * N * k / E)
        counts_list = counts.tolist()
        out = torch.zeros_like(x_flat)
        start, kept = 0, 0
        for expert, count in enumerate(counts_list):
            n_rows = min(count, capacity)
            if n_rows:
                tokens = token_of_row[start : start + n_rows]
                hidden = x_flat[tokens] @ self.w_in[expert]
                if self.b_in is not None:
                    hidden = hidden + self.b_in[expert]
                hidden = self.act(hidden) @ self.w_out[expert]
                if self.b_out is not None:
                    hidden = hidden + self.b_out[expert]
                weighted = hidden * gate_of_row[start : start + n_rows, None].to(hidden.dtype)
                out.index_add_(0, tokens, weighted.to(out.dtype))
            start += count
            kept += n_rows
        dropped_fraction = torch.tensor(1.0 - kept / (N * k), device=x.device)
        aux = {"moe_balance": balance, "moe_z": z_loss, "moe_dropped_fraction": dropped_fraction}
        return self.dropout(out.view(B, T, d)), aux
