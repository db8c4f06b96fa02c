"""torch.distributed under ``torchrun``: rank, world size, and rank-0-only side effects.

``torchrun --nproc_per_node=N -m harness run ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
without them everything runs as a single process (rank 0 of 1) and nothing is initialised.
The backend is NCCL on CUDA and gloo on the CPU, so the same code is tested on a laptop.

Rules the engine follows (``harness.training.engine``):

- Every rank reads its own rows of the same global batch (``get_batch(..., rank,
  world_size)``), so W ranks × 1 micro-step see exactly the rows of 1 rank × W micro-steps.
- Only rank 0 writes records, metrics, checkpoints and the tokenizer, evaluates and prints.
  The one exception: a rank that raises writes the record as ``failed`` (atomically) before
  it exits, because it may be the only one that knows why; rank 0 then adds its own line.
- Every decision that leads to a collective (stop on Ctrl-C, a time-based checkpoint, a
  non-finite loss) is taken from values all-reduced across ranks (``consensus``), so no rank
  waits in a collective the others skipped. A rank that raised makes no further collectives:
  it exits, the peers' next collective fails (gloo: "connection closed"; torchrun also stops
  the remaining workers) and they mark the record ``failed`` too.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

# Collectives wait this long for a slow peer (rank 0 validating, evaluating between the runs
# of a sweep) before failing; HARNESS_DIST_TIMEOUT_MIN overrides it.
DEFAULT_TIMEOUT_MIN = 30.0


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

    def label(self) -> str:
        """``"rank 1 of 2"`` (for messages)."""
        return f"rank {self.rank} of {self.world_size}"


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by it)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def env_rank() -> int:
    """RANK as set by torchrun (0 when not launched by it)."""
    try:
        return int(os.environ.get("RANK", "0")) if env_world_size() > 1 else 0
    except ValueError:
        return 0


def is_main_process() -> bool:
    """True on rank 0 or outside torchrun; usable before the process group exists."""
    return env_rank() == 0


def select_local_device() -> None:
    """Under torchrun on a CUDA machine, make ``cuda`` mean this rank's GPU (``LOCAL_RANK``).

    Called before anything touches CUDA, so no rank creates a context on GPU 0 by accident.
    Raises a one-sentence ``ValueError`` when there are more local ranks than GPUs.
    """
    if env_world_size() <= 1 or not torch.cuda.is_available():
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1)))  # the same on every rank
    count = torch.cuda.device_count()
    if max(per_node, local_rank + 1) > count:
        raise ValueError(
            f"torchrun started {per_node} ranks on this machine but it has {count} CUDA device(s); "
            f"use --nproc_per_node={count} or fewer."
        )
    torch.cuda.set_device(local_rank)


def init_distributed(device_type: str) -> DistContext:
    """Initialise the process group when launched by torchrun; a no-op otherwise."""
    world_size = env_world_size()
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        select_local_device()
    if not dist.is_initialized():
        if device_type == "cuda" and not dist.is_nccl_available():
            raise ValueError("this torch build has no NCCL, which data parallelism on CUDA needs; use --device cpu.")
        if device_type != "cuda" and not dist.is_gloo_available():
            raise ValueError("this torch build has no gloo, which data parallelism on the CPU needs; run one process.")
        backend = "nccl" if device_type == "cuda" else "gloo"
        minutes = float(os.environ.get("HARNESS_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN))
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=minutes)}
        if device_type == "cuda":
            kwargs["device_id"] = torch.device("cuda", local_rank)
        dist.init_process_group(**kwargs)
    elif dist.get_world_size() != world_size:
        raise RuntimeError(f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE is {world_size}.")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def consensus(
    means: Sequence[torch.Tensor], flags: Sequence[bool], context: DistContext, device: torch.device
) -> tuple[list[float], list[bool]]:
    """One all-reduce per step: the cross-rank mean of each scalar in ``means`` and the OR of ``flags``.

    Every rank gets the same answers, so a decision taken from them (stop, checkpoint, fail)
    is taken by all ranks at the same step. On one process it returns the inputs.
    """
    values = [m.detach().to(device=device, dtype=torch.float64).reshape(1) for m in means]
    values.append(torch.tensor([float(f) for f in flags], dtype=torch.float64, device=device))
    packed = torch.cat(values)
    if context.enabled:
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    out = packed.tolist()
    n = len(means)
    scale = context.world_size if context.enabled else 1
    return [v / scale for v in out[:n]], [v > 0 for v in out[n:]]


def gather_objects(obj: Any, context: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` on one process."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def main_first(context: DistContext, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 first (to fill a cache once), then on the other ranks.

    If rank 0's call raises, rank 0 re-raises it and the other ranks raise a ``ValueError``
    with the same message (bad input is reported once, by rank 0; see ``harness.cli.run``).
    """
    if not context.enabled:
        return fn()
    result, failure = None, None
    if context.is_main:
        try:
            result = fn()
        except Exception as error:  # reported by rank 0; the others only need to stop
            failure = error
    message = [None if failure is None else f"{type(failure).__name__}: {failure}"]
    dist.broadcast_object_list(message, src=0)
    if failure is not None:
        raise failure
    if message[0] is not None:
        raise ValueError(f"rank 0 failed ({message[0]}).")
    return result if context.is_main else fn()


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown() -> None:
    """Destroy this process's process group, if it made one (under torchrun), so the rank exits cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
