"""The decoder-only language model every architecture shares.

embeddings (+ optional image prefix) → blocks → final LayerNorm (pre-LN only) → LM head
tied to the token embedding. Architectures differ only in their ``ModelConfig``.

Forward contract (the trainer and evaluator never special-case an architecture)::

    out = model(idx, targets=None, images=None, kv_cache=None)
    out.logits   [B, T, vocab]   text positions only
    out = model(idx, positions=P, attention_mask=M, logit_positions=I)   # packed evaluation
    out.logits   [N, vocab]      only the N flat positions I (row·T + t): the head runs there only
    out.loss     LM cross-entropy (nats/token) + the weighted auxiliary losses, or None
    out.lm_loss  the LM cross-entropy alone, or None
    out.aux      {"moe_balance", "moe_z", "moe_dropped_fraction"} for MoE (layer means)

Self-description (optional for third-party models): ``model.kernels(seq_len, device)`` (the
attention / MoE kernels in training and evaluation, for the run record) and
``model.parameters_unused_by_text()`` (left out of data-parallel gradient sync).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from architectures.attention import PackedMask
from architectures.block import Block
from architectures.config import ModelConfig
from architectures.embeddings import PatchPrefix, TokenPositionEmbedding
from architectures.kv_cache import KVCache, new_kv_cache
from architectures.moe import MoE

# auxiliary terms that are metrics only, never added to the loss
AUX_METRICS_ONLY = frozenset({"moe_dropped_fraction"})


@dataclass
class ModelOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = TokenPositionEmbedding(config)
        self.image_prefix = PatchPrefix(config) if config.patch_size is not None else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias) if config.final_norm else None
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.token.weight
        self.reset_parameters()

    # ---- initialisation -------------------------------------------------------------------
    @property
    def residual_init_std(self) -> float:
        """Init std of residual output projections: std/sqrt(2·n_layer) when scaled (GPT-2), else std."""
        std = self.config.init_std
        return std / math.sqrt(2 * self.config.n_layer) if self.config.residual_init_scaling else std

    def reset_parameters(self) -> None:
        """N(0, init_std) for matrices and embeddings, zeros for biases, ones for LayerNorm gains."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                residual = getattr(module, "is_residual_projection", False)
                nn.init.normal_(module.weight, std=self.residual_init_std if residual else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, MoE):
                module.reset_parameters(std, self.residual_init_std)

    # ---- counts --------------------------------------------------------------------------
    def param_counts(self) -> dict[str, int]:
        """Parameter counts; tied weights once.

        - ``params``: every parameter.
        - ``non_embedding_params``: minus token, position and patch-position embeddings (Kaplan).
        - ``active_params``: what one token uses: minus the (E-k)/E share of expert weights.
        - ``active_non_embedding_params``: both of the above.
        """
        total = sum(p.numel() for p in self.parameters())
        embedding = self.embed.token.weight.numel() + self.embed.position.weight.numel()
        if self.image_prefix is not None:
            embedding += self.image_prefix.position.weight.numel()
        inactive = 0
        for module in self.modules():
            if isinstance(module, MoE):
                inactive += module.expert_parameter_count() * (module.n_experts - module.top_k) // module.n_experts
        return {
            "params": total,
            "non_embedding_params": total - embedding,
            "active_params": total - inactive,
            "active_non_embedding_params": total - embedding - inactive,
        }

    # ---- self-description ----------------------------------------------------------------
    def parameters_unused_by_text(self) -> list[str]:
        """Names (as in ``named_parameters``) of parameters text-only batches never reach:
        the image prefix's (gpt4). Data-parallel training leaves them out of gradient sync."""
        if self.image_prefix is None:
            return []
        return [f"image_prefix.{name}" for name, _ in self.image_prefix.named_parameters()]

    def kernels(self, seq_len: int, device: torch.device | str) -> dict[str, dict[str, str]]:
        """Which attention and FFN kernels the layers dispatch to for sequences of ``seq_len``
        tokens on ``device``: ``{"training": {...}, "evaluation": {...}}``, each keyed by
        ``dense_attention`` / ``banded_attention`` / ``moe_dispatch`` (the kinds present).

        Training and evaluation differ for MoE with a capacity (capacity buffer vs dropless
        sorted dispatch) and for banded layers on CUDA with dropout (blocked vs FlexAttention).
        Packed evaluation batches use SDPA with a mask in every layer; cached decoding runs SDPA
        over the cache (a banded layer's w-slot ring), masked only for chunks and left padding.
        """
        seq_len = self.config.check_seq_len(seq_len)
        device = torch.device(device)
        described: dict[str, dict[str, str]] = {}
        for phase, training in (("training", True), ("evaluation", False)):
            kernels: dict[str, str] = {}
            for block in self.blocks:
                kernels.update(block.attn.kernels(seq_len, device, training))
                kernels.update(block.ffn.kernels(training))
            described[phase] = kernels
        return described

    # ---- forward -------------------------------------------------------------------------
    def new_kv_cache(self, batch_size: int, max_tokens: int | None = None, left_padding=None) -> KVCache:
        """A preallocated cache (``architectures.kv_cache``) in the model's dtype and device for
        ``batch_size`` rows of at most ``max_tokens`` positions (default: the context);
        ``left_padding`` [B]: pad tokens before each row's prompt (ragged batches)."""
        weight = self.embed.token.weight
        return new_kv_cache(self.config, batch_size, max_tokens, left_padding, weight.dtype, weight.device)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        *,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        logit_positions: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Packed evaluation: ``positions`` [B, T] (each token's position in its own sequence)
        and ``attention_mask`` [B, T, T] bool (query may attend key; causal or tree structure,
        True on the diagonal; banded layers add their window over ``positions``) let several
        sequences, or a context and its continuations, share a row. ``logit_positions`` [N]
        (flat indices row·T + t) computes the final norm and the LM head there only, so
        ``logits`` is [N, vocab]. Neither combines with ``kv_cache``, ``images`` or ``targets``.
        """
        packed = None
        if positions is not None or attention_mask is not None:
            if positions is None or attention_mask is None or kv_cache is not None or images is not None:
                raise ValueError("packed input needs both positions and attention_mask, and no kv_cache or images.")
            packed = PackedMask(attention_mask, positions)
        if logit_positions is not None and targets is not None:
            raise ValueError("logit_positions computes logits at some positions only; the loss needs all: pass one of them.")
        x, aux_terms, kv_position = self._trunk(idx, images, kv_cache, packed, logit_positions)
        if kv_cache is not None:
            kv_cache.position = kv_position
        if logit_positions is not None:
            x = x[0]  # the last block computed only these positions
        if self.ln_f is not None:
            x = self.ln_f(x)
        logits = self.lm_head(x)
        if targets is None:
            return ModelOutput(logits=logits, aux=aux_terms)
        lm_loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        loss = lm_loss
        for name, value in aux_terms.items():
            if name not in AUX_METRICS_ONLY:
                loss = loss + value
        return ModelOutput(logits=logits, loss=loss, lm_loss=lm_loss, aux=aux_terms)

    def _trunk(self, idx, images, kv_cache, packed, logit_positions=None):
        """Embeddings and blocks: (text hidden states [B, T, d], layer-mean aux terms, next cache position).

        With ``logit_positions`` the last block computes only those positions ([1, N, d]):
        past its attention, no other position is needed."""
        B, T = idx.shape
        start = kv_cache.position if kv_cache is not None else 0
        prefix = None
        if images is not None:
            if self.image_prefix is None:
                raise ValueError("this model has no image input; build it with patch_size set (e.g. gpt4).")
            if start:
                raise ValueError("images can only be given with the first chunk of a sequence.")
            self.image_prefix.check(images)
            prefix = self.image_prefix(images)
        n_prefix = prefix.shape[1] if prefix is not None else 0
        positions = packed.positions if packed is not None else None
        if kv_cache is not None and getattr(kv_cache, "left_padding", None) is not None:
            if prefix is not None:
                raise ValueError("a left-padded KV cache takes text only; give images with an unpadded cache.")
            positions = kv_cache.positions(T, idx.device)
            last = start + T - 1 - kv_cache.min_padding
            if last >= self.config.context:
                raise ValueError(f"a row would reach position {last}; the context is {self.config.context}.")
        elif packed is not None:
            if int(packed.positions.max()) >= self.config.context:
                raise ValueError(f"a packed position reaches {int(packed.positions.max())}; the context is {self.config.context}.")
        elif start + n_prefix + T > self.config.context:
            raise ValueError(
                f"sequence of {start + n_prefix + T} positions is longer than the context of {self.config.context}."
            )

        x = self.embed(idx, start_position=start + n_prefix, positions=positions)
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        x = self.drop(x)

        aux_sums: dict[str, torch.Tensor] = {}
        n_moe_layers = 0
        keep = None
        if logit_positions is not None:  # flat positions in the [B, prefix + T] sequence
            keep = logit_positions + n_prefix * (logit_positions.div(T, rounding_mode="floor") + 1)
        for layer, block in enumerate(self.blocks):
            last = layer == len(self.blocks) - 1
            x, aux = block(x, kv_cache[layer] if kv_cache is not None else None, packed, keep if last else None)
            if aux:
                n_moe_layers += 1
                for name, value in aux.items():
                    aux_sums[name] = aux_sums.get(name, 0.0) + value
        aux_terms = {name: total / n_moe_layers for name, total in aux_sums.items()}
        text = x if keep is not None else x[:, n_prefix:]
        return text, aux_terms, start + n_prefix + T
