"""The training loop: a FLOP budget → planned steps → metrics, checkpoints and a record.

One loop for every architecture: the model's forward contract returns the total loss
(LM cross-entropy + weighted auxiliary terms), so nothing here special-cases MoE.

- Steps come from ``harness.flops.plan_budget`` with the analytic training FLOPs per token
  at the run's sequence length; the run stops after exactly those steps, so FLOPs used
  ≤ budget, within one step of it.
- Batches are a pure function of (seed, step, micro step, rank): resuming needs only the
  step, and every architecture at one seed sees the same token order.
- A checkpoint (model, optimizer, scheduler, RNG states, step) is written every
  ``checkpoint_interval`` steps or ``checkpoint_minutes``, on SIGINT/SIGTERM, and at the end;
  it loads with ``torch.load(weights_only=True)``.
- Nothing is lost on failure: a non-finite loss or an exception marks the record
  ``failed`` with the reason and the last good metrics.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from architectures import build_from_config
from harness import distributed
from harness.data import get_batch, prepare_data, unigram_cross_entropy
from harness.device import configure_device
from harness.flops import forward_flops_per_token, plan_budget, train_flops_per_token
from harness.io import JsonlAppender, WriteFailed, torch_save_atomic, write_json_atomic, write_text_atomic
from harness.machine import machine_load
from harness.records import git_commit, load_record, write_record
from harness.run_lock import hold_run_lock, take_over_stale
from harness.spec import RunSpec
from harness.validation import check_plan_steps, quality_warnings

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
MAX_EVAL_TOKENS = 131072
LN2 = math.log(2)


class TrainingFailed(RuntimeError):
    """Raised after the record has been marked ``failed``; the message says why."""


@dataclass
class TrainResult:
    run_dir: Path
    record: dict[str, Any]
    reused: bool = False


@dataclass
class _Interrupt:
    requested: bool = False
    signal_name: str = ""
    previous: dict = field(default_factory=dict)

    def install(self) -> None:
        def handler(signum, frame):
            if self.requested:  # second Ctrl-C: stop at once
                raise KeyboardInterrupt
            self.requested, self.signal_name = True, signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def restore(self) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


def lr_at(step: int, total_steps: int, spec: RunSpec) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine to ``min_lr_ratio``·lr."""
    recipe = spec.recipe
    warmup = max(1, round(recipe.warmup_fraction * total_steps))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    floor = recipe.min_lr_ratio * recipe.lr
    return floor + 0.5 * (recipe.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, spec: RunSpec, fused: bool) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (≥ 2 dims), not on biases or LayerNorm gains."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    recipe = spec.recipe
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2), eps=recipe.eps, **kwargs)


