"""Key/value cache for incremental decoding.

``model.new_kv_cache(batch_size)`` makes one; passing it as ``kv_cache=`` to the model
appends each call's keys and values, and positions continue where the last call ended.
"""

from __future__ import annotations

import torch


class LayerCache:
    """Keys and values of one attention layer, [B, H, T_seen, D] each."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            self.keys = torch.cat([self.keys, k], dim=-2)
            self.values = torch.cat([self.values, v], dim=-2)
        return self.keys, self.values


class KVCache:
    """One ``LayerCache`` per block, plus the number of positions already processed."""

    def __init__(self, n_layer: int, batch_size: int):
        self.layers = [LayerCache() for _ in range(n_layer)]
        self.batch_size = batch_size
        self.position = 0

    def __getitem__(self, layer: int) -> LayerCache:
        return self.layers[layer]
