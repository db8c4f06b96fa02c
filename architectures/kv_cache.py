"""Key/value cache for incremental decoding: preallocated, and window-bounded in banded layers.

``model.new_kv_cache(batch_size, max_tokens=None, left_padding=None)`` makes one; passing it
as ``kv_cache=`` to the model stores each call's keys and values, and positions continue where
the last call ended. Nothing is concatenated per token:

- a dense layer holds ``[B, H, capacity, D]`` keys and values, written in place
  (capacity = ``max_tokens``, the context by default, plus the smallest left padding);
- a banded layer (window w) holds a **ring buffer of w positions**: position i lives in slot
  i mod w, so its memory is fixed once w tokens have passed. A one-token step attends to the
  ring as it is (softmax does not care about slot order); a chunk of several tokens attends to
  the ring's keys followed by its own, then keeps its last w.

Ragged batches are **left-padded**: ``left_padding[b]`` pad tokens precede row b's prompt.
Every row advances through the same padded index space (index = padding + position), so the
band is the same in index and position; pad keys are masked out, and each row's position
embeddings start at 0 at its first real token. A pad query attends to itself only, so its
(unused) output stays finite.

KV bytes (``kv_cache_bytes``): keys and values only (2 · H · D elements per layer and stored
position), at the cache dtype; dense layers store every position, banded layers at most w.
"""

from __future__ import annotations

import torch


class LayerCache:
    """Keys and values of one attention layer; ``append`` stores a chunk and returns what its
    queries attend to: (keys, values, key_index [L] padded indices, or None when the keys are
    exactly the valid, in-band ones for a one-token step without padding)."""

    window: int | None = None

    def __init__(self, shape: tuple[int, int, int, int], left_padding: torch.Tensor | None, dtype, device) -> None:
        # never read before written (reads stop at the stored length), so left uninitialised
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.left_padding = left_padding
        self.length = 0  # indices stored so far (padding included)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def _cast(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Under autocast keys arrive in the compute dtype: an empty cache takes it (once)."""
        if k.dtype != self.keys.dtype or k.device != self.keys.device:
            if self.length:
                raise ValueError(f"the KV cache holds {self.keys.dtype} on {self.keys.device}; got {k.dtype} on {k.device}.")
            self.keys = torch.empty(self.keys.shape, dtype=k.dtype, device=k.device)
            self.values = torch.empty(self.values.shape, dtype=v.dtype, device=v.device)
        return k, v


class DenseLayerCache(LayerCache):
    """Every stored index, in order, in a preallocated ``[B, H, capacity, D]`` buffer."""

    def __init__(self, shape, left_padding, dtype, device) -> None:
        super().__init__(shape, left_padding, dtype, device)
        self.index = torch.arange(shape[2], device=device)

    def append(self, k: torch.Tensor, v: torch.Tensor):
        k, v = self._cast(k, v)
        start, T = self.length, k.shape[-2]
        end = start + T
        if end > self.keys.shape[2]:
            raise ValueError(f"the KV cache holds {self.keys.shape[2]} positions; this chunk would reach {end}.")
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        self.length = end
        key_index = None if T == 1 and self.left_padding is None else self.index[:end]
        return self.keys[:, :, :end], self.values[:, :, :end], key_index


