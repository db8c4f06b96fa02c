"""Where a run's work goes: the device, the ranks under ``torchrun``, and each rank's share of a step.

A step of ``batch_tokens`` tokens is ``rows = batch_tokens // seq_len`` sequences, split as
``micro_batch_per_rank`` rows × ``grad_accum`` micro-steps × ``world_size`` ranks
(``Layout``). Rank 0 keeps the run seed's torch stream; every other rank gets its own dropout
stream (``rank_seed``). See ``harness.training.distributed`` for the rules the trainer follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.training import distributed
from harness.training.parallel import check_parallel
from harness.device import DeviceSettings, configure_device
from harness.runs.records import load_record
from harness.runs.run_dir import set_rng_state


@dataclass
class Layout:
    """How a step's rows split: ``micro_batch_per_rank`` rows × ``grad_accum`` micro-steps × ``world_size`` ranks."""

    micro_batch_per_rank: int
    grad_accum: int
    world_size: int


def place(recipe, device_name: str | None, dtype: str | None, compile: bool | None,
          parallel: str | None = None) -> tuple[DeviceSettings, torch.device, distributed.DistContext, Layout]:
    """Device settings, this rank's device, the process group, and the step's layout over ranks.

    ``recipe``: a resolved ``harness.runs.spec.Recipe``; ``device_name``, ``dtype``, ``compile``:
    as ``harness.device.configure_device`` takes them (None: this machine's default); ``parallel``:
    the strategy (``harness.training.parallel``), checked against the world size before the ranks
    rendezvous (None: the default for the world size).
    """
    if device_name != "cpu":
        distributed.select_local_device()  # under torchrun: "cuda" is this rank's GPU from here on
    settings = configure_device(device_name, dtype, compile=compile)
    device = torch.device(settings.device)
    rows_per_step = recipe.batch_tokens // recipe.seq_len
    world_size = distributed.env_world_size()  # checked before the ranks rendezvous
    if parallel is not None:
        check_parallel(parallel, world_size)
    rank_micro_bs = micro_batch_per_rank(rows_per_step, recipe.micro_batch_size, recipe.seq_len,
                                          recipe.batch_tokens, world_size)
    dist = distributed.init_distributed(device.type)
    if dist.enabled and settings.device == "cuda":
        device = torch.device("cuda", dist.local_rank)
    layout = Layout(rank_micro_bs, rows_per_step // (rank_micro_bs * world_size), dist.world_size)
    return settings, device, dist, layout


def micro_batch_per_rank(rows: int, micro_bs: int, seq_len: int, batch_tokens: int, world_size: int) -> int:
    """Sequences per forward pass on each rank; a step's ``rows`` must split evenly over the ranks.

    Under torchrun a micro-batch larger than a rank's share of the step shrinks to that share
    (so the default recipe works on any rank count that divides the batch).
    """
    if world_size > 1:
        if rows < world_size:
            raise ValueError(
                f"--nproc_per_node={world_size} is more ranks than the {rows} sequence{'s' * (rows != 1)} in a step "
                f"({batch_tokens} tokens / seq_len {seq_len}); use at most {rows} rank{'s' * (rows != 1)} "
                f"or a larger --batch-tokens."
            )
        if rows % world_size:
            raise ValueError(
                f"a step of {rows} sequences ({batch_tokens} tokens / seq_len {seq_len}) does not split evenly over "
                f"{world_size} ranks; choose --batch-tokens as a multiple of {world_size * seq_len}."
            )
        micro_bs = min(micro_bs, rows // world_size)
    if rows < micro_bs * world_size or rows % (micro_bs * world_size):
        raise ValueError(
            f"batch of {batch_tokens} tokens = {rows} sequences of {seq_len} is not a multiple of "
            f"micro-batch {micro_bs} x {world_size} rank(s); choose --batch-tokens as a multiple of "
            f"{micro_bs * world_size * seq_len}."
        )
    return micro_bs


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The torch seed of rank > 0 (dropout stream), a function of the run seed, rank and step."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def restore_rank_rng(checkpoint: dict, dist, seed: int, device_type: str) -> None:
    """This rank's RNG state from a checkpoint (written at this or another world size)."""
    by_rank = checkpoint.get("rng_by_rank") or [checkpoint["rng"]]
    if len(by_rank) == dist.world_size or dist.rank == 0:
        set_rng_state(by_rank[dist.rank], device_type)
    else:  # resumed at another world size: same data order, a fresh dropout stream for this rank
        torch.manual_seed(rank_seed(seed, dist.rank, int(checkpoint["step"])))


def rank_error(dist, exc: BaseException, step: int) -> str:
    """``rank 1 of 2: RuntimeError: <first line> (at step 3)``."""
    lines = str(exc).strip().splitlines()
    return f"{dist.label()}: {type(exc).__name__}: {lines[0][:300] if lines else ''} (at step {step})"


def merge_rank_errors(run_dir: Path, error: str) -> str:
    """Keep the error a peer rank already recorded (the cause) ahead of this rank's (often the effect)."""
    try:
        existing = load_record(run_dir)
    except (OSError, ValueError):
        return error
    previous = existing.get("error") or ""
    if existing.get("status") == "failed" and previous and error not in previous:
        return f"{previous}; then {error}"
    return error
