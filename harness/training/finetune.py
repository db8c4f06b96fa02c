"""Fine-tune any run (trained or imported) on downstream data at a FLOP budget: full, LoRA or top:N.

    result = finetune(FinetuneSpec(parent="results/<run_id>", data="task:reverse_recall", method="lora"))

This module holds what is particular to fine-tuning — the spec, the downstream data and the
record — and hands the loop to the engine (``harness.training.engine``: lock, checkpoints,
signals, failures, DDP under ``torchrun``), the method's parts to ``harness.training.methods``.

- The parent is loaded by ``harness.runs.run_dir.load_run_model`` (one loader for trained and
  imported runs); the downstream data are tokenized with **its** tokenizer
  (``harness.data.downstream``): a corpus (loss on every token) or prompt/completion pairs
  (loss on the completion only).
- Budget → whole steps by ``harness.flops.plan_budget`` with the method's training FLOPs per
  token (FLOPs = 2 per multiply-add): full = 3 × forward; LoRA = frozen forward + backward
  through activations only + 3 × adapter FLOPs (``harness.training.lora``); top:N = forward +
  the frozen head's input gradient + 2 × the top N blocks (``harness.training.methods.top``).
- A new run directory ``results/<run_id>`` (run id = ``ft-<method>-<hash of the parent run id,
  the resolved spec>-s<seed>``, ``top:2`` spelled ``top2``) whose record links its ``parent_run``
  and states status, trainable/total parameters, FLOPs (convention and per-token parts),
  validation metrics before and after. ``checkpoint.pt`` holds the **plain weights** (LoRA:
  merged, W + (α/r)·B A), so eval, bench and compare read it like any run, plus the method's
  extras (LoRA: ``adapter``), optimizer, scheduler, step and RNG; ``adapter/`` holds the LoRA
  adapter in peft's format.
- Resume: a run whose record is not ``ok`` continues from its checkpoint (after a SIGKILL
  too) and ends identical to an uninterrupted run (batches are a pure function of the step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from architectures import get as get_architecture
from architectures.presets import SizeDefaults
from harness.device import resolve_dtype
from harness.flops import forward_flops_per_token
from harness.io import write_json_atomic
from harness.runs import run_dir as run_files
from harness.runs.records import progress_fields, provenance
from harness.runs.spec import GENERIC_LR, Recipe
from harness.runs.validation import check_recipe_field
from harness.training import distributed, lora
from harness.training.engine import Engine, TrainingFailed, TrainResult, run_locked
from harness.training.methods import FINETUNE_METHODS, get_method, is_finetune_method
from harness.training.methods.base import parameter_counts
from harness.training.placement import place, rank_seed
from harness.training.spec_fields import SpecFields

METHODS = FINETUNE_METHODS
EVAL_TOKENS = 32768  # validation tokens (corpus) evaluated before and after; pairs: every example
FinetuneResult = TrainResult  # the engine's result: run directory, record, reused
FinetuneFailed = TrainingFailed  # raised after the record has been marked ``failed``


@dataclass
class FinetuneSpec:
    """What determines a fine-tuning run; ``resolve`` fills the defaults from the parent."""

    parent: str  # parent run directory or run id
    data: str
    method: str = "lora"  # full, lora, top:N
    rank: int | None = None  # LoRA only; default max(1, d_model // 32)
    alpha: float | None = None  # LoRA only; default 2 x rank (scale alpha / rank = 2)
    seed: int = 0
    budget_flops: float | None = None
    recipe: Recipe = field(default_factory=Recipe)
    # not part of the run's identity:
    eval_interval: int | None = None
    checkpoint_interval: int | None = None
    checkpoint_minutes: float = 10.0
    device: str | None = None
    dtype: str | None = None

    IDENTITY_EXCLUDES = ("parent", "eval_interval", "checkpoint_interval", "checkpoint_minutes", "device")

    def __post_init__(self) -> None:
        if isinstance(self.recipe, dict):
            self.recipe = Recipe(**self.recipe)
        if not is_finetune_method(self.method):
            raise ValueError(f"--method must be one of {', '.join(METHODS)} (N a positive number of blocks), "
                             f"got {self.method!r}.")
        if self.method != "lora":
            self.rank = self.alpha = None
        elif self.rank is not None:
            lora.LoraSettings(self.rank, self.alpha or 2.0 * self.rank)  # validates

    @property
    def lora_settings(self) -> lora.LoraSettings | None:
        return lora.LoraSettings(self.rank, self.alpha) if self.method == "lora" else None

    def training_method(self):
        """The method object (``harness.training.methods``); LoRA's needs a resolved rank."""
        return get_method(self.method, self.lora_settings)

    def resolve(self, parent_record: dict, config) -> "FinetuneSpec":
        """Fill rank, lr, batch, seq_len, budget and the compute dtype (for this machine, as
        ``RunSpec.resolve`` does) from the parent's size and config; the caller's ``Recipe`` is copied."""
        size, recipe = parent_record.get("size"), dataclasses.replace(self.recipe)
        self.recipe = recipe
        defaults = _size_defaults(config.arch, size)
        if self.method == "lora":
            self.rank = self.rank or max(1, config.d_model // 32)
            self.alpha = self.alpha or 2.0 * self.rank
        method = self.training_method()
        if recipe.lr is None:
            recipe.lr = (defaults.lr or GENERIC_LR) * method.lr_scale
        if recipe.seq_len is not None:
            check_recipe_field("seq_len", recipe.seq_len)
        recipe.seq_len = config.check_seq_len(recipe.seq_len or parent_record.get("seq_len"))
        self._resolve_batch(parent_record.get("recipe") or {}, defaults)
        if self.budget_flops is None:
            if defaults.finetune_budget_flops is None:
                raise ValueError(f"a {size} parent has no default fine-tuning budget; give --budget FLOPS.")
            self.budget_flops = defaults.finetune_budget_flops
        if not (math.isfinite(self.budget_flops) and self.budget_flops > 0):
            raise ValueError(f"--budget must be a positive number of FLOPs, got {self.budget_flops}.")
        method.flops_per_token(config, recipe.seq_len, recipe.micro_batch_size * recipe.seq_len)  # checks N
        self.dtype = resolve_dtype(self.device, self.dtype)
        return self

    def _resolve_batch(self, parent_recipe: dict, defaults) -> None:
        """Micro-batch and tokens per step: given, else the parent's, else the size's defaults."""
        recipe = self.recipe
        micro = defaults.micro_batch_size or 8
        tokens = defaults.batch_tokens or 8 * recipe.seq_len
        if recipe.micro_batch_size is None:
            recipe.micro_batch_size = int(parent_recipe.get("micro_batch_size") or micro)
        if recipe.batch_tokens is None:
            recipe.batch_tokens = int(parent_recipe.get("batch_tokens") or tokens) // recipe.seq_len * recipe.seq_len
        rows = recipe.batch_tokens // recipe.seq_len
        if rows < 1 or rows % recipe.micro_batch_size:
            raise ValueError(f"a step of {recipe.batch_tokens} tokens (seq_len {recipe.seq_len}) is not a whole number of "
                             f"micro-batches of {recipe.micro_batch_size}; choose --batch-tokens as a multiple of "
                             f"{recipe.micro_batch_size * recipe.seq_len}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_id(self, parent_run_id: str) -> str:
        """``ft-<method>-<hash of the parent run id and the resolved spec>-s<seed>`` (``top:2`` → ``top2``)."""
        identity = {k: v for k, v in self.to_dict().items() if k not in self.IDENTITY_EXCLUDES}
        identity["parent_run"] = parent_run_id
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
        slug = "".join(char for char in self.method if char.isalnum())
        return f"ft-{slug}-{digest}-s{self.seed}"


def _size_defaults(arch: str, size: str | None) -> SizeDefaults:
    """The parent size's defaults from the registry (none for an architecture no longer registered)."""
    try:
        return get_architecture(arch).training_defaults(size)
    except ValueError:
        return SizeDefaults()


def flops_per_token(config, spec: FinetuneSpec) -> dict[str, float]:
    """Training FLOPs per token by part for a resolved ``spec``; ``total`` is what the budget is planned with."""
    seq_len = spec.recipe.seq_len
    return spec.training_method().flops_per_token(config, seq_len, spec.recipe.micro_batch_size * seq_len)


def _prefixed(metrics: dict, suffix: str) -> dict:
    """``{"val_loss": x, "val_bpb": y}`` → ``{"val_loss_<suffix>": x, "val_bpb_<suffix>": y}`` (scalars only)."""
    return {f"{key}_{suffix}": value for key, value in metrics.items() if isinstance(value, (int, float))}


@dataclass
class Finetuning(SpecFields):
    """The fine-tuning run kind (``harness.training.engine.RunKind``): downstream data, files and record."""

    spec: FinetuneSpec
    run_id: str
    run_dir: Path
    parent_dir: Path
    parent_record: dict
    tokenizer: Any
    data: Any  # harness.data.downstream.CorpusData | PairsData
    before: dict  # validation metrics of the parent, before fine-tuning (rank 0)

    @classmethod
    def engine(cls, spec: FinetuneSpec, run_dir: Path, parent_dir: Path, loaded, *, force: bool = False) -> Engine:
        """Device and ranks, the downstream data (rank 0 first), the parent evaluated, then prepared by the method."""
        from harness.data.downstream import prepare_downstream

        base, tokenizer, parent_record = loaded
        placement = place(spec.recipe, spec.device, spec.dtype, False)
        settings, device, dist, _ = placement
        data = distributed.main_first(dist, lambda: prepare_downstream(spec.data, tokenizer, spec.recipe.seq_len,
                                                                       spec.seed))
        kind = cls(spec, run_dir.name, run_dir, parent_dir, parent_record, tokenizer, data, {})
        base = base.to(device)
        if dist.is_main:
            kind.before = kind.evaluate(base, device, settings.autocast)
        torch.manual_seed(spec.seed)  # the method's own initialisation (LoRA's A), the same on every rank
        method = spec.training_method()
        model = method.prepare(base)
        if dist.rank > 0:  # each rank its own dropout stream
            torch.manual_seed(rank_seed(spec.seed, dist.rank))
        return Engine.create(kind, method, model, placement, spec.budget_flops, force=force)

    # ---- what the engine reads ------------------------------------------------------------

    def train_batch(self, step: int, micro: int, batch_size: int, rank: int, world_size: int):
        return self.data.train_batch(step, micro, batch_size, self.spec.recipe.seq_len, self.spec.seed, rank=rank,
                                     world_size=world_size)

    def evaluate(self, model, device, autocast, max_tokens: int = EVAL_TOKENS) -> dict:
        recipe = self.spec.recipe
        return self.data.evaluate(model, recipe.seq_len, recipe.micro_batch_size, device, autocast, max_tokens)

    def val_loss(self, engine: Engine) -> float:
        return self.evaluate(engine.model, engine.device, engine.settings.autocast, EVAL_TOKENS // 4)["val_loss"]

    def validation_extras(self, engine: Engine) -> dict:
        return {}  # no in-training probes for fine-tuning

    def final_fields(self, engine: Engine, record: dict) -> dict:
        """Validation after fine-tuning (``*_after``), and ``final_val_loss`` etc. as pre-training records name them."""
        after = self.evaluate(engine.model, engine.device, engine.settings.autocast)
        return {**_prefixed(after, "after"), "final_val_loss": after["val_loss"],
                **{key: after[key] for key in ("val_bpb", "excess_loss") if key in after}}

    def write_files(self, engine: Engine) -> None:
        write_json_atomic(self.run_dir / run_files.CONFIG_NAME,
                          {"finetune": self.spec.to_dict(), "parent_run": self.parent_dir.name,
                           "model": engine.config.to_dict(), "run_id": self.run_id})
        self.tokenizer.save(self.run_dir / run_files.TOKENIZER_DIR)

    def running_record(self, engine: Engine) -> dict:
        import peft

        spec, plan, parent = self.spec, engine.plan, self.parent_record
        return {
            "run_id": self.run_id, "status": "running", "error": None,
            "arch": parent.get("arch"), "size": parent.get("size"),
            "params": parent.get("params"), "non_embedding_params": parent.get("non_embedding_params"),
            "active_params": parent.get("active_params"),
            "parent_run": self.parent_dir.name, "parent_dir": str(self.parent_dir), "parent_seed": parent.get("seed"),
            "parent_data": (parent.get("data") or {}).get("spec"),
            "finetune": {"method": spec.method, "data": spec.data, "rank": spec.rank, "alpha": spec.alpha,
                         **engine.method.record_fields()},
            **parameter_counts(engine.model),
            "seq_len": spec.recipe.seq_len,
            "forward_flops_per_token": forward_flops_per_token(engine.config, spec.recipe.seq_len, "causal"),
            "train_flops_per_token": engine.flops_parts["total"],
            "train_flops_per_token_parts": engine.flops_parts,
            "flop_convention": engine.method.flop_convention, "attention_flops": "causal",
            "budget_flops": spec.budget_flops, "planned_steps": plan.steps, "tokens_per_step": plan.tokens_per_step,
            **progress_fields(engine.start_step, plan), "seed": spec.seed,
            "data": self.data.describe(),
            "recipe": {**dataclasses.asdict(spec.recipe), "grad_accum": engine.layout.grad_accum,
                       "micro_batch_per_rank": engine.layout.micro_batch_per_rank},
            "world_size": engine.dist.world_size,
            "device": engine.settings.device_name, "dtype": engine.settings.dtype_name,
            **provenance(), "peft_version": peft.__version__,
            **_prefixed(self.before, "before"),
        }


def finetune(
    spec: FinetuneSpec,
    results_dir: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    stop_after_steps: int | None = None,
    wait: bool = False,
) -> TrainResult:
    """Fine-tune ``spec.parent`` into ``results_dir/<run_id>`` (see the module docstring).

    A finished run (record ``ok``) is reused unless ``force``; an unfinished one resumes from
    its checkpoint. The run directory is locked meanwhile (``RunLocked`` if a live process holds
    it; ``wait``: wait for it). ``stop_after_steps`` simulates an interruption (tests). Raises
    ``TrainingFailed`` (alias ``FinetuneFailed``) after a failed run; its record says why.
    """
    from harness.paths import results_dir as default_results_dir

    parent_dir = run_files.resolve_run_dir(spec.parent)
    loaded = run_files.load_run_model(parent_dir)
    parent_record = loaded[2]
    if parent_record.get("status") != "ok":
        raise ValueError(f"parent run {parent_dir.name} is {parent_record.get('status')}; finish it before fine-tuning.")
    spec.resolve(parent_record, loaded[0].config)
    run_dir = Path(results_dir if results_dir is not None else default_results_dir()) / spec.run_id(parent_dir.name)
    return run_locked(run_dir, lambda: Finetuning.engine(spec, run_dir, parent_dir, loaded, force=force), force=force,
                      wait=wait, progress=progress, stop_after_steps=stop_after_steps)
