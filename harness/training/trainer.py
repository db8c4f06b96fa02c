"""The training loop: a FLOP budget → planned steps → metrics, checkpoints and a record.

One loop for every architecture: the model's forward contract returns the total loss
(LM cross-entropy + weighted auxiliary terms), so nothing here special-cases MoE.

``train(spec, results_dir)`` takes the run lock, reuses a finished run, and otherwise runs
the ``Trainer``'s phases: ``setup`` (device, ranks, data, model, plan, optimizer) →
``restore`` (checkpoint, RNG, metrics) → ``write_setup`` (config, tokenizer, the ``running``
record) → ``fit`` (the loop of ``train_step``s with validation, checkpoint and interrupt
hooks) → ``finish`` (final checkpoint and validation, the closing record).

- Steps come from ``harness.flops.plan_budget`` with the analytic training FLOPs per token
  at the run's sequence length; the run stops after exactly those steps, so FLOPs used
  ≤ budget, within one step of it.
- Batches are a pure function of (seed, step, micro step, rank): resuming needs only the
  step, and every architecture at one seed sees the same token order.
- A checkpoint (model, optimizer, scheduler, RNG states, step) is written every
  ``checkpoint_interval`` steps or ``checkpoint_minutes``, on SIGINT/SIGTERM, and at the end;
  it loads with ``torch.load(weights_only=True)`` (``harness.runs.run_dir``).
- Nothing is lost on failure: a non-finite loss or an exception marks the record
  ``failed`` with the reason and the last good metrics.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from architectures import build_from_config
from harness.training import distributed
from harness.training import heldout
from harness.runs import run_dir as run_files
from harness.data import get_batch, prepare_data
from harness.device import DeviceSettings
from harness.flops import forward_flops_per_token, plan_budget, train_flops_per_token
from harness.io import JsonlAppender, WriteFailed, write_json_atomic
from harness.machine import machine_load
from harness.training.optim import make_optimizer, make_scheduler
from harness.training.parallel import ParallelStrategy, make_strategy
from harness.training.placement import Layout, merge_rank_errors, place, rank_error, rank_seed, restore_rank_rng
from harness.runs.records import (closing_fields, load_record, training_record, utilization_fields, write_final_record,
                             write_record)
from harness.runs.lock import hold_run_lock, take_over_stale
from harness.runs.spec import RunSpec
from harness.training.step import Outcome, StepResult, StopSignal, accumulate_gradients, apply_gradients
from harness.runs.validation import check_plan_steps, quality_warnings


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


def train(
    spec: RunSpec,
    results_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool | None = None,
    stop_after_steps: int | None = None,
    wait: bool = False,
) -> TrainResult:
    """Train ``spec`` into ``results_dir/<run_id>``; returns the run directory and record.

    A finished run (record status ``ok``) is reused unless ``force``; ``force`` also allows a
    plan of more than ``harness.runs.validation.MAX_PLANNED_STEPS`` steps. An interrupted or failed
    run with a checkpoint continues from it. ``stop_after_steps`` simulates an interruption
    after that many steps (tests, smoke runs). The run directory is locked for the whole call
    (``harness.runs.lock``): if another live process holds it, ``RunLocked`` is raised, or with
    ``wait`` this waits for it.
    """
    run_dir = Path(results_dir) / spec.run_id()
    with hold_run_lock(run_dir, wait=wait, purpose="run", on_wait=lambda note: print(note, file=sys.stderr)):
        if distributed.env_rank() == 0:
            note = take_over_stale(run_dir)
            if note:
                print(note, file=sys.stderr)
        existing = {} if force else _existing_record(run_dir)
        if existing.get("status") == "ok":
            return TrainResult(run_dir, existing, reused=True)
        resume = resume or (bool(existing) and run_files.has_checkpoint(run_dir))
        trainer = Trainer.setup(spec, run_dir, force=force)
        trainer.restore(resume)
        trainer.write_setup()
        return trainer.finish(trainer.fit(stop_after_steps=stop_after_steps, progress=progress))


def _existing_record(run_dir: Path) -> dict:
    """The run's record, or {} when there is none (or it is unreadable: the run starts over)."""
    try:
        return load_record(run_dir)
    except (FileNotFoundError, ValueError):
        return {}


