"""The training engine: one loop for pre-training and every fine-tuning method.

``run_locked(run_dir, build)`` takes the run lock (``harness.runs.lock.claim_run``), reuses a
finished run, and otherwise runs the ``Engine`` that ``build`` makes through its phases:
``restore`` (checkpoint, RNG, metrics) → ``write_setup`` (the run kind's files, the ``running``
record) → ``fit`` (the loop of steps with validation, checkpoint and interrupt hooks) →
``finish`` (final checkpoint and validation, the closing record).

Two seams decide what differs between runs:

- the **run kind** (``RunKind``: pre-training in ``harness.training.trainer``, fine-tuning in
  ``harness.training.finetune``): its data, its files and its record fields;
- the **method** (``harness.training.methods``): which parameters train, FLOPs per token,
  checkpoint extras.

The rules every run follows:

- Steps come from the method's training FLOPs per token (``harness.flops.plan_budget``): exactly
  those steps run (FLOPs used ≤ budget).
- Batches are a pure function of (seed, step, micro step, rank): resuming needs only the step.
- A checkpoint (model, optimizer, scheduler, RNG states, step, the method's extras) is written
  every ``checkpoint_interval`` steps or ``checkpoint_minutes``, on SIGINT/SIGTERM, and at the
  end; it loads with ``torch.load(weights_only=True)`` (``harness.runs.run_dir``).
- Nothing is lost on failure: a non-finite loss or an exception marks the record ``failed``
  with the reason and the last good metrics, then ``TrainingFailed`` is raised.
- The parallel strategy (``harness.training.parallel``: single, ddp, fsdp2 for pre-training) prepares
  the model, gives gradient accumulation its no-sync context and under fsdp2 keeps sharded checkpoints.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from harness.device import DeviceSettings
from harness.flops import MFU_ATTENTION_FLOPS, BudgetPlan, plan_budget, plan_tokens
from harness.io import JsonlAppender, WriteFailed
from harness.machine import machine_load
from harness.runs import run_dir as run_files
from harness.runs.lock import claim_run
from harness.runs.records import closing_fields, load_record, utilization_fields, write_final_record, write_record
from harness.runs.validation import check_plan_steps
from harness.training import data_parallel, distributed, sharded_checkpoint
from harness.training.parallel import ParallelStrategy, strategy_for_method
from harness.training.optim import make_optimizer, make_scheduler
from harness.training.placement import Layout, merge_rank_errors, rank_error, restore_rank_rng
from harness.training.step import Outcome, StepResult, StopSignal, accumulate_gradients, apply_gradients

VALIDATION_POINTS = 10  # quick validations per run by default (the kind's eval_interval overrides), plus the last step


class TrainingFailed(RuntimeError):
    """Raised after the record has been marked ``failed``; the message says why.

    ``raised_here``: this process's own exception ended the run (under torchrun that rank
    reports it besides rank 0); False when the run failed for a reason every rank shares (a
    non-finite loss) or another rank's failure stopped it.
    """

    def __init__(self, message: str, *, raised_here: bool = False):
        super().__init__(message)
        self.raised_here = raised_here


@dataclass
class TrainResult:
    run_dir: Path
    record: dict[str, Any]
    reused: bool = False


class RunKind(Protocol):
    """What a kind of run (pre-training, fine-tuning) gives the engine besides the model and the method."""

    run_id: str
    run_dir: Path
    recipe: Any  # harness.runs.spec.Recipe, resolved
    seed: int
    eval_interval: int | None  # steps between quick validations (None: 5 per run)
    checkpoint_interval: int | None  # steps between checkpoints (None: 4 per run)
    checkpoint_minutes: float  # a checkpoint at least this often (wall clock)

    def train_batch(self, step: int, micro: int, batch_size: int, rank: int, world_size: int): ...
    def running_record(self, engine: "Engine") -> dict: ...  # the record while training
    def write_files(self, engine: "Engine") -> None: ...  # config.json, the tokenizer (rank 0)
    def val_loss(self, engine: "Engine") -> float: ...  # a quick validation loss (nats/token)
    def validation_extras(self, engine: "Engine") -> dict: ...  # more columns of a validation point (probes)
    def final_fields(self, engine: "Engine", record: dict) -> dict: ...  # validation fields of the closing record


def existing_record(run_dir: Path) -> dict:
    """The run's record, or {} when there is none (or it is unreadable: the run starts over)."""
    try:
        return load_record(run_dir)
    except (OSError, ValueError):
        return {}


