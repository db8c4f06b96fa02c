"""The validation split: chosen per document by a hash of its content, so it streams.

A document is validation when the first 8 bytes of ``blake2b(its UTF-8 bytes)``, read as a
little-endian integer u, satisfy ``u < val_fraction * 2**64``. The choice depends on the
document's text alone: not on its position, the shard size, the worker count or the seed, and
two identical documents always land on the same side (so no validation text is trained on).
"""

from __future__ import annotations

import hashlib

SPLIT_RULE = "validation iff int.from_bytes(blake2b(document UTF-8 bytes).digest()[:8], 'little') < val_fraction * 2**64"


def split_threshold(val_fraction: float) -> int:
    """The 64-bit threshold below which a document's hash makes it validation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    return int(val_fraction * 2**64)


def is_validation(data: bytes, threshold: int) -> bool:
    """Whether the document with UTF-8 bytes ``data`` is validation (see the module docstring)."""
    return int.from_bytes(hashlib.blake2b(data).digest()[:8], "little") < threshold


def describe_split(val_fraction: float) -> dict:
    """The split rule as the manifest states it."""
    return {"rule": SPLIT_RULE, "val_fraction": val_fraction}
