"""Analytic FLOP count from a ModelConfig (Kaplan / PaLM conventions, stated).

Conventions:
- FLOPs = 2 per multiply-add. Counts are **per text token** at sequence length T.
- Matrix multiplies only: LayerNorm, softmax, GELU, residual adds, embedding lookups and
  the loss are not counted (each is O(d) per token, well under 1 % at these sizes).
- Attention scores (QKᵀ and AV) cost 4·d_attn FLOPs per counted key, under one of two
  conventions (``ATTENTION_FLOPS``), the same for dense and banded layers:
  ``causal`` (the default for budgets): the score entries each layer's mask admits — dense
  (T + 1)/2 keys per query on average, banded the band's exact count
  Σ_t min(t + 1, w) / T; causal flash kernels skip the upper triangle, so this is the
  closer count to what runs. ``full``: PaLM's convention as MFU figures use it — dense at
  all T keys per query (no causal halving), banded at the min(T, w + b) keys its blocked
  kernel executes (window w plus the query block b).
- MoE layers count the router (2·d·E) and the k **active** experts, never all E.
- Training = forward + backward = 3 × forward (the backward pass computes gradients with
  respect to both activations and weights: two multiplies per forward multiply).
- The image prefix costs ``image_prefix_flops_per_image`` (patch projection) once per image;
  its patch positions then flow through the blocks like text positions.
"""

from __future__ import annotations

from architectures.attention import keys_per_query
from architectures.config import ModelConfig

ATTENTION_FLOPS = ("causal", "full")
DEFAULT_ATTENTION_FLOPS = "causal"
MFU_ATTENTION_FLOPS = "full"  # MFU keeps PaLM's convention, as MFU figures elsewhere use it

_ATTENTION_TEXT = {
    "causal": "attention scores at the keys each layer's causal mask admits (dense: (T + 1)/2 per query; "
              "banded: the band's exact count, sum_t min(t + 1, w) / T)",
    "full": "attention scores at all keys per query as PaLM counts them (dense: T, no causal halving; "
            "banded: the w + block keys its kernel executes)",
}


def check_attention_flops(attention_flops: str) -> str:
    """``attention_flops`` if it names a convention, else one sentence with the known ones."""
    if attention_flops not in ATTENTION_FLOPS:
        raise ValueError(f"unknown attention FLOP convention {attention_flops!r}; "
                         f"use one of: {', '.join(ATTENTION_FLOPS)}.")
    return attention_flops


def convention(attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> str:
    """The FLOP convention in one line, for records, reports and ``harness flops``."""
    return (f"FLOPs = 2 per multiply-add; per text token at sequence length T; matmuls only; "
            f"{_ATTENTION_TEXT[check_attention_flops(attention_flops)]} [attention_flops={attention_flops}]; "
            "MoE: router + k active experts; training = 3 x forward")


CONVENTION = convention()


def attention_keys_per_query(seq_len: int, window: int | None, block: int | None,
                             attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> float:
    """Keys per query one attention layer is counted at, averaged over the T queries (see module doc)."""
    if check_attention_flops(attention_flops) == "full":
        return keys_per_query(seq_len, window, block)
    band = seq_len if window is None else min(window, seq_len)
    admitted = band * (band + 1) / 2 + (seq_len - band) * band  # sum over t of min(t + 1, band)
    return admitted / seq_len

BREAKDOWN_KEYS = (
    "attention_projections",
    "attention_scores",
    "mlp",
    "moe_experts",
    "moe_router",
    "lm_head",
)


def layer_forward_breakdown(config: ModelConfig, seq_len: int | None, layer: int,
                            attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> dict[str, float]:
    """Forward FLOPs per token of block ``layer`` by component (the block's keys of ``BREAKDOWN_KEYS``)."""
    T = config.check_seq_len(seq_len)
    d, d_attn = config.d_model, config.d_attn
    window = config.window if config.layer_attention(layer) == "banded" else None
    keys = attention_keys_per_query(T, window, config.banded_block, attention_flops)
    counts = {"attention_projections": 2 * d * 3 * d_attn + 2 * d_attn * d, "attention_scores": 4 * d_attn * keys}
    if config.ffn == "moe":
        counts["moe_router"] = 2 * d * config.n_experts
        counts["moe_experts"] = config.top_k * 2 * (2 * d * config.expert_d_ff)
    else:
        counts["mlp"] = 2 * (2 * d * config.d_ff)
    return counts


def forward_breakdown(config: ModelConfig, seq_len: int | None = None,
                      attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> dict[str, float]:
    """Forward FLOPs per token by component (keys in ``BREAKDOWN_KEYS``): every block, then the LM head;
    attention counted by ``attention_flops`` (``causal`` or ``full``)."""
    counts = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
    for layer in range(config.n_layer):
        for key, value in layer_forward_breakdown(config, seq_len, layer, attention_flops).items():
            counts[key] += value
    counts["lm_head"] = 2 * config.d_model * config.vocab_size
    return counts


def forward_flops_per_token(config: ModelConfig, seq_len: int | None = None,
                            attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> float:
    """Forward FLOPs per text token at sequence length ``seq_len`` (default: the context)."""
    return sum(forward_breakdown(config, seq_len, attention_flops).values())


def train_flops_per_token(config: ModelConfig, seq_len: int | None = None,
                          attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> float:
    """Training (forward + backward) FLOPs per token: 3 × forward."""
    return 3 * forward_flops_per_token(config, seq_len, attention_flops)


def image_prefix_flops_per_image(config: ModelConfig) -> float:
    """Forward FLOPs of the patch projection for one image (0 without an image input)."""
    if config.patch_size is None:
        return 0.0
    return config.n_image_patches * 2 * config.image_channels * config.patch_size**2 * config.d_model


def six_n_d(active_params: int, tokens: float) -> float:
    """The 6·N·D figure papers quote (N = active parameters, embeddings included; attention ignored)."""
    return 6.0 * active_params * tokens
