"""What a checkpoint holds of every rank: its RNG state, gathered in rank order (one process:
just its own). Wrapping, sharding and gradient sync are the parallel strategy's
(``harness.training.parallel``)."""

from __future__ import annotations

from typing import Any

import torch

from harness.runs import run_dir as run_files
from harness.training import distributed


def gather_rng_states(device: torch.device, dist: distributed.DistContext) -> list[dict]:
    """Every rank's RNG state, in rank order (a collective: every rank calls it)."""
    return distributed.gather_objects(run_files.rng_state(device.type), dist)


def rank_rng_fields(rng_by_rank: list[dict], dist: distributed.DistContext) -> dict:
    """The checkpoint's RNG entries: ``rng`` (rank 0's), and under torchrun ``rng_by_rank`` and ``world_size``."""
    fields: dict[str, Any] = {"rng": rng_by_rank[0]}
    if dist.enabled:
        fields.update(rng_by_rank=rng_by_rank, world_size=dist.world_size)
    return fields

