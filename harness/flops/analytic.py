"""Analytic FLOP count from a ModelConfig (Kaplan / PaLM conventions, stated).

Conventions:
- FLOPs = 2 per multiply-add. Counts are **per text token** at sequence length T.
- Matrix multiplies only: LayerNorm, softmax, GELU, residual adds, embedding lookups and
  the loss are not counted (each is O(d) per token, well under 1 % at these sizes).
- Attention scores (QKᵀ and AV) cost 4·d_attn FLOPs per executed key: dense layers execute
  all T keys per query (PaLM's full T×T convention, no causal halving, because dense
  kernels compute the full square or a comparable share); banded layers execute
  min(T, w + b) keys (window w plus the query block b of the blocked kernel) — what
  runs, not the T² a masked dense call would cost.
- MoE layers count the router (2·d·E) and the k **active** experts, never all E.
- Training = forward + backward = 3 × forward (the backward pass computes gradients with
  respect to both activations and weights: two multiplies per forward multiply).
- The image prefix costs ``image_prefix_flops_per_image`` (patch projection) once per image;
  its patch positions then flow through the blocks like text positions.
"""

from __future__ import annotations

from architectures.attention import keys_per_query
from architectures.config import ModelConfig

CONVENTION = (
    "FLOPs = 2 per multiply-add; per text token at sequence length T; matmuls only; "
    "attention scores at executed keys per query (dense: full T, no causal halving; banded: w + block); "
    "MoE: router + k active experts; training = 3 x forward"
)

BREAKDOWN_KEYS = (
    "attention_projections",
    "attention_scores",
    "mlp",
    "moe_experts",
    "moe_router",
    "lm_head",
)


def layer_forward_breakdown(config: ModelConfig, seq_len: int | None, layer: int) -> dict[str, float]:
    """Forward FLOPs per token of block ``layer`` by component (the block's keys of ``BREAKDOWN_KEYS``)."""
    T = config.check_seq_len(seq_len)
    d, d_attn = config.d_model, config.d_attn
    window = config.window if config.layer_attention(layer) == "banded" else None
    counts = {"attention_projections": 2 * d * 3 * d_attn + 2 * d_attn * d,
              "attention_scores": 4 * d_attn * keys_per_query(T, window, config.banded_block)}
    if config.ffn == "moe":
        counts["moe_router"] = 2 * d * config.n_experts
        counts["moe_experts"] = config.top_k * 2 * (2 * d * config.expert_d_ff)
    else:
        counts["mlp"] = 2 * (2 * d * config.d_ff)
    return counts


def forward_breakdown(config: ModelConfig, seq_len: int | None = None) -> dict[str, float]:
    """Forward FLOPs per token by component (keys in ``BREAKDOWN_KEYS``): every block, then the LM head."""
    counts = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
    for layer in range(config.n_layer):
        for key, value in layer_forward_breakdown(config, seq_len, layer).items():
            counts[key] += value
    counts["lm_head"] = 2 * config.d_model * config.vocab_size
    return counts


def forward_flops_per_token(config: ModelConfig, seq_len: int | None = None) -> float:
    """Forward FLOPs per text token at sequence length ``seq_len`` (default: the context)."""
    return sum(forward_breakdown(config, seq_len).values())


def train_flops_per_token(config: ModelConfig, seq_len: int | None = None) -> float:
    """Training (forward + backward) FLOPs per token: 3 × forward."""
    return 3 * forward_flops_per_token(config, seq_len)


def image_prefix_flops_per_image(config: ModelConfig) -> float:
    """Forward FLOPs of the patch projection for one image (0 without an image input)."""
    if config.patch_size is None:
        return 0.0
    return config.n_image_patches * 2 * config.image_channels * config.patch_size**2 * config.d_model


def six_n_d(active_params: int, tokens: float) -> float:
    """The 6·N·D figure papers quote (N = active parameters, embeddings included; attention ignored)."""
    return 6.0 * active_params * tokens
