"""torch.distributed under ``torchrun``: rank, world size, and rank-0-only side effects.

``torchrun --nproc_per_node=N -m harness run ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
without them everything runs as a single process (rank 0 of 1) and nothing is initialised.
The backend is NCCL on CUDA and gloo on the CPU, so the same code is tested on a laptop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes records, metrics, reports and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistContext:
    """Initialise the process group when launched by torchrun; a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def all_reduce_mean(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Mean of a tensor over ranks (returns the input unchanged on one process)."""
    if not context.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / context.world_size


def all_reduce_sum(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    if not context.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
