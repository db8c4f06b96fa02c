"""How a run spreads its model over processes: one ``ParallelStrategy`` protocol, chosen by ``--parallel``.

- ``single``: one process, the model as built (the default without torchrun;
  ``harness.training.strategies`` holds it and ``ddp``).
- ``ddp``: ``DistributedDataParallel`` under torchrun, every rank a full replica; gradients
  all-reduced once per step (``no_sync`` on all micro-steps but the last). The default under
  torchrun with 2 or more ranks.
- ``fsdp2``: ``torch.distributed.fsdp.fully_shard`` (``harness.training.fsdp``): parameters,
  gradients and AdamW state sharded over the ranks; sharded checkpoints.

The trainer holds one strategy and asks it to ``prepare`` the model (activation
checkpointing, sharding or wrapping, compilation), for the ``no_sync`` context of gradient
accumulation, and to save and load checkpoints. Every strategy resumes from either
checkpoint form (``checkpoint.pt`` or the sharded one), whichever is later.

The strategy is not part of a run's identity (like the world size): the same spec gives the
same run id and, in fp32 to float round-off, the same losses under any strategy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ContextManager, Protocol

import torch
from torch import nn

from harness.training.distributed import DistContext

PARALLEL_CHOICES = ("single", "ddp", "fsdp2")


def default_parallel(world_size: int) -> str:
    """``ddp`` under torchrun with 2 or more ranks, else ``single``."""
    return "ddp" if world_size > 1 else "single"


def check_parallel(name: str, world_size: int) -> None:
    """A one-sentence ``ValueError`` when ``name`` cannot run on ``world_size`` processes."""
    if name not in PARALLEL_CHOICES:
        raise ValueError(f"unknown --parallel {name!r}; choose one of {', '.join(PARALLEL_CHOICES)}.")
    if name == "single" and world_size > 1:
        raise ValueError(f"--parallel single runs one process, but torchrun started {world_size}; "
                         f"use --parallel ddp or fsdp2, or run without torchrun.")
    if name == "ddp" and world_size < 2:
        raise ValueError("--parallel ddp needs 2 or more processes (torchrun --nproc_per_node=N); "
                         "use --parallel single for one process.")


class ParallelStrategy(Protocol):
    """What the trainer asks of a parallel strategy (``single``, ``ddp``, ``fsdp2``)."""

    name: str
    sharded: bool  # every rank holds only a shard: every rank runs every forward (validation too)

    def prepare(self, model: nn.Module, *, compile: bool, activation_checkpointing: bool) -> nn.Module:
        """Shard or wrap ``model`` in place where needed; returns the module to step. Build the optimizer after."""

    def no_sync(self) -> ContextManager:
        """The context for every micro-step but the last of an optimizer step (no gradient sync there)."""

    def save_checkpoint(self, run_dir: Path, model: nn.Module, optimizer, extras: dict, *, final: bool) -> None:
        """Write the training state (collective); ``extras`` (scheduler, step, RNG, ...) is rank 0's.
        ``final``: the run is done, write the ordinary ``checkpoint.pt``."""

    def load_checkpoint(self, run_dir: Path, run_id: str, model: nn.Module, optimizer, scheduler) -> dict | None:
        """Load the run's latest checkpoint into model, optimizer and scheduler; its extras, or None if none."""

    def describe(self) -> dict[str, Any]:
        """The record's ``parallel`` field."""


def make_strategy(name: str, dist: DistContext, device: torch.device, *, mixed_precision: bool) -> ParallelStrategy:
    """The strategy ``name`` for this process (``check_parallel`` has accepted it for the world size).

    ``mixed_precision``: fsdp2 keeps bf16 copies of the parameters for compute and reduces
    gradients in fp32 (CUDA with ``--dtype bf16`` only).
    """
    check_parallel(name, dist.world_size)
    if name == "fsdp2":  # imported here: torch.distributed.fsdp and .checkpoint load only when used
        from harness.training.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(dist, device, mixed_precision=mixed_precision)
    from harness.training.strategies import DataParallel, Single

    return (DataParallel if name == "ddp" else Single)(dist, device)


def strategy_for_method(name: str | None, method_name: str, dist: DistContext, device: torch.device, *,
                        mixed_precision: bool) -> ParallelStrategy:
    """The run's strategy (None: ``default_parallel``); fsdp2 shards pre-training only (a fine-tuning
    method's own state — LoRA adapters, frozen blocks — is not sharded)."""
    name = name or default_parallel(dist.world_size)
    if name == "fsdp2" and method_name != "pretrain":
        raise ValueError(f"--parallel fsdp2 shards pre-training runs; fine-tune ({method_name}) with single or ddp.")
    return make_strategy(name, dist, device, mixed_precision=mixed_precision)
