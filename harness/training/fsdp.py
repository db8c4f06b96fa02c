"""``--parallel fsdp2``: parameters, gradients and AdamW state sharded over the ranks (``fully_shard``).

- Sharding: ``fully_shard`` on each transformer block, then on the root, over a 1-D
  ``DeviceMesh`` of all ranks. Each block is one all-gather in the forward and backward and one
  reduce-scatter of its gradients; the root holds the rest — the token embedding and the LM
  head tied to it (one parameter, kept together), positions, the final norm, gpt4's image
  prefix. Every parameter is sharded along dim 0, padded where it does not split evenly;
  an MoE layer's expert stacks ``w_in`` [E, d, f] / ``w_out`` [E, f, d] are sharded by expert.
- Mixed precision (CUDA with ``--dtype bf16`` only): ``MixedPrecisionPolicy(param_dtype=bf16,
  reduce_dtype=fp32)``, the fp32 master weights and AdamW state stay sharded.
- Gradient accumulation reduce-scatters every micro-step (``no_sync`` does nothing): gradients
  stay sharded. Skipping the sync would hold the whole model's unsharded gradients until the
  last micro-step — DDP's trade-off, which costs the memory FSDP is used to save.
- Every rank runs every forward, validation included (the weights are gathered per block).
- Checkpoints: sharded while training (``harness.training.sharded_checkpoint``: each rank
  writes its shard through ``torch.distributed.checkpoint``; a killed run resumes from them at
  any world size); at the end of a finished run, gathered once into the ordinary
  ``checkpoint.pt`` that ``eval``, ``export``, ``finetune`` and ``report`` read.
- One process works too (a mesh of one device; the process group is made here).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from harness.io import WriteFailed
from harness.runs import run_dir as run_files
from harness.training import sharded_checkpoint
from harness.training.distributed import DistContext
from harness.training.activation_checkpointing import checkpoint_activations
from harness.training.strategies import StrategyBase


def ensure_process_group(device: torch.device) -> None:
    """A process group of one when not launched by torchrun (FSDP2 needs a mesh even on one device)."""
    if dist.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["device_id"] = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                            world_size=1, **kwargs)


class FullyShardedDataParallel(StrategyBase):
    """FSDP2 over all ranks (see the module docstring)."""

    name = "fsdp2"
    sharded = True

    def __init__(self, dist_context: DistContext, device: torch.device, *, mixed_precision: bool):
        super().__init__(dist_context, device)
        ensure_process_group(device)
        self.mesh = init_device_mesh(device.type, (dist_context.world_size,))
        self.mixed_precision = mixed_precision and device.type == "cuda"

    def prepare(self, model: nn.Module, *, compile: bool, activation_checkpointing: bool) -> nn.Module:
        """Activation checkpointing and compilation per block, then ``fully_shard`` per block and on the root."""
        self.activation_checkpointing = activation_checkpointing
        if activation_checkpointing:
            checkpoint_activations(model)
        options: dict[str, Any] = {"mesh": self.mesh}
        if self.mixed_precision:
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in model.blocks:
            if compile:
                block.compile()  # in place: parameter names unchanged
            fully_shard(block, **options)
        fully_shard(model, **options)
        return model

    def save_checkpoint(self, run_dir: Path, model: nn.Module, optimizer, extras: dict, *, final: bool) -> None:
        """Sharded while training; ``final``: gathered into ``checkpoint.pt`` (rank 0), the shards deleted."""
        if not final:
            sharded_checkpoint.save_sharded(run_dir, model, optimizer, extras, is_main=self.dist.is_main)
            return
        model_state, optimizer_state = sharded_checkpoint.full_state(model, optimizer)
        failure = None
        if self.dist.is_main:
            try:
                run_files.save_checkpoint(run_dir, {"model": model_state, "optimizer": optimizer_state, **extras})
                sharded_checkpoint.remove_sharded(run_dir)
            except WriteFailed as error:
                failure = error
        # every rank learns whether rank 0's write failed: all then skip the final validation's collectives
        reason = [None if failure is None else (failure.errno or errno.EIO, str(failure))]
        if self.dist.enabled:
            dist.broadcast_object_list(reason, src=0)
        if failure is not None:
            raise failure
        if reason[0] is not None:
            raise WriteFailed(run_files.checkpoint_path(run_dir), OSError(reason[0][0], f"on rank 0: {reason[0][1]}"))

    def _load_full(self, path: Path, run_id: str, model, optimizer, scheduler) -> dict:
        return sharded_checkpoint.load_full_into_sharded(path, run_id, model, optimizer, scheduler)

    def describe(self) -> dict[str, Any]:
        precision = {"param_dtype": "bf16", "reduce_dtype": "fp32"} if self.mixed_precision else None
        return {**super().describe(), "sharding": "fully_shard per block, then the root (embeddings + tied head)",
                "mesh": list(self.mesh.shape), "mixed_precision": precision}
