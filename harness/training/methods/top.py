"""``top:N``: fine-tune only the top N blocks and the final LayerNorm; everything below stays frozen.

**The head stays frozen.** It is tied to the token embedding (``lm_head.weight`` is
``embed.token.weight``), and training it would train the embedding too: its gradient from the
input side needs activation gradients through every block down to the embedding lookup, the
full backward that top-layer fine-tuning exists to avoid. So the token and position
embeddings, the (tied) head, the image prefix and blocks 0 … n_layer − N − 1 are frozen.

**FLOPs** (2 per multiply-add, per token at the run's seq_len; what actually runs):

- forward: the whole model, F = ``harness.flops.forward_flops_per_token``;
- head input gradient: the frozen head's backward to its input, 2·d·V (no weight gradient);
- the top N blocks: activation and weight gradients of every matmul, 2 × their forward
  (attention scores twice as well: both operands of QKᵀ and AV depend on trainable weights);
  in a post-LN block (GPT-1) the lowest trainable block's QKV reads the frozen residual stream
  directly, so its input gradient (2·d·3·d_attn) is not computed; a pre-LN block's QKV reads
  its own trainable LayerNorm, whose gain needs that gradient;
- nothing below the lowest trainable block.
"""

from __future__ import annotations

from torch import nn

from harness.flops import DEFAULT_ATTENTION_FLOPS, forward_breakdown, layer_forward_breakdown
from harness.training.methods.base import Method

FLOP_CONVENTION = (
    "FLOPs = 2 per multiply-add, per token at the run's seq_len; top:N = forward of the whole model (1 x forward) "
    "+ the frozen tied head's input gradient (2 d V) + 2 x the top N blocks' forward (activation and weight gradients; "
    "post-LN: minus the lowest trainable block's QKV input gradient); no backward below the lowest trainable block"
)


def parse_top(name: str) -> int:
    """``"top:3"`` → 3 (the number of top blocks that train)."""
    prefix, _, count = name.partition(":")
    if prefix != "top" or not count.isdigit() or int(count) < 1:
        raise ValueError(f"--method top:N needs N, a positive number of blocks (e.g. top:2), got {name!r}.")
    return int(count)


class TopMethod(Method):
    """Train blocks n_layer − N … n_layer − 1 and ``ln_f``; the head, embeddings and lower blocks are frozen."""

    flop_convention = FLOP_CONVENTION

    def __init__(self, blocks: int):
        self.blocks = blocks
        self.name = f"top:{blocks}"

    def trainable_prefixes(self, n_layer: int) -> tuple[str, ...]:
        """Parameter-name prefixes that train: ``blocks.<i>.`` for the top blocks, and ``ln_f.``."""
        self._check_depth(n_layer)
        return tuple(f"blocks.{layer}." for layer in range(n_layer - self.blocks, n_layer)) + ("ln_f.",)

    def prepare(self, model: nn.Module) -> nn.Module:
        prefixes = self.trainable_prefixes(model.config.n_layer)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(prefixes))
        return model

    def flops_per_token(self, config, seq_len: int, tokens_per_forward: int,
                        attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> dict[str, float]:
        self._check_depth(config.n_layer)
        top = range(config.n_layer - self.blocks, config.n_layer)
        blocks = sum(2 * sum(layer_forward_breakdown(config, seq_len, layer, attention_flops).values()) for layer in top)
        if config.norm_placement == "post":
            blocks -= 2 * config.d_model * 3 * config.d_attn
        parts = {"forward": sum(forward_breakdown(config, seq_len, attention_flops).values()),
                 "head_input_gradient": 2 * config.d_model * config.vocab_size,
                 "top_blocks_backward": blocks}
        parts["total"] = sum(parts.values())
        return parts

    def record_fields(self) -> dict:
        return {"method": self.name, "targets": f"the top {self.blocks} block(s) and the final LayerNorm; "
                                                 f"embeddings and the tied head frozen"}

    def _check_depth(self, n_layer: int) -> None:
        if self.blocks > n_layer:
            raise ValueError(f"--method {self.name} asks for {self.blocks} blocks but the model has {n_layer}; "
                             f"choose top:1 … top:{n_layer}.")
