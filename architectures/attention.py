"""Causal self-attention: dense (SDPA) and locally banded (Sparse-Transformer style).

The banded layer lets a query at position t see keys t-w+1 … t (w = window, itself
included) and **executes about T·(w + b) score entries, not T²**: on the CPU by a
blocked kernel (queries in blocks of b, each against the w + b keys that can reach it);
on CUDA by FlexAttention with a block mask when available. Both give the same numbers
as a dense SDPA call with the band mask (``banded_reference``), which executes T².

FLOP conventions (see harness/flops/analytic.py): budgets count by default the score
entries each layer's causal mask admits ((T + 1)/2 keys per query dense, the band's exact
count banded: one rule for both). The ``full`` convention (PaLM's, used for MFU) counts
``keys_per_query(T)``, what a layer executes per query — T for dense (full T×T, no causal
halving) and w + b for banded (ceil(T/b)·b·(w + b)/T when b does not divide T). On CUDA,
FlexAttention skips whole 128×128 tiles outside the band, so it executes about w + 128 keys
per query; ``full`` uses the CPU kernel's w + b on every device — a difference of
(128 - b)/(w + b) of the banded layers' score work, small next to the projections, and
stated here rather than hidden.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from architectures.config import ModelConfig
from architectures.kv_cache import LayerCache


def keys_per_query(seq_len: int, window: int | None, block: int | None) -> float:
    """Score entries executed per query, averaged over the T queries.

    Dense (or a band covering T): T. Banded: the blocked kernel scores ceil(T/b)·b queries
    against w + b keys each, so ceil(T/b)·b·(w + b)/T (exactly w + b when b divides T).
    """
    if window is None or window >= seq_len:
        return seq_len
    block = max(1, min(block or 64, seq_len))
    return math.ceil(seq_len / block) * block * (window + block) / seq_len


def banded_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Dense masked attention with the band mask: the T² definition the kernels must match."""
    T = q.shape[-2]
    position = torch.arange(T, device=q.device)
    distance = position[:, None] - position[None, :]
    allowed = (distance >= 0) & (distance < window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


_band_biases: dict[tuple, torch.Tensor] = {}


def band_bias(n_blocks: int, block: int, window: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive mask [n, b, w + b] of the blocked kernel (0 in the band, -inf outside), cached.

    Key offset c of block i is position i·b - w + c, query offset r is i·b + r: the band is
    r < c ≤ r + w, and keys at negative positions (the front padding) are outside.
    """
    key = (n_blocks, block, window, dtype, str(device))
    if key not in _band_biases:
        span = window + block
        row = torch.arange(block, device=device)[:, None]
        col = torch.arange(span, device=device)[None, :]
        in_band = (col > row) & (col <= row + window)
        start = torch.arange(n_blocks, device=device)[:, None, None] * block - window
        allowed = in_band[None] & ((start + col[None]) >= 0)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
        if len(_band_biases) > 64:
            _band_biases.clear()
        _band_biases[key] = bias
    return _band_biases[key]


def banded_attention_blocked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, block: int, dropout_p: float = 0.0
) -> torch.Tensor:
    """Banded causal attention in O(T·(w + b)) work and memory.

    q, k, v: [B, H, T, D]. Queries are taken in blocks of ``block``; block i (positions
    i·b … i·b+b-1) is scored against keys i·b-w … i·b+b-1, the only ones its band can reach.
    Few passes over the [B, H, n, b, w + b] scores: q is scaled before the product, the band
    is one in-place add of a cached bias, softmax in float32. ``dropout_p``: dropout on the
    attention probabilities (as SDPA's ``dropout_p``; pass 0 in evaluation).
    """
    B, H, T, D = q.shape
    window = min(window, T)
    block = max(1, min(block, T))
    n_blocks = math.ceil(T / block)
    pad_tail = n_blocks * block - T
    q_blocks = (F.pad(q, (0, 0, 0, pad_tail)) * (1.0 / math.sqrt(D))).view(B, H, n_blocks, block, D)
    # keys padded with `window` positions in front, so block i's span starts at index i·b.
    span = window + block
    k_blocks = F.pad(k, (0, 0, window, pad_tail)).unfold(2, span, block).transpose(-1, -2)  # [B, H, n, span, D]
    v_blocks = F.pad(v, (0, 0, window, pad_tail)).unfold(2, span, block).transpose(-1, -2)
    scores = torch.matmul(q_blocks, k_blocks.transpose(-1, -2))  # [B, H, n, b, span]
    bias = band_bias(n_blocks, block, window, torch.float32, q.device)
    if scores.dtype == torch.float32:
        probs = torch.softmax(scores.add_(bias), dim=-1)
    else:  # low precision: the band and softmax in float32 (one conversion pass)
        probs = torch.softmax(scores.float().add_(bias), dim=-1).to(v.dtype)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    out = torch.matmul(probs, v_blocks)  # [B, H, n, b, D]
    return out.reshape(B, H, n_blocks * block, D)[:, :, :T]


class _FlexBandedKernel:
    """FlexAttention with a block-sparse band mask (CUDA); block masks cached per shape."""

    def __init__(self) -> None:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        self._create_block_mask = create_block_mask
        self._flex_attention = torch.compile(flex_attention, dynamic=False)
        self._masks: dict[tuple, object] = {}

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
        T = q.shape[-2]
        key = (T, window, q.device)
        if key not in self._masks:

            def band(b, h, q_idx, kv_idx):
                return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

            self._masks[key] = self._create_block_mask(band, None, None, T, T, device=q.device)
        return self._flex_attention(q, k, v, block_mask=self._masks[key])


_flex_kernel: _FlexBandedKernel | None = None


def banded_kernel(seq_len: int, window: int, cuda: bool, dropout_p: float) -> str:
    """Which kernel a banded layer runs: ``"sdpa"`` when the band covers the sequence,
    ``"flex"`` on CUDA (which has no attention dropout: with ``dropout_p`` > 0 the blocked
    kernel runs there too), else ``"blocked"``."""
    if window >= seq_len:
        return "sdpa"
    if cuda and torch.cuda.is_available() and dropout_p == 0.0:
        return "flex"
    return "blocked"


def banded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, block: int, dropout_p: float = 0.0
) -> torch.Tensor:
    """Banded causal attention by the kernel ``banded_kernel`` chooses."""
    global _flex_kernel
    kernel = banded_kernel(q.shape[-2], window, q.is_cuda, dropout_p)
    if kernel == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    if kernel == "flex":
        if _flex_kernel is None:
            _flex_kernel = _FlexBandedKernel()
        return _flex_kernel(q, k, v, window)
    return banded_attention_blocked(q, k, v, window, block, dropout_p)


class PackedMask:
    """Which tokens of a packed batch may attend to which: several sequences in one row, and
    continuations that share a context (a tree: each continuation sees the context and itself).

    ``allowed`` [B, T, T] bool (query, key): the causal/tree structure, True on the diagonal;
    ``positions`` [B, T]: each token's position in its own sequence. A banded layer also
    needs ``0 <= position(query) - position(key) < window``; along one sequence positions
    are consecutive, so that is exactly the band of the unpacked sequence.
    """

    def __init__(self, allowed: torch.Tensor, positions: torch.Tensor):
        self.allowed, self.positions = allowed, positions
        self._by_window: dict[tuple, torch.Tensor] = {}

    def for_window(self, window: int | None, dtype: torch.dtype) -> torch.Tensor:
        """[B, 1, T, T] additive mask for SDPA (0 allowed, -inf not; faster on the CPU than a
        boolean one): the structure, intersected with the band when ``window``. Cached."""
        key = (window, dtype)
        if key not in self._by_window:
            allowed = self.allowed
            if window is not None:
                distance = self.positions[:, :, None] - self.positions[:, None, :]
                allowed = allowed & (distance < window)
            bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
            self._by_window[key] = bias[:, None]
        return self._by_window[key]


def cached_attention_bias(
    query_index: torch.Tensor, key_index: torch.Tensor, window: int | None, left_padding: torch.Tensor | None, dtype
) -> torch.Tensor:
    """Additive mask [B or 1, 1, T_new, L] for queries at padded indices ``query_index`` [T_new]
    against cached keys at ``key_index`` [L]: causal, within the band when ``window``, and
    never a row's left padding (a pad query sees itself only, so its output stays finite)."""
    distance = query_index[:, None] - key_index[None, :]
    allowed = distance >= 0
    if window is not None:
        allowed &= distance < window
    allowed = allowed[None]
    if left_padding is not None:
        allowed = allowed & (key_index[None, None, :] >= left_padding[:, None, None])
        allowed = allowed | (distance == 0)[None]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
    return bias[:, None]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; ``window`` set → locally banded."""

    def __init__(self, config: ModelConfig, window: int | None = None):
        super().__init__()
        self.n_head, self.d_head = config.n_head, config.d_head
        self.window = window
        self.block = config.banded_block or 64
        self.qkv = nn.Linear(config.d_model, 3 * config.d_attn, bias=config.bias)
        self.proj = nn.Linear(config.d_attn, config.d_model, bias=config.bias)
        self.proj.is_residual_projection = True
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    @property
    def kind(self) -> str:
        return "dense" if self.window is None else "banded"

    def keys_per_query(self, seq_len: int) -> int:
        """Score entries this layer executes per query at sequence length ``seq_len``."""
        return keys_per_query(seq_len, self.window, self.block)

    def kernels(self, seq_len: int, device: torch.device, training: bool) -> dict[str, str]:
        """``{"<kind>_attention": kernel}``: what this layer runs on ``seq_len`` tokens from
        position 0 (training, validation) on ``device``, in training or in evaluation mode."""
        cuda = device.type == "cuda"
        name = f"{self.kind}_attention"
        if self.window is None:
            return {name: "sdpa causal" + (" (flash / memory-efficient, chosen by torch)" if cuda else "")}
        dropout_p = self.dropout if training else 0.0
        kernel = banded_kernel(seq_len, self.window, cuda, dropout_p)
        if kernel == "sdpa":
            return {name: "sdpa causal (the window covers the sequence)"}
        if kernel == "flex":
            return {name: f"flex_attention with a block mask (window {self.window})"}
        why = " (FlexAttention has no attention dropout)" if cuda and dropout_p > 0 else ""
        return {name: f"blocked (window {self.window} + block {self.block} keys per query){why}"}

    def forward(
        self,
        x: torch.Tensor,
        cache: LayerCache | None = None,
        packed: PackedMask | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``keep`` (flat row·T + t indices): output only those positions, as [1, N, d_model]
        (every position still serves as a key; the output projection runs on the kept ones)."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.d_head).permute(2, 0, 3, 1, 4)
        dropout_p = self.dropout if self.training else 0.0
        if cache is not None:
            y = self._attend_cached(q, k, v, cache)
        elif packed is not None:  # packed rows / shared contexts (evaluation)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=packed.for_window(self.window, q.dtype), dropout_p=dropout_p)
        elif self.window is None:  # the training path
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        else:
            y = banded_attention(q, k, v, self.window, self.block, dropout_p)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.d_head)
        if keep is not None:
            y = y.reshape(B * T, -1)[keep][None]
        return self.resid_dropout(self.proj(y))

    def _attend_cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """Store the chunk's keys and values in ``cache`` and attend (no dropout: decoding is
        inference). A first chunk without padding runs the training kernels; a one-token step
        without padding attends to the cache unmasked (it holds exactly the keys in reach)."""
        start, T = cache.length, q.shape[-2]
        keys, values, key_index = cache.append(k, v)
        if key_index is None:
            return F.scaled_dot_product_attention(q, keys, values)
        if start == 0 and cache.left_padding is None:
            if self.window is None:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return banded_attention(q, k, v, self.window, self.block)
        query_index = torch.arange(start, start + T, device=q.device)
        bias = cached_attention_bias(query_index, key_index, self.window, cache.left_padding, q.dtype)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