def run_locked(run_dir: Path, build: Callable[[], "Engine"], *, resume: bool = False, force: bool = False,
               wait: bool = False, progress: bool | None = None, stop_after_steps: int | None = None) -> TrainResult:
    """Hold ``run_dir``'s lock; reuse a finished run (unless ``force``), else build the engine and run it.

    An interrupted or failed run with a checkpoint continues from it. ``stop_after_steps``
    simulates an interruption after that many steps (tests). ``wait``: wait for a live process
    holding the lock instead of raising ``RunLocked``.
    """
    with claim_run(run_dir, purpose="run", wait=wait):
        existing = {} if force else existing_record(run_dir)
        if existing.get("status") == "ok":
            return TrainResult(run_dir, existing, reused=True)
        resume = resume or (bool(existing) and run_files.has_checkpoint(run_dir))
        engine = build()
        engine.restore(resume)
        engine.write_setup()
        return engine.finish(engine.fit(stop_after_steps=stop_after_steps, progress=progress))


@dataclass
class Engine:
    """One run's training state across its phases (see the module docstring)."""

    kind: RunKind
    method: Any  # harness.training.methods.Method
    settings: DeviceSettings
    device: torch.device
    dist: distributed.DistContext
    layout: Layout
    config: Any
    model: torch.nn.Module  # as the method prepared it, unwrapped
    flops_parts: dict[str, float]  # training FLOPs per token by part; "total" planned the budget
    plan: BudgetPlan
    optimizer: torch.optim.Optimizer
    scheduler: Any
    mfu_flops_per_token: float = 0.0  # the same, attention counted as PaLM does (for MFU only)
    start_step: int = 0
    wall_before: float = 0.0  # seconds trained before this process (resumed runs)
    parallel: ParallelStrategy | None = None  # single, ddp or fsdp2 (harness.training.parallel)
    train_model: torch.nn.Module | None = None  # the model as stepped: DDP-wrapped / sharded and/or compiled
    record: dict = field(default_factory=dict)
    _t_start: float = 0.0
    _last_checkpoint: float = 0.0

    @classmethod
    def create(cls, kind: RunKind, method, model: torch.nn.Module, placement: tuple, budget_flops: float,
               *, force: bool = False, attention_flops: str = "causal", train_tokens: int | None = None,
               parallel: str | None = None, activation_checkpointing: bool = False) -> "Engine":
        """The plan (the method's FLOPs per token → whole steps) and AdamW over the trainable parameters.

        ``placement``: ``harness.training.placement.place``'s (settings, device, dist, layout);
        ``attention_flops``: how the budget counts attention (``harness.flops.ATTENTION_FLOPS``);
        ``train_tokens``: plan this many tokens instead of ``budget_flops`` (a token-matched arm);
        ``parallel``: the strategy (None: ``single``, or ``ddp`` under torchrun), which prepares the
        model before AdamW is built over its (possibly sharded) parameters;
        ``force`` allows a plan of more than ``harness.runs.validation.MAX_PLANNED_STEPS`` steps.
        """
        settings, device, dist, layout = placement
        recipe, config = kind.recipe, model.config
        tokens_per_forward = layout.micro_batch_per_rank * recipe.seq_len
        parts = method.flops_per_token(config, recipe.seq_len, tokens_per_forward, attention_flops)
        tokens_per_step = recipe.batch_tokens // recipe.seq_len * recipe.seq_len
        plan = (plan_tokens(train_tokens, parts["total"], tokens_per_step) if train_tokens
                else plan_budget(budget_flops, parts["total"], tokens_per_step))
        check_plan_steps(plan.steps, plan.budget_flops, force)
        strategy = strategy_for_method(parallel, method.name, dist, device,
                                       mixed_precision=settings.dtype_name == "bf16")
        train_model = strategy.prepare(model, compile=settings.compile, activation_checkpointing=activation_checkpointing)
        optimizer = make_optimizer(model, recipe, fused=settings.fused_adamw)
        scheduler = make_scheduler(optimizer, plan.steps, recipe)
        engine = cls(kind, method, settings, device, dist, layout, config, model, parts, plan, optimizer, scheduler,
                     parallel=strategy, train_model=train_model)
        engine.mfu_flops_per_token = method.flops_per_token(config, recipe.seq_len, tokens_per_forward,
                                                            MFU_ATTENTION_FLOPS)["total"]
        return engine

    @property
    def eval_interval(self) -> int:
        return self.kind.eval_interval or max(1, self.plan.steps // VALIDATION_POINTS)

    @property
    def checkpoint_interval(self) -> int:
        return self.kind.checkpoint_interval or max(1, self.plan.steps // 4)

    # ---- restore and setup ----------------------------------------------------------------

    def restore(self, resume: bool) -> None:
        """Continue from the run's latest checkpoint, full or sharded (``resume``), else start fresh."""
        checkpoint = self._load_checkpoint() if resume else None
        resumed = checkpoint is not None
        if resumed:
            restore_rank_rng(checkpoint, self.dist, self.kind.seed, self.device.type)
            self.start_step, self.wall_before = int(checkpoint["step"]), float(checkpoint.get("wall_s", 0.0))
            if self.dist.is_main:
                print(run_files.resuming_line(self.kind.run_id, self.start_step, self.plan.steps), file=sys.stderr)
        if self.dist.is_main:
            run_files.start_metrics(self.kind.run_dir, self.start_step if resumed else None)

    def _load_checkpoint(self) -> dict | None:
        """The latest checkpoint loaded into model, optimizer and scheduler (None without one): the strategy
        reads sharded ones; a full ``checkpoint.pt`` goes through the method (LoRA loads its adapters)."""
        run_dir = self.kind.run_dir
        if self.parallel.sharded or sharded_checkpoint.latest_form(run_dir) == "sharded":
            return self.parallel.load_checkpoint(run_dir, self.kind.run_id, self.model, self.optimizer, self.scheduler)
        if not run_files.checkpoint_path(run_dir).exists():
            return None
        return run_files.restore_training_state(run_files.checkpoint_path(run_dir), self.kind.run_id, self.model,
                                                self.optimizer, self.scheduler, load_model=self.method.load_state)

    def write_setup(self) -> None:
        """The ``running`` record, and on rank 0 the run kind's files and that record on disk."""
        self.record = self.kind.running_record(self)
        self.record.setdefault("machine_load", {"start": machine_load()})
        self.record["parallel"] = self.parallel.describe()
        if not self.dist.is_main:
            return
        try:
            self.kind.write_files(self)
            write_record(self.kind.run_dir, self.record)
        except WriteFailed as exc:
            write_final_record(self.kind.run_dir, {**self.record, "status": "failed", "error": str(exc)})
            raise TrainingFailed(f"run {self.kind.run_id} failed: {exc}", raised_here=True) from None

    # ---- the step and the loop ------------------------------------------------------------

    def train_step(self, step: int, stop: StopSignal | None = None) -> StepResult:
        """Optimizer step ``step``: its micro-batches, one cross-rank agreement (mean loss and aux terms,
        whether any rank wants to stop — ``stop``, read after the backward pass — or checkpoint), then
        clip + AdamW + schedule unless the loss is not finite."""
        kind, layout, dist = self.kind, self.layout, self.dist
        batches = (tuple(t.to(self.device, non_blocking=True) for t in kind.train_batch(
                       step, micro, layout.micro_batch_per_rank, dist.rank, dist.world_size))
                   for micro in range(layout.grad_accum))
        lm_loss, aux = accumulate_gradients(self.train_model, batches, layout.grad_accum, self.settings.autocast,
                                            no_sync=self.parallel.no_sync)
        checkpoint_due = (time.perf_counter() - self._last_checkpoint) > kind.checkpoint_minutes * 60
        stop_requested = stop is not None and stop.requested
        means, (stop_agreed, checkpoint_due) = distributed.consensus(
            [lm_loss, *aux.values()], [stop_requested, checkpoint_due], dist, self.device)
        result = StepResult(means[0], dict(zip(aux, means[1:])), stop_agreed, checkpoint_due)
        if math.isfinite(result.loss):
            result.grad_norm = float(apply_gradients(self.model, self.optimizer, kind.recipe.grad_clip, self.scheduler))
        return result

    def fit(self, *, stop_after_steps: int | None = None, progress: bool | None = None) -> Outcome:
        """Steps up to the plan, or until interrupted or failed; an exception becomes the outcome's reason."""
        outcome = Outcome(step=self.start_step)
        self._t_start = self._last_checkpoint = time.perf_counter()
        bar = metrics_file = None
        try:  # everything that can fail is inside: the record then says why
            with StopSignal() as stop:
                bar = self._progress_bar(progress)
                metrics_file = JsonlAppender(self.kind.run_dir / run_files.METRICS_NAME) if self.dist.is_main else None
                distributed.barrier(self.dist)  # rank 0 has written the run directory
                self.model.train()
                self._loop(outcome, stop, metrics_file, bar, stop_after_steps)
        except KeyboardInterrupt:  # a second Ctrl-C mid-step: keep the last checkpoint, record why
            outcome.status, outcome.hard_interrupt = "interrupted", True
            outcome.error = f"stopped by a second interrupt during step {outcome.step + 1}; last checkpoint kept"
        except Exception as exc:
            outcome.status, outcome.error, outcome.raised = "failed", self._failure(exc, outcome.step), exc
        finally:
            if bar is not None:
                bar.close()
            if metrics_file is not None:
                metrics_file.close()
        outcome.wall_s = self.wall_before + time.perf_counter() - self._t_start
        return outcome

    def _loop(self, outcome: Outcome, stop: StopSignal, metrics_file, bar, stop_after_steps: int | None) -> None:
        stop_agreed = False  # under DDP: some rank was interrupted (agreed by all ranks at the last step)
        while outcome.step < self.plan.steps:
            stopping = stop_agreed if self.dist.enabled else stop.requested
            if stopping or (stop_after_steps is not None and outcome.step - self.start_step >= stop_after_steps):
                by = stop.signal_name or ("a signal to another rank" if stop_agreed else "request")
                outcome.status, outcome.error = "interrupted", f"interrupted by {by} after step {outcome.step}"
                return
            t_step = time.perf_counter()
            result = self.train_step(outcome.step, stop)
            stop_agreed = result.stop
            if not math.isfinite(result.loss):
                outcome.status, outcome.error = "failed", f"training loss became {result.loss} at step {outcome.step}"
                return
            outcome.step += 1
            now = time.perf_counter()
            wall_s = self.wall_before + now - self._t_start
            outcome.last_metrics = self._metrics(outcome.step, result, wall_s, now - t_step)
            if metrics_file is not None:  # after last_metrics: a failed append still records the step
                metrics_file.append(outcome.last_metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.3f}",
                            tok_s=f"{self.plan.tokens_per_step / max(now - t_step, 1e-9):.0f}")
            if outcome.step % self.checkpoint_interval == 0 or result.checkpoint_due:
                self.save_checkpoint(outcome.step, wall_s)
                self._last_checkpoint = now

    def _metrics(self, step: int, result: StepResult, wall_s: float, step_s: float) -> dict:
        """The step's metrics line (with a quick validation loss every ``eval_interval`` steps, rank 0)."""
        plan = self.plan
        metrics = {
            "step": step,
            "tokens": step * plan.tokens_per_step,
            "flops": step * plan.flops_per_step,
            "wall_s": round(wall_s, 4),
            "step_s": round(step_s, 4),
            "train_loss": result.loss,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": result.grad_norm,
            **result.aux,
        }
        if self.validates_here and (step % self.eval_interval == 0 or step == plan.steps):
            metrics.update(val_loss=self.kind.val_loss(self), **self.kind.validation_extras(self))
        return metrics

    @property
    def validates_here(self) -> bool:
        """Rank 0 validates; under fsdp2 every rank runs the forward with it (the weights are sharded)."""
        return self.dist.is_main or self.parallel.sharded

    def _progress_bar(self, progress: bool | None):
        """A bar on a terminal, a line every 30 s otherwise (``harness.progress``); rank 0 only."""
        from harness.progress import progress_bar

        return progress_bar(self.plan.steps, self.start_step, show=progress if self.dist.is_main else False,
                            desc=f"{self.method.name if self.method.name != 'pretrain' else 'training'} {self.kind.run_id}")

    def _failure(self, exc: Exception, step: int) -> str:
        if self.dist.enabled:
            return rank_error(self.dist, exc, step)
        if isinstance(exc, WriteFailed):
            return f"{exc} (at step {step}); the last good checkpoint is kept"
        return f"{type(exc).__name__}: {exc} (at step {step})"

    def save_checkpoint(self, step: int, wall_s: float, *, final: bool = False) -> None:
        """Plain model weights, the method's extras, optimizer, scheduler, step, wall time and every rank's RNG:
        rank 0's ``checkpoint.pt``, or under fsdp2 every rank's shard until the ``final`` one."""
        rng_by_rank = data_parallel.gather_rng_states(self.device, self.dist)  # a collective: every rank
        extras = {
            "scheduler": self.scheduler.state_dict(),
            "step": step,
            "wall_s": wall_s,
            **data_parallel.rank_rng_fields(rng_by_rank, self.dist),
            "config": self.config.to_dict(),
            "run_id": self.kind.run_id,
        }
        if self.parallel.sharded:
            self.parallel.save_checkpoint(self.kind.run_dir, self.model, self.optimizer, extras, final=final)
            return
        if not self.dist.is_main:
            return
        payload = {"model": self.method.plain_state(self.model),  # the unwrapped (for LoRA merged) model
                   "optimizer": self.optimizer.state_dict(), **extras, **self.method.checkpoint_extras(self.model)}
        run_files.save_checkpoint(self.kind.run_dir, payload)
        sharded_checkpoint.remove_sharded(self.kind.run_dir)  # older than this file (resumed under another strategy)

    # ---- finish ---------------------------------------------------------------------------

    def finish(self, outcome: Outcome) -> TrainResult:
        """Final checkpoint, the closing record (final validation when ``ok``); raises ``TrainingFailed`` on failure."""
        run_dir = self.kind.run_dir
        if outcome.status != "failed" and not outcome.hard_interrupt:  # else the weights may be mid-update
            try:
                self.save_checkpoint(outcome.step, outcome.wall_s, final=outcome.status == "ok")
            except WriteFailed as exc:
                outcome.status = "failed"
                outcome.error = f"{exc} (the final checkpoint, step {outcome.step}); the last good checkpoint is kept"
        record = self._closing_record(outcome)
        rank_raised = self.dist.enabled and outcome.raised is not None
        if self.dist.is_main or rank_raised:  # a rank that raised records why before it exits
            if rank_raised:
                run_dir.mkdir(parents=True, exist_ok=True)
                record["error"] = merge_rank_errors(run_dir, record["error"])
            record = write_final_record(run_dir, record)
        if not rank_raised:  # after an exception the peers may be gone: no more collectives
            distributed.barrier(self.dist)
        if outcome.raised is not None or record["status"] == "failed":
            raise TrainingFailed(f"run {self.kind.run_id} failed: {record['error']}; "
                                 f"the record in {run_dir} keeps its metrics.",
                                 raised_here=outcome.raised is not None) from outcome.raised
        return TrainResult(run_dir, record)

    def _closing_record(self, outcome: Outcome) -> dict:
        record = {**self.record, **closing_fields(
            status=outcome.status, error=outcome.error, step=outcome.step, start_step=self.start_step, plan=self.plan,
            wall_s=outcome.wall_s, wall_before=self.wall_before, last_metrics=outcome.last_metrics)}
        record["machine_load"] = {**record["machine_load"], "end": machine_load()}
        # tokens_per_s counts the global batch (all ranks); MFU is against all ranks' peak
        peak = self.settings.peak_flops_per_s() if self.dist.is_main else None
        # MFU in PaLM's convention (attention_flops=full), whatever the budget counted
        record.update(utilization_fields(record["tokens_per_s"], self.mfu_flops_per_token, peak,
                                         self.dist.world_size))
        if outcome.status == "ok" and self.validates_here:  # rank 0 evaluates (fsdp2: all ranks); others wait
            record.update(self.kind.final_fields(self, record))
            if self.dist.is_main:
                self.method.save_artifacts(self.model, self.kind.run_dir)
        return record