@dataclass
class Trainer:
    """One pre-training run's state across its phases (see the module docstring)."""

    spec: RunSpec
    run_dir: Path
    settings: DeviceSettings
    device: torch.device
    dist: distributed.DistContext
    layout: Layout
    data: Any
    config: Any
    model: torch.nn.Module  # the model itself (sharded in place under fsdp2): validation, counts, state
    parallel: ParallelStrategy  # single, ddp or fsdp2 (harness.training.parallel)
    train_model: torch.nn.Module  # the model as stepped: DDP-wrapped and/or compiled
    plan: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    start_step: int = 0
    wall_before: float = 0.0  # seconds trained before this process (resumed runs)
    record: dict = field(default_factory=dict)
    _t_start: float = 0.0
    _last_checkpoint: float = 0.0

    # ---- setup ----------------------------------------------------------------------------

    @classmethod
    def setup(cls, spec: RunSpec, run_dir: Path, *, force: bool = False) -> "Trainer":
        """Device and ranks, data (rank 0 first), the model (same init on every rank) prepared by the
        parallel strategy, the plan, AdamW (on the prepared, possibly sharded, parameters)."""
        settings, device, dist, layout = place(spec)
        data = distributed.main_first(dist, lambda: prepare_data(spec.data, vocab_size=spec.vocab_size, seed=spec.seed))
        config = spec.model_config(data.tokenizer.vocab_size)
        torch.manual_seed(spec.seed)
        model = build_from_config(config).to(device)
        if dist.rank > 0:  # same initial weights everywhere, but each rank its own dropout stream
            torch.manual_seed(rank_seed(spec.seed, dist.rank))
        recipe = spec.recipe
        tokens_per_step = recipe.batch_tokens // recipe.seq_len * recipe.seq_len
        plan = plan_budget(spec.budget_flops, train_flops_per_token(config, recipe.seq_len), tokens_per_step)
        check_plan_steps(plan.steps, spec.budget_flops, force)
        parallel = make_strategy(spec.parallel, dist, device, mixed_precision=settings.dtype_name == "bf16")
        train_model = parallel.prepare(model, compile=settings.compile,
                                       activation_checkpointing=spec.activation_checkpointing)
        optimizer = make_optimizer(model, recipe, fused=settings.fused_adamw)
        scheduler = make_scheduler(optimizer, plan.steps, recipe)
        return cls(spec, Path(run_dir), settings, device, dist, layout, data, config, model, parallel, train_model, plan,
                   optimizer, scheduler)

    @property
    def eval_interval(self) -> int:
        return self.spec.eval_interval or max(1, self.plan.steps // 5)

    @property
    def checkpoint_interval(self) -> int:
        return self.spec.checkpoint_interval or max(1, self.plan.steps // 4)

    def restore(self, resume: bool) -> None:
        """Continue from the run's latest checkpoint, full or sharded (``resume``), else start fresh."""
        checkpoint = None
        if resume:
            checkpoint = self.parallel.load_checkpoint(self.run_dir, self.spec.run_id(), self.model, self.optimizer,
                                                       self.scheduler)
        if checkpoint is not None:
            restore_rank_rng(checkpoint, self.dist, self.spec.seed, self.device.type)
            self.start_step, self.wall_before = int(checkpoint["step"]), float(checkpoint.get("wall_s", 0.0))
        if self.dist.is_main:
            run_files.start_metrics(self.run_dir, self.start_step if checkpoint is not None else None)

    def write_setup(self) -> None:
        """The ``running`` record, and on rank 0 config.json, the tokenizer and that record on disk."""
        spec, config, seq_len = self.spec, self.config, self.spec.recipe.seq_len
        self.record = training_record(
            spec, counts=self.model.param_counts(),
            config_flops={"forward_flops_per_token": forward_flops_per_token(config, seq_len),
                          "train_flops_per_token": self.plan.train_flops_per_token},
            plan=self.plan, start_step=self.start_step, data=self.data.describe(),
            layout={"grad_accum": self.layout.grad_accum, "world_size": self.dist.world_size,
                    "micro_batch_per_rank": self.layout.micro_batch_per_rank},
            settings=self.settings,
            kernels=self.model.kernels(seq_len, self.device) if hasattr(self.model, "kernels") else {},
        )
        self.record["parallel"] = self.parallel.describe()
        if not self.dist.is_main:
            return
        try:
            write_json_atomic(self.run_dir / run_files.CONFIG_NAME,
                              {"run": spec.to_dict(), "model": config.to_dict(), "run_id": spec.run_id()})
            self.data.tokenizer.save(self.run_dir / run_files.TOKENIZER_DIR)
            write_record(self.run_dir, self.record)
        except WriteFailed as exc:
            write_final_record(self.run_dir, {**self.record, "status": "failed", "error": str(exc)})
            raise TrainingFailed(f"run {spec.run_id()} failed: {exc}", raised_here=True) from None

    # ---- the step and the loop ------------------------------------------------------------

    def train_step(self, step: int, stop: StopSignal | None = None) -> StepResult:
        """Optimizer step ``step``: its micro-batches, one cross-rank agreement (mean loss and aux terms,
        whether any rank wants to stop — ``stop``, read after the backward pass — or checkpoint), then
        clip + AdamW + schedule unless the loss is not finite."""
        recipe, rank = self.spec.recipe, self.dist.rank
        batches = (
            tuple(t.to(self.device, non_blocking=True) for t in get_batch(
                self.data.train_tokens, step, self.layout.micro_batch_per_rank, recipe.seq_len, seed=self.spec.seed,
                micro_step=micro, rank=rank, world_size=self.dist.world_size))
            for micro in range(self.layout.grad_accum)
        )
        lm_loss, aux = accumulate_gradients(self.train_model, batches, self.layout.grad_accum, self.settings.autocast,
                                            no_sync=self.parallel.no_sync)
        checkpoint_due = (time.perf_counter() - self._last_checkpoint) > self.spec.checkpoint_minutes * 60
        stop_requested = stop is not None and stop.requested
        means, (stop_agreed, checkpoint_due) = distributed.consensus(
            [lm_loss, *aux.values()], [stop_requested, checkpoint_due], self.dist, self.device
        )
        result = StepResult(means[0], dict(zip(aux, means[1:])), stop_agreed, checkpoint_due)
        if math.isfinite(result.loss):
            grad_norm = apply_gradients(self.model, self.optimizer, recipe.grad_clip, self.scheduler)
            result.grad_norm = float(grad_norm)
        return result

    def fit(self, *, stop_after_steps: int | None = None, progress: bool | None = None) -> Outcome:
        """Steps up to the plan, or until interrupted or failed; an exception becomes the outcome's reason."""
        outcome = Outcome(step=self.start_step)
        self._t_start = self._last_checkpoint = time.perf_counter()
        bar = metrics_file = None
        try:  # everything that can fail is inside: the record then says why
            with StopSignal() as stop:
                bar = self._progress_bar(progress)
                metrics_file = JsonlAppender(self.run_dir / run_files.METRICS_NAME) if self.dist.is_main else None
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
        plan, recipe = self.plan, self.spec.recipe
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
        if self._validates_here and (step % self.eval_interval == 0 or step == plan.steps):
            micro_bs, seq_len = recipe.micro_batch_size, recipe.seq_len
            metrics["val_loss"] = heldout.validation_metrics(
                self.model, self.data, seq_len, micro_bs, self.device, self.settings.autocast,
                max_tokens=16 * seq_len * micro_bs,
            )["val_loss"]
        return metrics

    @property
    def _validates_here(self) -> bool:
        """Rank 0 validates; under fsdp2 every rank runs the forward with it (the weights are sharded)."""
        return self.dist.is_main or self.parallel.sharded

    def _progress_bar(self, progress: bool | None):
        from tqdm.auto import tqdm

        show = self.dist.is_main and (sys.stderr.isatty() if progress is None else progress)
        return tqdm(total=self.plan.steps, initial=self.start_step, disable=not show, unit="step", dynamic_ncols=True)

    def _failure(self, exc: Exception, step: int) -> str:
        if self.dist.enabled:
            return rank_error(self.dist, exc, step)
        if isinstance(exc, WriteFailed):
            return f"{exc} (at step {step}); the last good checkpoint is kept"
        return f"{type(exc).__name__}: {exc} (at step {step})"

    def save_checkpoint(self, step: int, wall_s: float, *, final: bool = False) -> None:
        """Model, optimizer, scheduler, step, wall time and every rank's RNG, written by the parallel strategy
        (rank 0's ``checkpoint.pt``, or every rank's shard under fsdp2 until the ``final`` one)."""
        rng_by_rank = distributed.gather_objects(run_files.rng_state(self.device.type), self.dist)  # every rank
        extras = {
            "scheduler": self.scheduler.state_dict(),
            "step": step,
            "wall_s": wall_s,
            "rng": rng_by_rank[0],
            "config": self.config.to_dict(),
            "run_id": self.spec.run_id(),
        }
        if self.dist.enabled:
            extras["rng_by_rank"] = rng_by_rank
            extras["world_size"] = self.dist.world_size
        self.parallel.save_checkpoint(self.run_dir, self.model, self.optimizer, extras, final=final)

    # ---- finish ---------------------------------------------------------------------------

    def finish(self, outcome: Outcome) -> TrainResult:
        """Final checkpoint, the closing record (final validation when ``ok``); raises ``TrainingFailed`` on failure."""
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
                self.run_dir.mkdir(parents=True, exist_ok=True)
                record["error"] = merge_rank_errors(self.run_dir, record["error"])
            record = write_final_record(self.run_dir, record)
        if not rank_raised:  # after an exception the peers may be gone: no more collectives
            distributed.barrier(self.dist)
        if outcome.raised is not None or record["status"] == "failed":
            raise TrainingFailed(f"run {self.spec.run_id()} failed: {record['error']}; "
                                 f"the record in {self.run_dir} keeps its metrics.",
                                 raised_here=outcome.raised is not None) from outcome.raised
        return TrainResult(self.run_dir, record)

    def _closing_record(self, outcome: Outcome) -> dict:
        record = {**self.record, **closing_fields(
            status=outcome.status, error=outcome.error, step=outcome.step, start_step=self.start_step, plan=self.plan,
            wall_s=outcome.wall_s, wall_before=self.wall_before, last_metrics=outcome.last_metrics)}
        record["machine_load"] = {**record["machine_load"], "end": machine_load()}
        # tokens_per_s counts the global batch (all ranks); MFU is against all ranks' peak
        peak = self.settings.peak_flops_per_s() if self.dist.is_main else None
        record.update(utilization_fields(record["tokens_per_s"], self.plan.train_flops_per_token, peak,
                                         self.dist.world_size))
        if outcome.status == "ok" and self._validates_here:  # rank 0 evaluates (fsdp2: all ranks); the others wait
            recipe = self.spec.recipe
            final = heldout.validation_metrics(self.model, self.data, recipe.seq_len, recipe.micro_batch_size,
                                               self.device, self.settings.autocast)
            record["final_val_loss"] = final.pop("val_loss")
            record.update(final)
            record.update(heldout.unigram_baseline(self.data, final))
            record["warnings"] = quality_warnings(record)
        return record
