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
- Dispatch never loops over tokens. Training with a capacity uses a static-shape path:
  each assignment's place in its expert's queue comes from a cumulative sum, tokens are
  copied into an [E, capacity, d] buffer, and two batched matmuls run every expert (no
  host sync, one graph under ``torch.compile``). Evaluation, and dropless training, sort
  assignments by expert and run each expert once on its rows (a loop over the E experts),
  so no padding is computed. Both give the same numbers.
- FLOPs are counted for the k active experts (the literature's convention); the capacity
  padding the static path also multiplies (at most capacity_factor - 1 of the expert
  work) is not counted as model FLOPs.

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
    # the stacked per-expert biases [E, f] and [E, d] are biases, though 2-D: no weight decay
    # (harness.training.optim.decays reads this)
    no_weight_decay = ("b_in", "b_out")

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

    def _aux_losses(self, logits: torch.Tensor, counts: torch.Tensor, n_assignments: int) -> dict[str, torch.Tensor]:
        """Switch balance loss and router z-loss (float32), already weighted."""
        fraction = counts.float() / n_assignments
        mean_probability = torch.softmax(logits, dim=-1).mean(dim=0)
        return {
            "moe_balance": self.balance_weight * self.n_experts * (fraction * mean_probability).sum(),
            "moe_z": self.z_weight * torch.logsumexp(logits, dim=-1).pow(2).mean(),
        }

    def _expert_ffn(self, hidden: torch.Tensor, w_in, b_in, w_out, b_out) -> torch.Tensor:
        hidden = hidden @ w_in.to(hidden.dtype)
        if b_in is not None:
            hidden = hidden + b_in.to(hidden.dtype)
        hidden = self.act(hidden) @ w_out.to(hidden.dtype)
        if b_out is not None:
            hidden = hidden + b_out.to(hidden.dtype)
        return hidden

    def dispatch(self, training: bool) -> str:
        """``"capacity"`` (training with a capacity: static shapes) or ``"sorted"`` (dropless)."""
        return "capacity" if training and self.capacity_factor is not None else "sorted"

    def kernels(self, training: bool) -> dict[str, str]:
        """``{"moe_dispatch": ...}``: how tokens reach the experts in training or evaluation mode."""
        if self.dispatch(training) == "capacity":
            return {"moe_dispatch": (
                f"capacity {self.capacity_factor:g} x N*k/E per expert (overflow dropped): static shapes, tokens "
                f"copied into an [E, capacity, d] buffer, one batched matmul pair over all {self.n_experts} experts"
            )}
        return {"moe_dispatch": "dropless: sorted by expert, one matmul pair per expert (no per-token Python)"}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(output [B, T, d], weighted auxiliary terms), like every FFN (``architectures.block``)."""
        if self.dispatch(self.training) == "capacity":
            return self._forward_capacity(x)
        return self._forward_sorted(x)

    def _forward_capacity(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training with a capacity: static shapes, every expert in one batched matmul."""
        B, T, d = x.shape
        x_flat = x.reshape(-1, d)
        N, E, k = x_flat.shape[0], self.n_experts, self.top_k
        logits, top_index, gates = self.route(x_flat)
        assignments = top_index.reshape(-1)  # [N·k], token-major
        one_hot = F.one_hot(assignments, E)  # [N·k, E]
        aux = self._aux_losses(logits, one_hot.sum(0), N * k)
        capacity = math.ceil(self.capacity_factor * N * k / E)
        # place of each assignment in its expert's queue, earlier tokens first
        position = (one_hot.cumsum(0) * one_hot).sum(1) - 1
        keep = position < capacity
        slot = torch.where(keep, assignments * capacity + position, E * capacity)  # dropped → a spare row
        token = torch.arange(N * k, device=x.device) // k
        buffer = x_flat.new_zeros(E * capacity + 1, d).index_copy(0, slot, x_flat[token])
        b_in = self.b_in[:, None] if self.b_in is not None else None
        b_out = self.b_out[:, None] if self.b_out is not None else None
        hidden = self._expert_ffn(buffer[:-1].view(E, capacity, d), self.w_in, b_in, self.w_out, b_out)
        hidden = torch.cat([hidden.reshape(E * capacity, d), hidden.new_zeros(1, d)])
        weight = (gates.reshape(-1) * keep).to(hidden.dtype)
        out = (hidden[slot] * weight[:, None]).view(N, k, d).sum(1)
        aux["moe_dropped_fraction"] = (1.0 - keep.sum().float() / (N * k)).detach()
        return self.dropout(out.view(B, T, d).to(x.dtype)), aux

    def _forward_sorted(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Dropless: assignments sorted by expert, each expert run once on its own rows."""
        B, T, d = x.shape
        x_flat = x.reshape(-1, d)
        N, E, k = x_flat.shape[0], self.n_experts, self.top_k
        logits, top_index, gates = self.route(x_flat)
        assignments = top_index.reshape(-1)  # [N·k], token-major
        counts = torch.bincount(assignments, minlength=E)
        aux = self._aux_losses(logits, counts, N * k)
        order = torch.argsort(assignments, stable=True)
        token_of_row = order // k
        gate_of_row = gates.reshape(-1)[order]
        counts_list = counts.tolist()
        out = torch.zeros_like(x_flat)
        start = 0
        for expert, count in enumerate(counts_list):
            if count:
                tokens = token_of_row[start : start + count]
                b_in = self.b_in[expert] if self.b_in is not None else None
                b_out = self.b_out[expert] if self.b_out is not None else None
                hidden = self._expert_ffn(x_flat[tokens], self.w_in[expert], b_in, self.w_out[expert], b_out)
                weighted = hidden * gate_of_row[start : start + count, None].to(hidden.dtype)
                out.index_add_(0, tokens, weighted.to(out.dtype))
            start += count
        aux["moe_dropped_fraction"] = torch.zeros((), device=x.device)
        return self.dropout(out.view(B, T, d)), aux
