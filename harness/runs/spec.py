"""RunSpec: everything that determines a training run, resolved and hashed into a run id.

Two runs with the same resolved spec and seed get the same ``run_id``, so ``run`` and
``compare`` recognise (and reuse) a finished run. Fields that do not change the result
(progress bars, checkpoint cadence, the device, the parallel strategy and activation
checkpointing) are kept out of the hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from architectures import ModelConfig, get
from harness.device import resolve_dtype
from harness.flops.analytic import DEFAULT_ATTENTION_FLOPS, check_attention_flops
from harness.training.distributed import env_world_size
from harness.training.parallel import PARALLEL_CHOICES, default_parallel
from harness.runs.validation import check_recipe, check_recipe_field, check_run_numbers, check_train_probes

# Used where a size's ``architectures.presets.SizeDefaults`` leave a value open (None).
GENERIC_LR = 3e-4
GENERIC_BATCH = (8, 500_000)  # sequences per forward pass, tokens per optimizer step


@dataclass
class Recipe:
    """The optimisation recipe, the same for every architecture unless overridden (GPT-3's).

    AdamW β (0.9, 0.95), ε 1e-8, weight decay 0.1 on matrices only (parameters with ≥ 2
    dimensions; biases, LayerNorm gains excluded), global-norm clip 1.0, linear warm-up over
    ``warmup_fraction`` of the steps then cosine decay to ``min_lr_ratio`` × peak.
    """

    lr: float | None = None
    min_lr_ratio: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_fraction: float = 0.05
    micro_batch_size: int | None = None
    batch_tokens: int | None = None
    seq_len: int | None = None


@dataclass
class RunSpec:
    arch: str = "gpt3"
    size: str = "micro"
    data: str = "synthetic"
    vocab_size: int | None = None  # BPE vocabulary for text (None: the data's default, 4096); synthetic has its own
    seed: int = 0
    budget_flops: float | None = None
    # how the budget counts attention (harness.flops.ATTENTION_FLOPS): "causal" (mask-admitted
    # score entries, dense and banded alike) or "full" (PaLM: dense at all T keys)
    attention_flops: str = DEFAULT_ATTENTION_FLOPS
    # None: train for the FLOP budget; a number: train this many tokens (a token-matched arm)
    train_tokens: int | None = None
    # recall distances (tokens) scored at every validation point (harness.evaluation.train_probes); synthetic only
    train_probes: tuple[int, ...] = ()
    recipe: Recipe = field(default_factory=Recipe)
    overrides: dict[str, Any] = field(default_factory=dict)
    # not part of the run's identity (IDENTITY_EXCLUDES), except dtype, resolved per machine:
    eval_interval: int | None = None
    checkpoint_interval: int | None = None
    checkpoint_minutes: float = 10.0
    device: str | None = None
    dtype: str | None = None  # None: the device's default (harness.device.resolve_dtype)
    compile: bool | None = None
    parallel: str | None = None  # single | ddp | fsdp2; None: single, or ddp under torchrun (harness.training.parallel)
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass

    IDENTITY_EXCLUDES = ("eval_interval", "checkpoint_interval", "checkpoint_minutes", "device", "compile", "parallel",
                         "activation_checkpointing")

    def __post_init__(self) -> None:
        if isinstance(self.recipe, dict):
            self.recipe = Recipe(**self.recipe)
        self.resolve()

    def resolve(self) -> "RunSpec":
        """Fill every default so the spec on disk says exactly what ran.

        The recipe is copied first (the caller's ``Recipe`` is left as it was), and the
        compute dtype is resolved for this machine (``harness.device.resolve_dtype``), so a
        bf16 run and an fp32 run never share a run id.
        """
        architecture = get(self.arch)
        if self.size not in architecture.sizes:
            raise ValueError(f"unknown size {self.size!r} for {self.arch}; known sizes: {', '.join(architecture.sizes)}.")
        base = architecture.config(self.size, **self.overrides)
        recipe = self.recipe = dataclasses.replace(self.recipe)
        defaults = architecture.training_defaults(self.size)  # the size's lr, batch and budget
        if recipe.lr is None:
            recipe.lr = defaults.lr or GENERIC_LR
        if recipe.seq_len is not None:
            check_recipe_field("seq_len", recipe.seq_len)
        recipe.seq_len = base.check_seq_len(recipe.seq_len)
        if recipe.micro_batch_size is None:
            recipe.micro_batch_size = defaults.micro_batch_size or GENERIC_BATCH[0]
        if recipe.batch_tokens is None:
            recipe.batch_tokens = int(defaults.batch_tokens or GENERIC_BATCH[1])
        if self.budget_flops is None:
            if defaults.budget_flops is None:
                raise ValueError(f"size {self.size} has no default budget; give --budget FLOPS (e.g. 1e18).")
            self.budget_flops = defaults.budget_flops
        check_attention_flops(self.attention_flops)
        check_recipe(recipe)
        check_run_numbers(self)
        self.train_probes = check_train_probes(self.train_probes)
        if self.train_probes and not str(self.data).startswith("synthetic"):
            raise ValueError(f"train_probes (recall probes during training) need synthetic data; this run's data is "
                             f"{self.data!r}: drop train_probes or train on synthetic data.")
        self.dtype = resolve_dtype(self.device, self.dtype)
        if self.parallel is None:
            self.parallel = default_parallel(env_world_size())
        elif self.parallel not in PARALLEL_CHOICES:
            raise ValueError(f"unknown parallel strategy {self.parallel!r}; choose one of {', '.join(PARALLEL_CHOICES)}.")
        return self

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The model config at this size, with overrides and the data's vocabulary."""
        return get(self.arch).config(self.size, **{**self.overrides, "vocab_size": vocab_size})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def identity(self) -> dict[str, Any]:
        """The hashed fields. ``attention_flops="full"``, ``train_tokens=None`` and empty ``train_probes`` are left
        out, so a run planned as before those fields existed keeps its id (and is reused); text runs carry
        ``text_split`` (the content-hash split of ``harness data prepare``), so a record made with
        the earlier positional split is never reused as if it were one of them."""
        data = self.to_dict()
        for key in self.IDENTITY_EXCLUDES:
            data.pop(key, None)
        if data.get("attention_flops") == "full":
            data.pop("attention_flops")
        if not str(self.data).startswith("synthetic"):  # text is split per document by content hash (shards)
            data["text_split"] = "content-hash"
        if data.get("train_tokens") is None:
            data.pop("train_tokens", None)
        if not data.get("train_probes"):
            data.pop("train_probes", None)
        return data

    def run_id(self) -> str:
        """``<arch>-<size>-<hash of the resolved spec>-s<seed>``: the same spec, the same id."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"{self.arch}-{self.size}-{digest}-s{self.seed}"
