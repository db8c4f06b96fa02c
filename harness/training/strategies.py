"""The replicated strategies, ``single`` and ``ddp``, and what every strategy shares (``StrategyBase``).

See ``harness.training.parallel`` for the protocol and how a strategy is chosen.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import nn

from harness.runs import run_dir as run_files
from harness.training import sharded_checkpoint
from harness.training.distributed import DistContext
from harness.training.activation_checkpointing import checkpoint_activations


class StrategyBase:
    """Shared by the strategies: loading whichever checkpoint form is latest."""

    name = ""
    sharded = False

    def __init__(self, dist: DistContext, device: torch.device):
        self.dist, self.device = dist, device
        self.activation_checkpointing = False

    def no_sync(self) -> ContextManager:
        return contextlib.nullcontext()

    def load_checkpoint(self, run_dir: Path, run_id: str, model: nn.Module, optimizer, scheduler) -> dict | None:
        form = sharded_checkpoint.latest_form(run_dir)
        if form == "sharded":
            return sharded_checkpoint.load_sharded(run_dir, run_id, model, optimizer, scheduler)
        if form == "full":
            return self._load_full(run_files.checkpoint_path(run_dir), run_id, model, optimizer, scheduler)
        return None

    def _load_full(self, path: Path, run_id: str, model, optimizer, scheduler) -> dict:
        return run_files.restore_training_state(path, run_id, model, optimizer, scheduler)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "world_size": self.dist.world_size,
                "activation_checkpointing": self.activation_checkpointing}


class Single(StrategyBase):
    """One process, one full model; rank 0 writes ``checkpoint.pt``."""

    name = "single"

    def prepare(self, model: nn.Module, *, compile: bool, activation_checkpointing: bool) -> nn.Module:
        self.activation_checkpointing = activation_checkpointing
        if activation_checkpointing:
            checkpoint_activations(model)
        return torch.compile(model) if compile else model

    def save_checkpoint(self, run_dir: Path, model: nn.Module, optimizer, extras: dict, *, final: bool) -> None:
        if not self.dist.is_main:
            return
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extras}
        run_files.save_checkpoint(run_dir, payload)  # the unwrapped model: no DDP "module." prefix
        sharded_checkpoint.remove_sharded(run_dir)  # older than this file (a run resumed under another strategy)


class DataParallel(Single):
    """``DistributedDataParallel``: full replicas, one gradient all-reduce per optimizer step."""

    name = "ddp"

    def prepare(self, model: nn.Module, *, compile: bool, activation_checkpointing: bool) -> nn.Module:
        self.activation_checkpointing = activation_checkpointing
        if activation_checkpointing:
            checkpoint_activations(model)
        self.ddp_model = wrap_ddp(model, self.device)
        # compile(DDP(model)): DDPOptimizer splits graphs at buckets
        return torch.compile(self.ddp_model) if compile else self.ddp_model

    def no_sync(self) -> ContextManager:
        return self.ddp_model.no_sync()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)``; parameters text-only training never uses are left out.

    The model names them (``model.parameters_unused_by_text()``, e.g. gpt4's image-prefix
    stub; a model without the method has none): they get no gradient from text batches and
    DDP would wait for them forever, so they are excluded from gradient synchronisation
    (they never change, so they stay identical on every rank). Falls back to
    ``find_unused_parameters=True`` if that DDP hook is missing.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    name_unused = getattr(model, "parameters_unused_by_text", None)
    unused = list(name_unused()) if name_unused is not None else []
    kwargs: dict[str, Any] = {"device_ids": [device.index] if device.type == "cuda" else None}
    if unused:
        ignore = getattr(DDP, "_set_params_and_buffers_to_ignore_for_model", None)
        if ignore is not None:
            ignore(model, unused)
        else:
            kwargs["find_unused_parameters"] = True
    return DDP(model, **kwargs)
