"""Fine-tune any run (trained or imported) on downstream data at a FLOP budget: full or LoRA.

    result = finetune(FinetuneSpec(parent="results/<run_id>", data="task:reverse_recall", method="lora"))

- The parent is loaded by ``harness.runs.run_dir.load_run_model`` (one loader for trained and
  imported runs); the downstream data are tokenized with **its** tokenizer
  (``harness.data.downstream``): a corpus (loss on every token) or prompt/completion pairs
  (loss on the completion only).
- Budget → whole steps by ``harness.flops.plan_budget`` with the method's training FLOPs per
  token (FLOPs = 2 per multiply-add): full = 3 × forward; LoRA = frozen forward + backward
  through activations only + 3 × adapter FLOPs (``harness.training.lora``). FLOPs used ≤ budget.
- A new run directory ``results/<run_id>`` (run id = ``ft-<method>-<hash of the parent run id,
  the resolved spec>-s<seed>``) whose record links its ``parent_run`` and states status,
  trainable/total parameters, FLOPs (convention and per-token parts), validation metrics
  before and after. ``checkpoint.pt`` holds the **plain weights** of the adapted model (LoRA:
  merged, W + (α/r)·B A), so eval, bench and compare read it like any run, plus the adapter
  alone (``adapter``), optimizer, scheduler, step and RNG; ``adapter/`` holds the LoRA
  adapter in peft's format.
- Resume: a run whose record is not ``ok`` continues from its checkpoint (after a SIGKILL
  too) and ends identical to an uninterrupted run (batches are a pure function of the step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.training import lora
from harness.runs import run_dir as run_files
from harness.device import configure_device, resolve_dtype
from harness.flops import forward_flops_per_token, plan_budget
from harness.io import JsonlAppender, write_json_atomic
from harness.training.optim import make_optimizer, make_scheduler
from harness.runs.records import closing_fields, load_record, progress_fields, provenance, write_record
from harness.runs.spec import DEFAULT_BATCH, DEFAULT_LR, Recipe
from harness.training.step import Outcome, StopSignal, accumulate_gradients, apply_gradients
from harness.runs.validation import check_recipe_field

METHODS = ("full", "lora")
DEFAULT_FINETUNE_BUDGET = {"nano": 2e10, "micro": 2e12}  # a tenth of the default pre-training budgets
LR_SCALE = {"full": 1.0, "lora": 3.0}  # default peak lr = scale × the size's pre-training lr (nano: 3e-3, 9e-3)
EVAL_TOKENS = 32768  # validation tokens (corpus) evaluated before and after; pairs: every example


@dataclass
class FinetuneSpec:
    """What determines a fine-tuning run; ``resolve`` fills the defaults from the parent."""

    parent: str  # parent run directory or run id
    data: str
    method: str = "lora"
    rank: int | None = None  # LoRA only; default max(1, d_model // 32)
    alpha: float | None = None  # LoRA only; default 2 x rank (scale alpha / rank = 2)
    seed: int = 0
    budget_flops: float | None = None
    recipe: Recipe = field(default_factory=Recipe)
    # not part of the run's identity:
    eval_interval: int | None = None
    checkpoint_interval: int | None = None
    device: str | None = None
    dtype: str | None = None

    IDENTITY_EXCLUDES = ("parent", "eval_interval", "checkpoint_interval", "device")

    def __post_init__(self) -> None:
        if isinstance(self.recipe, dict):
            self.recipe = Recipe(**self.recipe)
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if self.method != "lora":
            self.rank = self.alpha = None
        elif self.rank is not None:
            lora.LoraSettings(self.rank, self.alpha or 2.0 * self.rank)  # validates

    @property
    def lora_settings(self) -> lora.LoraSettings | None:
        return lora.LoraSettings(self.rank, self.alpha) if self.method == "lora" else None

    def resolve(self, parent_record: dict, config) -> "FinetuneSpec":
        """Fill rank, lr, batch, seq_len, budget and the compute dtype (for this machine, as
        ``RunSpec.resolve`` does) from the parent's size and config; the caller's ``Recipe`` is copied."""
        size, recipe = parent_record.get("size"), dataclasses.replace(self.recipe)
        self.recipe = recipe
        if self.method == "lora":
            self.rank = self.rank or max(1, config.d_model // 32)
            self.alpha = self.alpha or 2.0 * self.rank
            lora.LoraSettings(self.rank, self.alpha)
        parent_recipe = parent_record.get("recipe") or {}
        if recipe.lr is None:
            recipe.lr = DEFAULT_LR.get(size, 3e-4) * LR_SCALE[self.method]
        if recipe.seq_len is not None:
            check_recipe_field("seq_len", recipe.seq_len)
        recipe.seq_len = config.check_seq_len(recipe.seq_len or parent_record.get("seq_len"))
        micro, tokens = DEFAULT_BATCH.get(size, (8, 8 * recipe.seq_len))
        if recipe.micro_batch_size is None:
            recipe.micro_batch_size = int(parent_recipe.get("micro_batch_size") or micro)
        if recipe.batch_tokens is None:
            recipe.batch_tokens = int(parent_recipe.get("batch_tokens") or tokens) // recipe.seq_len * recipe.seq_len
        rows = recipe.batch_tokens // recipe.seq_len
        if rows < 1 or rows % recipe.micro_batch_size:
            raise ValueError(f"a step of {recipe.batch_tokens} tokens (seq_len {recipe.seq_len}) is not a whole number of "
                             f"micro-batches of {recipe.micro_batch_size}; choose --batch-tokens as a multiple of "
                             f"{recipe.micro_batch_size * recipe.seq_len}.")
        if self.budget_flops is None:
            if size not in DEFAULT_FINETUNE_BUDGET:
                raise ValueError(f"a {size} parent has no default fine-tuning budget; give --budget FLOPS.")
            self.budget_flops = DEFAULT_FINETUNE_BUDGET[size]
        if not (math.isfinite(self.budget_flops) and self.budget_flops > 0):
            raise ValueError(f"--budget must be a positive number of FLOPs, got {self.budget_flops}.")
        self.dtype = resolve_dtype(self.device, self.dtype)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_id(self, parent_run_id: str) -> str:
        """``ft-<method>-<hash of the parent run id and the resolved spec>-s<seed>``."""
        identity = {k: v for k, v in self.to_dict().items() if k not in self.IDENTITY_EXCLUDES}
        identity["parent_run"] = parent_run_id
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"ft-{self.method}-{digest}-s{self.seed}"


@dataclass
class FinetuneResult:
    run_dir: Path
    record: dict[str, Any]
    reused: bool = False


class FinetuneFailed(RuntimeError):
    """Raised after the record has been marked ``failed``; the message says why."""


def flops_per_token(config, spec: FinetuneSpec) -> dict[str, float]:
    """Training FLOPs per token by part; ``total`` is what the budget is planned with."""
    seq_len = spec.recipe.seq_len
    if spec.method == "full":
        forward = forward_flops_per_token(config, seq_len)
        return {"forward": forward, "backward": 2 * forward, "total": 3 * forward}
    tokens_per_forward = spec.recipe.micro_batch_size * seq_len
    return lora.lora_flops_per_token(config, seq_len, spec.rank, tokens_per_forward)


def _checkpoint_payload(model, optimizer, scheduler, step: int, wall_s: float, config, run_id: str) -> dict:
    plain = lora.merged_copy(model)
    payload = {
        "model": plain.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "wall_s": wall_s,
        "rng": run_files.rng_state("cuda" if torch.cuda.is_available() else "cpu"),
        "config": config.to_dict(),
        "run_id": run_id,
    }
    if lora.is_adapted(model):
        payload["adapter"] = lora.adapter_state(model)
    return payload


def _restore(run_dir: Path, model, optimizer, scheduler) -> tuple[int, float]:
    """Load a checkpoint into the (already adapted) model and the optimizer; returns (step, wall_s)."""
    checkpoint = run_files.load_checkpoint(run_files.checkpoint_path(run_dir))
    if lora.is_adapted(model):
        lora.load_adapter_state(model, checkpoint["adapter"])
    else:
        model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    run_files.set_rng_state(checkpoint["rng"], "cuda" if torch.cuda.is_available() else "cpu")
    return int(checkpoint["step"]), float(checkpoint.get("wall_s", 0.0))


def _train_step(model, optimizer, scheduler, data, spec: FinetuneSpec, step: int, grad_accum: int, device, autocast) -> float:
    """One optimizer step (``harness.training.step``; gradient accumulation over micro-batches); the mean LM loss."""
    recipe = spec.recipe
    batches = (tuple(t.to(device) for t in data.train_batch(step, micro, recipe.micro_batch_size, recipe.seq_len, spec.seed))
               for micro in range(grad_accum))
    loss = float(accumulate_gradients(model, batches, grad_accum, autocast)[0])
    if math.isfinite(loss):
        apply_gradients(model, optimizer, recipe.grad_clip, scheduler)
    return loss


@dataclass
class _Run:
    """What the loop needs besides the model: where, how far, on what."""

    spec: FinetuneSpec
    run_id: str
    run_dir: Path
    config: Any
    data: Any
    plan: Any
    device: torch.device
    settings: Any

    def evaluate(self, model, max_tokens: int = EVAL_TOKENS) -> dict:
        recipe = self.spec.recipe
        return self.data.evaluate(model, recipe.seq_len, recipe.micro_batch_size, self.device, self.settings.autocast,
                                  max_tokens)

    def save(self, model, optimizer, scheduler, step: int, wall_s: float) -> None:
        run_files.save_checkpoint(self.run_dir, _checkpoint_payload(model, optimizer, scheduler, step, wall_s,
                                                                    self.config, self.run_id))


def _loop(run: _Run, model, optimizer, scheduler, start: int, wall_before: float, stop_after_steps, progress) -> Outcome:
    """Steps ``start`` → ``plan.steps``, or until interrupted or the loss is not finite; checkpoints on the way."""
    from harness.progress import progress_bar

    spec, plan = run.spec, run.plan
    grad_accum = spec.recipe.batch_tokens // spec.recipe.seq_len // spec.recipe.micro_batch_size
    eval_interval = spec.eval_interval or max(1, plan.steps // 5)
    checkpoint_interval = spec.checkpoint_interval or max(1, plan.steps // 4)
    outcome, t_start = Outcome(step=start), time.perf_counter()
    bar = progress_bar(plan.steps, start, show=progress, desc=f"fine-tuning {run.run_id}")
    metrics = JsonlAppender(run.run_dir / run_files.METRICS_NAME)
    try:
        with StopSignal() as stop:
            while outcome.step < plan.steps:
                if stop.requested or (stop_after_steps is not None and outcome.step - start >= stop_after_steps):
                    outcome.status = "interrupted"
                    outcome.error = f"interrupted by {stop.signal_name or 'request'} after step {outcome.step}"
                    break
                loss = _train_step(model, optimizer, scheduler, run.data, spec, outcome.step, grad_accum, run.device,
                                   run.settings.autocast)
                if not math.isfinite(loss):
                    outcome.status, outcome.error = "failed", f"training loss became {loss} at step {outcome.step}"
                    break
                step = outcome.step = outcome.step + 1
                wall_s = wall_before + time.perf_counter() - t_start
                last = {"step": step, "tokens": step * plan.tokens_per_step, "flops": step * plan.flops_per_step,
                        "wall_s": round(wall_s, 4), "train_loss": loss, "lr": scheduler.get_last_lr()[0]}
                if step % eval_interval == 0 or step == plan.steps:
                    last["val_loss"] = run.evaluate(model, max_tokens=EVAL_TOKENS // 4)["val_loss"]
                outcome.last_metrics = last
                metrics.append(last)
                bar.update(1)
                if step % checkpoint_interval == 0 and step < plan.steps:
                    run.save(model, optimizer, scheduler, step, wall_s)
    finally:
        bar.close()
        metrics.close()
    outcome.wall_s = wall_before + time.perf_counter() - t_start
    if outcome.status != "failed":
        run.save(model, optimizer, scheduler, outcome.step, outcome.wall_s)
    return outcome


def _prefixed(metrics: dict, suffix: str) -> dict:
    """``{"val_loss": x, "val_bpb": y}`` → ``{"val_loss_<suffix>": x, "val_bpb_<suffix>": y}`` (scalars only)."""
    return {f"{key}_{suffix}": value for key, value in metrics.items() if isinstance(value, (int, float))}


def _initial_record(run: _Run, parent_record: dict, parent_dir: Path, counts: dict, parts: dict, before: dict,
                    start: int) -> dict:
    spec, plan, config = run.spec, run.plan, run.config
    import peft

    return {
        "run_id": run.run_id, "status": "running", "error": None,
        "arch": parent_record.get("arch"), "size": parent_record.get("size"),
        "params": parent_record.get("params"), "non_embedding_params": parent_record.get("non_embedding_params"),
        "active_params": parent_record.get("active_params"),
        "parent_run": parent_dir.name, "parent_dir": str(parent_dir), "parent_seed": parent_record.get("seed"),
        "parent_data": (parent_record.get("data") or {}).get("spec"),
        "finetune": {"method": spec.method, "data": spec.data, "rank": spec.rank, "alpha": spec.alpha,
                     "targets": {"modules": lora.LINEAR_TARGETS, "parameters": list(lora.EXPERT_TARGETS)}
                     if spec.method == "lora" else "all parameters"},
        **counts,
        "seq_len": spec.recipe.seq_len,
        "forward_flops_per_token": forward_flops_per_token(config, spec.recipe.seq_len),
        "train_flops_per_token": parts["total"],
        "train_flops_per_token_parts": parts,
        "flop_convention": lora.FLOP_CONVENTION,
        "budget_flops": spec.budget_flops, "planned_steps": plan.steps, "tokens_per_step": plan.tokens_per_step,
        **progress_fields(start, plan), "seed": spec.seed,
        "data": run.data.describe(), "recipe": dataclasses.asdict(spec.recipe),
        "device": run.settings.device_name, "dtype": run.settings.dtype_name,
        **provenance(), "peft_version": peft.__version__,
        **_prefixed(before, "before"),
    }


def _existing_record(run_dir: Path) -> dict:
    try:
        return load_record(run_dir)
    except (OSError, ValueError):
        return {}


def _trainable(base, spec: FinetuneSpec):
    """The model to train: LoRA adapters on a frozen ``base``, or ``base`` with every parameter trainable."""
    torch.manual_seed(spec.seed)
    model = lora.apply_lora(base, spec.lora_settings) if spec.method == "lora" else base
    model.train()
    if spec.method == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    return model


def _write_setup(run: _Run, record: dict, tokenizer, parent_dir: Path, resumed_step: int | None) -> None:
    """config.json, the tokenizer, metrics.jsonl trimmed (resume) or removed, and the ``running`` record."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run_files.start_metrics(run.run_dir, resumed_step)
    write_json_atomic(run.run_dir / run_files.CONFIG_NAME, {"finetune": run.spec.to_dict(), "parent_run": parent_dir.name,
                                                            "model": run.config.to_dict(), "run_id": run.run_id})
    tokenizer.save(run.run_dir / run_files.TOKENIZER_DIR)
    write_record(run.run_dir, record)