@torch.no_grad()
def token_losses(model, tokens: np.ndarray, seq_len: int, batch_size: int, device, autocast, max_tokens: int) -> np.ndarray:
    """Per-token LM loss (nats) over non-overlapping windows of ``tokens``.

    Element i is the loss of predicting ``tokens[i + 1]``; windows cover the first
    ``max_tokens`` predictions (whole windows only).
    """
    n_windows = min((len(tokens) - 1) // seq_len, max(1, max_tokens // seq_len))
    if n_windows < 1:
        raise ValueError(f"the validation split has {len(tokens)} tokens, fewer than one window of {seq_len + 1}.")
    was_training = model.training
    model.eval()
    losses = []
    for first in range(0, n_windows, batch_size):
        starts = range(first * seq_len, min(n_windows, first + batch_size) * seq_len, seq_len)
        chunk = torch.from_numpy(np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts]))
        chunk = chunk.to(device)
        with autocast():
            logits = model(chunk[:, :-1]).logits
        loss = F.cross_entropy(logits.float().transpose(1, 2), chunk[:, 1:], reduction="none")
        losses.append(loss.reshape(-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(losses)


def validation_metrics(model, data, seq_len, batch_size, device, autocast, max_tokens=MAX_EVAL_TOKENS) -> dict:
    """Validation loss, and bits per byte (text) or excess loss over the entropy floor (synthetic)."""
    losses = token_losses(model, data.val_tokens, seq_len, batch_size, device, autocast, max_tokens)
    n = len(losses)
    metrics: dict[str, Any] = {"val_loss": float(losses.mean()), "val_tokens": n}
    if data.kind == "text":
        evaluated = np.asarray(data.val_tokens[1 : n + 1])
        # end-of-text separators are not text: they carry no bytes (as in PreparedData.val_bytes)
        text_tokens = evaluated[evaluated != data.tokenizer.eot_id].tolist()
        n_bytes = len(data.tokenizer.decode(text_tokens).encode("utf-8"))
        metrics["val_bytes"] = n_bytes
        metrics["val_bpb"] = float(losses.sum() / (LN2 * n_bytes))
    else:
        floor = np.asarray(data.val_entropy[1 : n + 1], dtype=np.float64)
        segments = np.asarray(data.val_segments[1 : n + 1])
        metrics["entropy_floor"] = float(floor.mean())
        metrics["excess_loss"] = float(losses.mean() - floor.mean())
        per_segment = {}
        for index, name in enumerate(data.segment_names):
            mask = segments == index
            if mask.any():
                per_segment[name] = {
                    "loss": float(losses[mask].mean()),
                    "entropy_floor": float(floor[mask].mean()),
                    "excess_loss": float(losses[mask].mean() - floor[mask].mean()),
                    "tokens": int(mask.sum()),
                }
        metrics["per_segment"] = per_segment
    return metrics


def _rng_state(device_type: str) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict, device_type: str) -> None:
    torch.set_rng_state(state["torch"])
    if device_type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


# ---- data parallelism (see harness.distributed) ---------------------------------------------


def _micro_batch_per_rank(rows: int, micro_bs: int, seq_len: int, batch_tokens: int, world_size: int) -> int:
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


def _rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The torch seed of rank > 0 (dropout stream), a function of the run seed, rank and step."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def _restore_rank_rng(checkpoint: dict, dist, seed: int, device_type: str) -> None:
    """This rank's RNG state from a checkpoint (written at this or another world size)."""
    by_rank = checkpoint.get("rng_by_rank") or [checkpoint["rng"]]
    if len(by_rank) == dist.world_size or dist.rank == 0:
        _set_rng_state(by_rank[dist.rank], device_type)
    else:  # resumed at another world size: same data order, a fresh dropout stream for this rank
        torch.manual_seed(_rank_seed(seed, dist.rank, int(checkpoint["step"])))


def _rank_error(dist, exc: BaseException, step: int) -> str:
    """``rank 1 of 2: RuntimeError: <first line> (at step 3)``."""
    lines = str(exc).strip().splitlines()
    return f"{dist.label()}: {type(exc).__name__}: {lines[0][:300] if lines else ''} (at step {step})"


def _merge_rank_errors(run_dir: Path, error: str) -> str:
    """Keep the error a peer rank already recorded (the cause) ahead of this rank's (often the effect)."""
    try:
        existing = load_record(run_dir)
    except (OSError, ValueError):
        return error
    previous = existing.get("error") or ""
    if existing.get("status") == "failed" and previous and error not in previous:
        return f"{previous}; then {error}"
    return error


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; a corrupt file is one clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated/garbled files
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"checkpoint {path} cannot be loaded ({type(error).__name__}: {first}); "
                         f"delete it to restart the run from scratch.") from None


def _step_of(line: str) -> int | None:
    try:
        item = json.loads(line)
    except ValueError:  # a line cut short by a crash
        return None
    return item.get("step", 0) if isinstance(item, dict) else None


def _trim_metrics(path: Path, last_step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint's step (and any torn line)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if (_step_of(line) is not None and _step_of(line) <= last_step)]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def restore_checkpoint(path: Path, run_id: str, model, optimizer, scheduler) -> dict:
    """Load ``path`` into the model, optimizer and scheduler; a corrupt or foreign file is one ``ValueError``."""
    checkpoint = load_checkpoint(path)
    owner = checkpoint.get("run_id") if isinstance(checkpoint, dict) else None
    if owner != run_id:
        raise ValueError(f"checkpoint {path} belongs to run {owner or '(unknown)'}, not {run_id}; "
                         f"move it away to start this run from scratch.")
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        int(checkpoint["step"])
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"checkpoint {path} does not fit this model ({first}); "
                         f"move it away to start this run from scratch.") from None
    return checkpoint


def _write_setup(run_dir: Path, run_id: str, files: list, record: dict) -> None:
    """config.json, the tokenizer and the ``running`` record; a failed write ends in a ``failed`` record."""
    try:
        for write in files:
            write()
        write_record(run_dir, record)
    except WriteFailed as exc:
        _write_final_record(run_dir, {**record, "status": "failed", "error": str(exc)})
        raise TrainingFailed(f"run {run_id} failed: {exc}") from None