class RingLayerCache(LayerCache):
    """The last ``window`` indices of a banded layer: index i in slot i mod w."""

    def __init__(self, shape, left_padding, dtype, device, window: int) -> None:
        super().__init__(shape, left_padding, dtype, device)
        self.window = window
        self.capacity = shape[2]
        self.slot_index = torch.full((self.capacity,), -1, dtype=torch.long, device=device)

    def append(self, k: torch.Tensor, v: torch.Tensor):
        k, v = self._cast(k, v)
        start, T, cap = self.length, k.shape[-2], self.capacity
        if T == 1:
            slot = start % cap
            self.keys[:, :, slot : slot + 1] = k
            self.values[:, :, slot : slot + 1] = v
            self.slot_index[slot] = start
            self.length = start + 1
            n = min(self.length, cap)
            key_index = None if self.left_padding is None else self.slot_index[:n]
            return self.keys[:, :, :n], self.values[:, :, :n], key_index
        index = torch.arange(start, start + T, device=k.device)
        if start == 0:
            keys, values, key_index = k, v, index
        else:
            n = min(start, cap)
            keys = torch.cat([self.keys[:, :, :n], k], dim=2)
            values = torch.cat([self.values[:, :, :n], v], dim=2)
            key_index = torch.cat([self.slot_index[:n], index])
        kept = min(T, cap)
        slots = index[-kept:] % cap
        self.keys.index_copy_(2, slots, k[:, :, -kept:])
        self.values.index_copy_(2, slots, v[:, :, -kept:])
        self.slot_index[slots] = index[-kept:]
        self.length = start + T
        return keys, values, key_index


class KVCache:
    """One layer cache per block, the next padded index (``position``) and the left padding."""

    def __init__(self, layers: list[LayerCache], batch_size: int, left_padding: torch.Tensor | None = None):
        self.layers = layers
        self.batch_size = batch_size
        self.left_padding = left_padding
        self.min_padding = int(left_padding.min()) if left_padding is not None else 0
        self.position = 0

    def __getitem__(self, layer: int) -> LayerCache:
        return self.layers[layer]

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values held (the buffers, allocated up front)."""
        return sum(layer.nbytes for layer in self.layers)

    def positions(self, T: int, device) -> torch.Tensor | None:
        """[B, T] position of each token of the next chunk in its own row (None without padding)."""
        if self.left_padding is None:
            return None
        index = torch.arange(self.position, self.position + T, device=device)
        return (index[None, :] - self.left_padding[:, None]).clamp_(min=0)


def new_kv_cache(
    config,
    batch_size: int,
    max_tokens: int | None = None,
    left_padding=None,
    dtype: torch.dtype = torch.float32,
    device="cpu",
) -> KVCache:
    """A cache for ``batch_size`` rows of at most ``max_tokens`` positions each (default: the
    context), given the model's ``ModelConfig``; ``left_padding`` [B] pad tokens per row."""
    max_tokens = config.context if max_tokens is None else int(max_tokens)
    if not 1 <= max_tokens <= config.context:
        raise ValueError(f"max_tokens must be between 1 and the context ({config.context}), got {max_tokens}.")
    padding = None
    if left_padding is not None:
        padding = torch.as_tensor(left_padding, dtype=torch.long, device=device).reshape(-1)
        if padding.numel() != batch_size or int(padding.min()) < 0:
            raise ValueError(f"left_padding needs {batch_size} non-negative counts, one per row; got {left_padding!r}.")
        max_tokens += int(padding.min())
    layers: list[LayerCache] = []
    for layer in range(config.n_layer):
        window = config.window if config.layer_attention(layer) == "banded" else None
        if window is None:
            shape = (batch_size, config.n_head, max_tokens, config.d_head)
            layers.append(DenseLayerCache(shape, padding, dtype, device))
        else:
            shape = (batch_size, config.n_head, min(window, max_tokens), config.d_head)
            layers.append(RingLayerCache(shape, padding, dtype, device, window))
    return KVCache(layers, batch_size, padding)


def kv_cache_bytes(config, tokens: int, batch_size: int = 1, bytes_per_element: int = 4) -> int:
    """Analytic KV-cache bytes after ``tokens`` positions: Σ over layers of
    2 (K and V) · B · H · D · bytes · stored positions (tokens; min(tokens, w) when banded)."""
    per_position = 2 * batch_size * config.n_head * config.d_head * bytes_per_element
    total = 0
    for layer in range(config.n_layer):
        banded = config.layer_attention(layer) == "banded"
        total += per_position * (min(tokens, config.window) if banded else tokens)
    return total


def kv_bytes_per_token(config, tokens: int, bytes_per_element: int = 4) -> float:
    """Analytic KV-cache bytes per token of one sequence at length ``tokens``."""
    return kv_cache_bytes(config, tokens, 1, bytes_per_element) / tokens
