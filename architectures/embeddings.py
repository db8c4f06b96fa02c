"""Input embeddings: tokens plus learned absolute positions, and the image-patch prefix.

The image prefix is a ViT-style stub (Dosovitskiy et al. 2020): the image [B, C, H, W] is
cut into P×P patches, each flattened and projected linearly to d_model, plus a learned
position per patch. The model prepends these vectors to the text tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from architectures.config import ModelConfig


class TokenPositionEmbedding(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.d_model)
        self.position = nn.Embedding(config.context, config.d_model)

    def forward(self, idx: torch.Tensor, start_position: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``positions`` [B, T] (packed sequences) replaces ``start_position, start_position + 1, ...``."""
        if positions is None:
            positions = torch.arange(start_position, start_position + idx.shape[1], device=idx.device)
        return self.token(idx) + self.position(positions)


class PatchPrefix(nn.Module):
    """Images → [B, n_patches, d_model] prefix vectors."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.patch_size, self.channels, self.image_size = config.patch_size, config.image_channels, config.image_size
        self.projection = nn.Linear(config.image_channels * config.patch_size**2, config.d_model)
        self.position = nn.Embedding(config.n_image_patches, config.d_model)

    def check(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise ValueError(f"images must be [B, {self.channels}, H, W], got shape {tuple(images.shape)}.")
        H, W = images.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image sides ({H}×{W}) must be multiples of the patch size {self.patch_size}.")
        if (H // self.patch_size) * (W // self.patch_size) > self.position.num_embeddings:
            raise ValueError(
                f"an image of {H}×{W} gives more patches than the {self.image_size}×{self.image_size} the model was built for."
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, C, H, W = images.shape
        P = self.patch_size
        patches = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * P * P)
        positions = torch.arange(patches.shape[1], device=images.device)
        return self.projection(patches.to(self.projection.weight.dtype)) + self.position(positions)