def _write_final_record(run_dir: Path, record: dict) -> dict:
    """Write the closing record; if that fails, try once more as ``failed`` (naming why) and return it."""
    try:
        write_record(run_dir, record)
        return record
    except WriteFailed as exc:
        failed = {**record, "status": "failed", "error": f"{exc}" + (f"; {record['error']}" if record.get("error") else "")}
        write_record(run_dir, failed)  # a second failure propagates: one line, and `results` shows it as stale
        return failed


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
    plan of more than ``harness.validation.MAX_PLANNED_STEPS`` steps. ``stop_after_steps``
    simulates an interruption after that many steps (tests, smoke runs). The run directory
    is locked for the whole call (``harness.run_lock``): if another live process holds it,
    ``RunLocked`` is raised, or with ``wait`` this waits for it.
    """
    run_dir = Path(results_dir) / spec.run_id()
    with hold_run_lock(run_dir, wait=wait, purpose="run", on_wait=lambda note: print(note, file=sys.stderr)):
        if distributed.env_rank() == 0:
            note = take_over_stale(run_dir)
            if note:
                print(note, file=sys.stderr)
        return _train(spec, results_dir, resume=resume, force=force, progress=progress,
                      stop_after_steps=stop_after_steps)


def _train(
    spec: RunSpec,
    results_dir: Path,
    *,
    resume: bool,
    force: bool,
    progress: bool | None,
    stop_after_steps: int | None,
) -> TrainResult:
    """``train`` inside the run lock."""
    run_id = spec.run_id()
    run_dir = Path(results_dir) / run_id
    record_file = run_dir / "record.json"
    if record_file.exists() and not force:
        try:
            existing = load_record(run_dir)
        except ValueError:
            existing = {}
        if existing.get("status") == "ok":
            return TrainResult(run_dir, existing, reused=True)
        if existing and not resume and (run_dir / CHECKPOINT_NAME).exists():
            resume = True  # an interrupted or failed run continues from its checkpoint

    if spec.device != "cpu":
        distributed.select_local_device()  # under torchrun: "cuda" is this rank's GPU from here on
    settings = configure_device(spec.device, spec.dtype, compile=spec.compile)
    device = torch.device(settings.device)
    recipe = spec.recipe
    micro_bs, seq_len = recipe.micro_batch_size, recipe.seq_len
    rows_per_step = recipe.batch_tokens // seq_len
    world_size = distributed.env_world_size()  # checked before the ranks rendezvous
    rank_micro_bs = _micro_batch_per_rank(rows_per_step, micro_bs, seq_len, recipe.batch_tokens, world_size)
    grad_accum = rows_per_step // (rank_micro_bs * world_size)
    dist = distributed.init_distributed(device.type)
    if dist.enabled and settings.device == "cuda":
        device = torch.device("cuda", dist.local_rank)

    # rank 0 prepares (and caches) the data first; the other ranks then read the cache
    data = distributed.main_first(dist, lambda: prepare_data(spec.data, vocab_size=spec.vocab_size, seed=spec.seed))
    config = spec.model_config(data.tokenizer.vocab_size)
    torch.manual_seed(spec.seed)
    model = build_from_config(config).to(device)
    if dist.rank > 0:  # same initial weights everywhere, but each rank its own dropout stream
        torch.manual_seed(_rank_seed(spec.seed, dist.rank))
    counts = model.param_counts()
    flops_per_token = train_flops_per_token(config, seq_len)
    plan = plan_budget(spec.budget_flops, flops_per_token, rows_per_step * seq_len)
    check_plan_steps(plan.steps, spec.budget_flops, force)
    eval_interval = spec.eval_interval or max(1, plan.steps // 5)
    checkpoint_interval = spec.checkpoint_interval or max(1, plan.steps // 4)

    optimizer = make_optimizer(model, spec, fused=settings.fused_adamw)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, plan.steps, spec) / recipe.lr)
    start_step, wall_before = 0, 0.0
    if resume and (run_dir / CHECKPOINT_NAME).exists():
        checkpoint = restore_checkpoint(run_dir / CHECKPOINT_NAME, run_id, model, optimizer, scheduler)
        _restore_rank_rng(checkpoint, dist, spec.seed, device.type)
        start_step, wall_before = int(checkpoint["step"]), float(checkpoint.get("wall_s", 0.0))
        if dist.is_main:
            _trim_metrics(run_dir / METRICS_NAME, start_step)
    elif dist.is_main and (run_dir / METRICS_NAME).exists():
        (run_dir / METRICS_NAME).unlink()

    train_model = ddp_model = distributed.wrap_ddp(model, device, dist) if dist.enabled else model
    if settings.compile:
        train_model = torch.compile(ddp_model)  # compile(DDP(model)): DDPOptimizer splits graphs at buckets

    record: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "error": None,
        "arch": spec.arch,
        "size": spec.size,
        **counts,
        "seq_len": seq_len,
        "forward_flops_per_token": forward_flops_per_token(config, seq_len),
        "train_flops_per_token": flops_per_token,
        "flop_convention": "FLOPs = 2 per multiply-add; training = 3 x forward; see harness.flops.CONVENTION",
        "budget_flops": spec.budget_flops,
        "planned_steps": plan.steps,
        "tokens_per_step": plan.tokens_per_step,
        "flops_used": start_step * plan.flops_per_step,
        "tokens": start_step * plan.tokens_per_step,
        "steps": start_step,
        "seed": spec.seed,
        "data": data.describe(),
        "recipe": {**vars(recipe), "grad_accum": grad_accum, "world_size": dist.world_size,
                   "micro_batch_per_rank": rank_micro_bs},
        "world_size": dist.world_size,
        "device": settings.device_name,
        "dtype": settings.dtype_name,
        "device_settings": settings.to_dict(),
        "kernels": model.kernels(seq_len, device) if hasattr(model, "kernels") else {},
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "machine_load": {"start": machine_load()},
    }
    if dist.is_main:
        _write_setup(run_dir, run_id, [
            lambda: write_json_atomic(run_dir / "config.json",
                                      {"run": spec.to_dict(), "model": config.to_dict(), "run_id": run_id}),
            lambda: data.tokenizer.save(run_dir / "tokenizer"),
        ], record)

    def save_checkpoint(step: int, wall_s: float) -> None:
        rng_by_rank = distributed.gather_objects(_rng_state(device.type), dist)  # every rank, same step
        if not dist.is_main:
            return
        payload = {
            "model": model.state_dict(),  # the unwrapped model: no DDP "module." prefix
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "wall_s": wall_s,
            "rng": rng_by_rank[0],
            "config": config.to_dict(),
            "run_id": run_id,
        }
        if dist.enabled:
            payload["rng_by_rank"] = rng_by_rank
            payload["world_size"] = dist.world_size
        torch_save_atomic(run_dir / CHECKPOINT_NAME, payload)

    interrupt = _Interrupt()
    interrupt.install()
    show_progress = dist.is_main and (sys.stderr.isatty() if progress is None else progress)
    from tqdm.auto import tqdm

    bar = tqdm(total=plan.steps, initial=start_step, disable=not show_progress, unit="step", dynamic_ncols=True)
    metrics_file = JsonlAppender(run_dir / METRICS_NAME) if dist.is_main else None
    last_metrics: dict[str, Any] = {}
    step = start_step
    t_start = time.perf_counter()
    last_checkpoint_time = t_start
    status, error = "ok", None
    hard_interrupt = False
    stop_agreed = False  # under DDP: some rank was interrupted (agreed by all ranks at the last step)
    try:
        distributed.barrier(dist)  # rank 0 has written the run directory
        model.train()
        while step < plan.steps:
            stop = stop_agreed if dist.enabled else interrupt.requested
            if stop or (stop_after_steps is not None and step - start_step >= stop_after_steps):
                status = "interrupted"
                by = interrupt.signal_name or ("a signal to another rank" if stop_agreed else "request")
                error = f"interrupted by {by} after step {step}"
                break
            t_step = time.perf_counter()
            aux_totals: dict[str, torch.Tensor] = {}
            loss_total = torch.zeros((), device=device)
            for micro in range(grad_accum):
                x, y = get_batch(
                    data.train_tokens, step, rank_micro_bs, seq_len,
                    seed=spec.seed, micro_step=micro, rank=dist.rank, world_size=dist.world_size,
                )
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = contextlib.nullcontext()
                if dist.enabled and micro < grad_accum - 1:
                    sync = ddp_model.no_sync()  # accumulate locally; all-reduce on the last micro-step
                with sync, settings.autocast():
                    out = train_model(x, targets=y)
                    loss = out.loss / grad_accum
                loss.backward()
                loss_total += out.lm_loss.detach() / grad_accum
                for name, value in out.aux.items():
                    aux_totals[name] = aux_totals.get(name, 0.0) + value.detach().double() / grad_accum
            # one all-reduce: the global mean loss and aux terms, and whether any rank wants to stop or checkpoint
            checkpoint_due = (time.perf_counter() - last_checkpoint_time) > spec.checkpoint_minutes * 60
            means, (stop_agreed, checkpoint_due) = distributed.consensus(
                [loss_total, *aux_totals.values()], [interrupt.requested, checkpoint_due], dist, device
            )
            loss_value = means[0]
            aux_totals = dict(zip(aux_totals, means[1:]))
            if not math.isfinite(loss_value):
                status, error = "failed", f"training loss became {loss_value} at step {step}"
                break
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            now = time.perf_counter()
            wall_s = wall_before + now - t_start
            last_metrics = {
                "step": step,
                "tokens": step * plan.tokens_per_step,
                "flops": step * plan.flops_per_step,
                "wall_s": round(wall_s, 4),
                "step_s": round(now - t_step, 4),
                "train_loss": loss_value,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                **aux_totals,
            }
            if dist.is_main and (step % eval_interval == 0 or step == plan.steps):
                last_metrics["val_loss"] = validation_metrics(
                    model, data, seq_len, micro_bs, device, settings.autocast, max_tokens=16 * seq_len * micro_bs
                )["val_loss"]
            if metrics_file:
                metrics_file.append(last_metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{plan.tokens_per_step / max(now - t_step, 1e-9):.0f}")
            if step % checkpoint_interval == 0 or checkpoint_due:
                save_checkpoint(step, wall_s)
                last_checkpoint_time = now
    except KeyboardInterrupt:  # a second Ctrl-C mid-step: keep the last checkpoint, record why
        status, error = "interrupted", f"stopped by a second interrupt during step {step + 1}; last checkpoint kept"
        hard_interrupt, raise_after = True, None
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc} (at step {step})"
        if isinstance(exc, WriteFailed):
            error = f"{exc} (at step {step}); the last good checkpoint is kept"
        if dist.enabled:
            error = _rank_error(dist, exc, step)
        raise_after = exc
    else:
        raise_after = None
    finally:
        bar.close()
        interrupt.restore()
        if metrics_file:
            metrics_file.close()

    wall_s = wall_before + time.perf_counter() - t_start
    if status != "failed" and not hard_interrupt:  # else the weights may be mid-update: keep the last checkpoint
        try:
            save_checkpoint(step, wall_s)
        except WriteFailed as exc:
            status, error = "failed", f"{exc} (the final checkpoint, step {step}); the last good checkpoint is kept"
    record.update(
        status=status,
        error=error,
        steps=step,
        tokens=step * plan.tokens_per_step,
        flops_used=step * plan.flops_per_step,
        wall_s=wall_s,
        tokens_per_s=(step - start_step) * plan.tokens_per_step / max(wall_s - wall_before, 1e-9),
        last_metrics=last_metrics,
    )
    record["machine_load"]["end"] = machine_load()
    # tokens_per_s counts the global batch (all ranks); MFU is against all ranks' peak
    record["achieved_flops_per_s"] = record["tokens_per_s"] * flops_per_token
    peak = settings.peak_flops_per_s() if dist.is_main else None
    record["peak_flops_per_s"] = peak
    record["mfu"] = record["achieved_flops_per_s"] / (peak * dist.world_size) if peak else None
    if status == "ok" and dist.is_main:  # rank 0 evaluates; the others wait at the barrier below
        final = validation_metrics(model, data, seq_len, micro_bs, device, settings.autocast)
        record["final_val_loss"] = final.pop("val_loss")
        record.update(final)
        record.update(_unigram_baseline(data, final))
        record["warnings"] = quality_warnings(record)
    rank_raised = dist.enabled and raise_after is not None
    if dist.is_main or rank_raised:  # a rank that raised records why before it exits
        if rank_raised:
            run_dir.mkdir(parents=True, exist_ok=True)
            record["error"] = error = _merge_rank_errors(run_dir, record["error"])
        record = _write_final_record(run_dir, record)
        status, error = record["status"], record["error"]
    if not rank_raised:  # after an exception the peers may be gone: no more collectives
        distributed.barrier(dist)
    if raise_after is not None:
        raise TrainingFailed(f"run {run_id} failed: {error}; the record in {run_dir} keeps its metrics.") from raise_after
    if status == "failed":
        raise TrainingFailed(f"run {run_id} failed: {error}; the record in {run_dir} keeps its metrics.")
    return TrainResult(run_dir, record)


def _unigram_baseline(data, final: dict) -> dict:
    """The loss of a unigram model fitted on the training tokens, on the same validation tokens."""
    n = final["val_tokens"]
    unigram = unigram_cross_entropy(data.train_tokens, np.asarray(data.val_tokens[1 : n + 1]), data.tokenizer.vocab_size)
    baseline = {"unigram_val_loss": float(unigram)}
    if data.kind == "text":
        baseline["unigram_val_bpb"] = float(unigram * n / (LN2 * final["val_bytes"]))
    else:
        baseline["unigram_excess_loss"] = float(unigram - final["entropy_floor"])
    return baseline
