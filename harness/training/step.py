"""One optimizer step and the stop signal, shared by pre-training, fine-tuning and the benchmark.

A step is ``accumulate_gradients`` (forward + backward over the step's micro-batches, each
loss scaled by 1 / micro-steps, so the gradient is the mean over the step's rows) followed by
``apply_gradients`` (global-norm clipping, the optimizer and scheduler step, zeroed grads).
The trainer puts its cross-rank agreement (``harness.training.distributed.consensus``) in between.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn


@dataclass
class StepResult:
    """One optimizer step, agreed across ranks: mean LM loss (nats), aux terms, and the ranks' flags."""

    loss: float
    aux: dict[str, float]
    stop: bool = False  # some rank was interrupted
    checkpoint_due: bool = False  # some rank's checkpoint clock ran out
    grad_norm: float | None = None  # None when the step was not applied (non-finite loss)


@dataclass
class Outcome:
    """How a training loop ended: status, reason, the last completed step and its metrics, and wall time (s)."""

    step: int
    status: str = "ok"
    error: str | None = None
    wall_s: float = 0.0
    last_metrics: dict = field(default_factory=dict)
    hard_interrupt: bool = False  # a second Ctrl-C mid-step: the weights may be mid-update
    raised: BaseException | None = None


def model_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """(loss to differentiate, LM loss, auxiliary terms) of a harness model's forward contract."""
    out = model(x, targets=y)
    return out.loss, out.lm_loss, out.aux


def accumulate_gradients(
    train_model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    micro_steps: int,
    autocast: Callable,
    *,
    no_sync: Callable | None = None,
    losses: Callable = model_losses,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Backward over ``micro_steps`` micro-batches; returns the mean LM loss and auxiliary terms (detached).

    ``no_sync`` (DDP's) wraps every micro-step but the last, so gradients are all-reduced once.
    ``losses(model, x, y)`` returns (loss to differentiate, LM loss, aux dict).
    """
    lm_total: torch.Tensor | None = None
    aux_totals: dict[str, torch.Tensor] = {}
    for micro, (x, y) in enumerate(batches):
        sync = no_sync() if no_sync is not None and micro < micro_steps - 1 else contextlib.nullcontext()
        with sync, autocast():
            loss, lm_loss, aux = losses(train_model, x, y)
            loss = loss / micro_steps
        loss.backward()
        if lm_total is None:
            lm_total = torch.zeros((), device=x.device)
        lm_total += lm_loss.detach() / micro_steps
        for name, value in aux.items():
            aux_totals[name] = aux_totals.get(name, 0.0) + value.detach().double() / micro_steps
    assert lm_total is not None, "a step needs at least one micro-batch"
    return lm_total, aux_totals


def apply_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None,
                    scheduler=None) -> torch.Tensor | None:
    """Clip to global norm ``grad_clip`` (none when 0/None), step the optimizer (and scheduler), zero grads.

    Returns the gradient norm before clipping (None without clipping).
    """
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip else None
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


class StopSignal:
    """``with StopSignal() as stop``: SIGINT/SIGTERM set ``stop.requested`` (the loop stops at the next
    step boundary, checkpoint kept); a second one raises ``KeyboardInterrupt`` at once.

    ``stop.signal_name`` names the first signal. The previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.requested, self.signal_name, self.previous = False, "", {}

    def _handler(self, signum, frame) -> None:
        if self.requested:  # second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested, self.signal_name = True, signal.Signals(signum).name

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
