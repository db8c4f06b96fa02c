"""The engine's data-parallel calls, in one place: wrap the model, skip gradient sync between
micro-steps, and gather what rank 0 checkpoints. One process: each is the identity.

Under ``torchrun`` the model is wrapped in DDP (``harness.training.distributed.wrap_ddp``), the
step's micro-batches but the last run under ``no_sync`` (one all-reduce per step), and the
checkpoint holds the unwrapped model's weights (no ``module.`` prefix) with every rank's RNG.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from harness.runs import run_dir as run_files
from harness.training import distributed


def wrap_for_training(model: torch.nn.Module, device: torch.device, dist: distributed.DistContext,
                      compile: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model as synchronised — DDP-wrapped under torchrun —, the model as stepped — that, compiled or not)."""
    synced = distributed.wrap_ddp(model, device, dist) if dist.enabled else model
    # compile(DDP(model)): DDPOptimizer splits graphs at buckets
    return synced, (torch.compile(synced) if compile else synced)


def no_sync_of(synced: torch.nn.Module, dist: distributed.DistContext) -> Callable[[], Any] | None:
    """The context that skips gradient all-reduce on a micro-step (None on one process)."""
    return synced.no_sync if dist.enabled else None


def gather_rng_states(device: torch.device, dist: distributed.DistContext) -> list[dict]:
    """Every rank's RNG state, in rank order (a collective: every rank calls it)."""
    return distributed.gather_objects(run_files.rng_state(device.type), dist)


def rank_rng_fields(rng_by_rank: list[dict], dist: distributed.DistContext) -> dict:
    """The checkpoint's RNG entries: ``rng`` (rank 0's), and under torchrun ``rng_by_rank`` and ``world_size``."""
    fields: dict[str, Any] = {"rng": rng_by_rank[0]}
    if dist.enabled:
        fields.update(rng_by_rank=rng_by_rank, world_size=dist.world_size)
    return fields