def finetune(
    spec: FinetuneSpec,
    results_dir: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    stop_after_steps: int | None = None,
) -> FinetuneResult:
    """Fine-tune ``spec.parent`` into ``results_dir/<run_id>`` (see the module docstring).

    A finished run (record ``ok``) is reused unless ``force``; an unfinished one resumes from
    its checkpoint. ``stop_after_steps`` simulates an interruption (tests).
    """
    from harness.data.downstream import prepare_downstream
    from harness.paths import results_dir as default_results_dir

    parent_dir = run_files.resolve_run_dir(spec.parent)
    base, tokenizer, parent_record = run_files.load_run_model(parent_dir)
    if parent_record.get("status") != "ok":
        raise ValueError(f"parent run {parent_dir.name} is {parent_record.get('status')}; finish it before fine-tuning.")
    spec.resolve(parent_record, base.config)
    run_id = spec.run_id(parent_dir.name)
    run_dir = Path(results_dir if results_dir is not None else default_results_dir()) / run_id
    existing = _existing_record(run_dir)
    if existing.get("status") == "ok" and not force:
        return FinetuneResult(run_dir, existing, reused=True)
    resume = bool(existing) and not force and run_files.checkpoint_path(run_dir).exists()

    settings = configure_device(spec.device, spec.dtype, compile=False)
    recipe = spec.recipe
    data = prepare_downstream(spec.data, tokenizer, recipe.seq_len, spec.seed)
    parts = flops_per_token(base.config, spec)
    plan = plan_budget(spec.budget_flops, parts["total"], recipe.batch_tokens // recipe.seq_len * recipe.seq_len)
    run = _Run(spec, run_id, run_dir, base.config, data, plan, torch.device(settings.device), settings)
    base = base.to(run.device)
    before = run.evaluate(base)
    model = _trainable(base, spec)
    optimizer = make_optimizer(model, recipe, fused=settings.fused_adamw)
    scheduler = make_scheduler(optimizer, plan.steps, recipe)
    start, wall_before = _restore(run_dir, model, optimizer, scheduler) if resume else (0, 0.0)
    if resume:
        print(run_files.resuming_line(run_id, start, plan.steps), file=sys.stderr)
    record = _initial_record(run, parent_record, parent_dir, lora.parameter_counts(model), parts, before, start)
    _write_setup(run, record, tokenizer, parent_dir, start if resume else None)
    try:
        outcome = _loop(run, model, optimizer, scheduler, start, wall_before, stop_after_steps, progress)
    except Exception as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        write_record(run_dir, record)
        raise FinetuneFailed(f"fine-tune {run_id} failed: {record['error']}; the record in {run_dir} says where.") from exc
    return _finish(run, model, record, outcome, start, wall_before)


def _finish(run: _Run, model, record: dict, outcome: Outcome, start: int, wall_before: float) -> FinetuneResult:
    """Final validation, the adapter folder, and the record."""
    record.update(closing_fields(status=outcome.status, error=outcome.error, step=outcome.step, start_step=start,
                                 plan=run.plan, wall_s=outcome.wall_s, wall_before=wall_before,
                                 last_metrics=outcome.last_metrics))
    if outcome.status == "ok":
        after = run.evaluate(model)
        record.update(_prefixed(after, "after"))
        record["final_val_loss"] = after["val_loss"]
        record.update({key: after[key] for key in ("val_bpb", "excess_loss") if key in after})  # as in pre-training records
        if lora.is_adapted(model):
            model.save_pretrained(str(run.run_dir / run_files.ADAPTER_DIR))
    write_record(run.run_dir, record)
    if outcome.status == "failed":
        raise FinetuneFailed(f"fine-tune {run.run_id} failed: {outcome.error}; the record in {run.run_dir} keeps its metrics.")
    return FinetuneResult(run.run_dir, record)
