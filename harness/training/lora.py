"""LoRA adapters on the harness models (through ``peft``), their parameter counts and FLOPs.

**What is adapted** (every architecture, dense and banded layers alike, since both use the
same projection modules): attention ``attn.qkv`` and ``attn.proj`` and the dense MLP's
``ffn.fc`` and ``ffn.proj`` — all ``nn.Linear``, wrapped by peft's ``lora.Linear``
(y = W x + (α/r)·B A x). The MoE experts are **not** ``nn.Linear``: each MoE layer keeps its
experts as batched ``nn.Parameter`` stacks ``ffn.w_in`` [E, d, f] and ``ffn.w_out``
[E, f, d]; they are adapted through peft's ``target_parameters`` (``lora.ParamWrapper``):
one rank-r pair per expert, folded into W + (α/r)·B A on every forward call.

**Frozen and not adapted**: token and position embeddings and the tied LM head, LayerNorms,
biases, the MoE router (it reads ``router.weight`` directly, in float32, so a module
wrapper would never run) and the image patch projection.

**FLOPs** (2 per multiply-add; per token at sequence length T; ``lora_flops_per_token``):

- frozen forward: F = ``harness.flops.forward_flops_per_token`` (1 × forward);
- backward through activations only: every frozen matmul's input gradient (1 × F), plus
  the attention scores once more (QKᵀ and AV have two activation operands, both need
  gradients), **minus** the first layer's QKV input gradient (its input, the frozen
  embeddings, needs none); no weight gradients for frozen matrices — except the adapted
  MoE experts, whose weight gradient dL/d(W + ΔW) autograd computes to reach A and B
  (+ the experts' forward FLOPs once more);
- adapters: 3 × their forward FLOPs, 2·r·(d_in + d_out) per adapted ``nn.Linear`` and
  token (minus the first layer's QKV A input gradient, 2·r·d); the expert adapters' fold
  W + (α/r)·B A costs 2·E·d_in·d_out·r per matrix and forward call, executed **4 times**
  per training step: twice in the forward (torch's ``register_parametrization``, which
  peft calls on every forward, evaluates the fold once to check it, then once for use)
  and twice in the backward (gradients of A and B); per token: ÷ tokens per forward call.

``torch.utils.flop_counter`` agrees with these figures exactly except for SDPA's backward,
which torch counts at 2.5 × its forward (flash recompute) where the convention says 2 ×;
the same surplus appears in a full fine-tune (tests/test_finetune.py checks both).

A full fine-tune costs 3 × F per token (``harness.flops.train_flops_per_token``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from architectures.config import ModelConfig
from harness.flops import DEFAULT_ATTENTION_FLOPS, forward_breakdown

LINEAR_TARGETS = r".*\.(attn\.(qkv|proj)|ffn\.(fc|proj))$"  # peft target_modules (regex on module names)
EXPERT_TARGETS = ("ffn.w_in", "ffn.w_out")  # peft target_parameters (MoE expert stacks)
FLOP_CONVENTION = (
    "FLOPs = 2 per multiply-add, per token at the run's seq_len; full fine-tune = 3 x forward; "
    "LoRA = frozen forward (1 x forward) + backward through activations only (1 x forward + attention scores once more, "
    "minus the first layer's QKV input gradient; no weight gradients for frozen matrices, except adapted MoE experts, "
    "whose dL/d(W + dW) is computed) + adapters' forward and backward (3 x adapter FLOPs; MoE expert adapters are "
    "folded into W + (alpha/r) B A, executed 4 x per step at 2 E d_in d_out r each: twice forward, twice backward)"
)


@dataclass
class LoraSettings:
    """Rank ``rank`` and scale ``alpha / rank`` (peft's ``r`` and ``lora_alpha``); no dropout."""

    rank: int = 8
    alpha: float = 16.0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"--rank must be a positive integer, got {self.rank!r}.")
        if not self.alpha > 0:
            raise ValueError(f"--alpha must be a positive number, got {self.alpha!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


def adapted_matrices(config: ModelConfig) -> list[dict]:
    """Every adapted matrix: ``{"name", "d_in", "d_out", "experts", "layer"}`` (experts 0: an nn.Linear)."""
    d, d_attn = config.d_model, config.d_attn
    out = []
    for layer in range(config.n_layer):
        out.append({"name": f"blocks.{layer}.attn.qkv", "d_in": d, "d_out": 3 * d_attn, "experts": 0, "layer": layer})
        out.append({"name": f"blocks.{layer}.attn.proj", "d_in": d_attn, "d_out": d, "experts": 0, "layer": layer})
        if config.ffn == "moe":
            f, E = config.expert_d_ff, config.n_experts
            out.append({"name": f"blocks.{layer}.ffn.w_in", "d_in": d, "d_out": f, "experts": E, "layer": layer})
            out.append({"name": f"blocks.{layer}.ffn.w_out", "d_in": f, "d_out": d, "experts": E, "layer": layer})
        else:
            out.append({"name": f"blocks.{layer}.ffn.fc", "d_in": d, "d_out": config.d_ff, "experts": 0, "layer": layer})
            out.append({"name": f"blocks.{layer}.ffn.proj", "d_in": config.d_ff, "d_out": d, "experts": 0, "layer": layer})
    return out


def adapter_param_count(config: ModelConfig, rank: int) -> int:
    """Trainable LoRA parameters: r·(d_in + d_out) per adapted matrix (per expert for MoE stacks)."""
    return sum(rank * (m["d_in"] + m["d_out"]) * max(1, m["experts"]) for m in adapted_matrices(config))


def lora_flops_per_token(config: ModelConfig, seq_len: int, rank: int, tokens_per_forward: int,
                         attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> dict[str, float]:
    """LoRA training FLOPs per token by part (see the module docstring); ``total`` is their sum.
    Attention is counted in ``attention_flops`` (``harness.flops.ATTENTION_FLOPS``).

    ``tokens_per_forward``: tokens in one forward call (micro-batch × seq_len); it spreads
    the once-per-call fold of the MoE expert adapters over the tokens.
    """
    if tokens_per_forward < 1:
        raise ValueError(f"tokens_per_forward must be at least 1, got {tokens_per_forward}.")
    breakdown = forward_breakdown(config, seq_len, attention_flops)
    forward = sum(breakdown.values())
    first_qkv = 2 * config.d_model * 3 * config.d_attn
    matrices = adapted_matrices(config)
    linear = sum(2 * rank * (m["d_in"] + m["d_out"]) for m in matrices if not m["experts"])
    fold = sum(2 * m["experts"] * m["d_in"] * m["d_out"] * rank for m in matrices if m["experts"])
    parts = {
        "frozen_forward": forward,
        "frozen_backward": forward + breakdown["attention_scores"] + breakdown["moe_experts"] - first_qkv,
        "adapters": 3 * linear - 2 * rank * config.d_model,
        "expert_adapter_fold": 4 * fold / tokens_per_forward,
    }
    parts["total"] = sum(parts.values())
    return parts


def peft_config(config: ModelConfig, settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=LINEAR_TARGETS,
        target_parameters=list(EXPERT_TARGETS) if config.ffn == "moe" else None,
    )


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """``model`` wrapped by peft (a ``PeftModel``): base weights frozen, adapters trainable (B = 0 at start)."""
    from peft import get_peft_model

    return get_peft_model(model, peft_config(model.config, settings))


def is_adapted(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights alone (peft's names), detached copies on the CPU."""
    from peft import get_peft_model_state_dict

    return {key: value.detach().cpu().clone() for key, value in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore ``adapter_state`` output into a model made by ``apply_lora`` with the same settings."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    missing = [key for key in getattr(result, "unexpected_keys", []) if "lora_" in key]
    if missing:
        raise ValueError(f"the adapter state does not fit this model (unexpected {missing[:3]}); same rank and architecture?")


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain harness model whose weights are W + (α/r)·B A (the adapted model is left as it is)."""
    if not is_adapted(model):
        return model
    return copy.deepcopy(model).merge_and_unload()

