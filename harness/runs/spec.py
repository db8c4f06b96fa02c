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
from harness.training.distributed import env_world_size
from harness.training.parallel import PARALLEL_CHOICES, default_parallel
from harness.runs.validation import check_recipe, check_recipe_field, check_run_numbers

# Per-size peak learning rates: GPT-3 Table 2.1 by shape; GPT-1's paper value; CPU sizes ours.
DEFAULT_LR = {
    "nano": 3e-3,
    "mini": 2e-3,
    "micro": 1e-3,
    "117m": 2.5e-4,
    "124m": 6e-4,
    "125m": 6e-4,
    "125m-e8": 6e-4,
    "350m": 3e-4,
    "355m": 3e-4,
    "760m": 2.5e-4,
    "774m": 2.5e-4,
    "1.3b": 2e-4,
    "1.3b-e16": 2e-4,
    "1558m": 2e-4,
    "2.7b": 1.6e-4,
    "6.7b": 1.2e-4,
    "13b": 1e-4,
    "175b": 0.6e-4,
}

# Default training budgets (FLOPs, 2 per multiply-add) sized so the default run finishes in a
# few minutes on a 2-core CPU; GPU sizes get Chinchilla-style 20 tokens/parameter when asked.
DEFAULT_BUDGET = {"nano": 2e11, "mini": 1e13, "micro": 2e13}

# Default micro-batch (sequences) and tokens per optimizer step by size.
DEFAULT_BATCH = {"nano": (16, 16 * 64), "mini": (8, 8 * 256), "micro": (8, 8 * 256)}


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
        if recipe.lr is None:
            recipe.lr = DEFAULT_LR.get(self.size, 3e-4)
        if recipe.seq_len is not None:
            check_recipe_field("seq_len", recipe.seq_len)
        recipe.seq_len = base.check_seq_len(recipe.seq_len)
        micro_default, tokens_default = DEFAULT_BATCH.get(self.size, (8, 0.5e6))
        if recipe.micro_batch_size is None:
            recipe.micro_batch_size = micro_default
        if recipe.batch_tokens is None:
            recipe.batch_tokens = int(tokens_default)
        if self.budget_flops is None:
            if self.size not in DEFAULT_BUDGET:
                raise ValueError(f"size {self.size} has no default budget; give --budget FLOPS (e.g. 1e18).")
            self.budget_flops = DEFAULT_BUDGET[self.size]
        check_recipe(recipe)
        check_run_numbers(self)
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
        data = self.to_dict()
        for key in self.IDENTITY_EXCLUDES:
            data.pop(key, None)
        return data

    def run_id(self) -> str:
        """``<arch>-<size>-<hash of the resolved spec>-s<seed>``: the same spec, the same id."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"{self.arch}-{self.size}-{digest}-s{self.seed}"
