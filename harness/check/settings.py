"""What a check trains and how it judges: the settings stored in a baseline, the tolerances, the metric kinds.

Metric kinds: ``exact`` (parameter counts, FLOPs per token and by component, planned steps and
tokens, the text split's counts: equal), ``digest`` (the optimizer's parameter groups, the text
tokenizer and validation tokens: equal strings), ``deterministic`` (losses and the last learning
rate of the short runs, the text run's bits per byte: relative ``DETERMINISTIC_RTOL``), ``data``
(entropy floor, unigram loss: relative ``DATA_RTOL``), ``perf`` (throughput against a
reference matmul, and the speed ratios of ``harness.speed_ratios`` under ``SPEED_GROUP``:
one-sided, ``PERF_TOLERANCE``), ``quality`` (every other metric: within
``max(TOLERANCE_K x seed std, floor)``, floors in nats for losses and documents for fractions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.speed_ratios import SPEED_RATIOS

BASELINE_KIND = "harness-check-baseline"
BASELINE_SCHEMA = 2
DEFAULT_BASELINE = Path("results/baselines/ci-cpu.json")

# Tolerance of a quality metric: max(TOLERANCE_K x seed-to-seed std, floor). k = 3: a seed-0
# value outside 3 standard deviations of the seed spread is a change, not noise. With 4
# seeds the std itself is uncertain (a 90 % interval of about 0.6-2.9 x the true sigma), so 3
# rather than 2. A same-machine check reproduces the baseline exactly (delta 0); forcing
# another instruction set (AVX2 instead of AVX-512 kernels: ATEN_CPU_CAPABILITY=avx2,
# ONEDNN_MAX_CPU_ISA=AVX2) moved val loss and held-out nll by at most 3e-7 nats, against
# seed-to-seed standard deviations of 0.003-0.008 nats.
TOLERANCE_K = 3.0
# Floors: losses in nats/token; fractions (acc, exact_match) in documents out of the limit.
LOSS_FLOOR_NATS = 0.005
FRACTION_FLOOR_DOCS = 2
# Throughput: warn when the ratio falls below (1 - PERF_TOLERANCE) x baseline (the median of
# the baseline's runs). Wide and fixed: on a shared 2-core machine the ratio of one run to
# another moved by up to 2.3x (0.22-0.50 for gpt2, four runs) even after dividing by the
# reference matmul, so only a halving is worth a warning.
PERF_TOLERANCE = 0.5
DATA_RTOL = 1e-6
# The deterministic metrics (fp32, one thread, fixed seed; the short runs of short_budget_flops)
# must agree to this relative tolerance. Measured: the same machine reproduces them bit for bit,
# and so did forcing AVX2 kernels instead of AVX-512 (ATEN_CPU_CAPABILITY=avx2
# ONEDNN_MAX_CPU_ISA=AVX2: every deterministic metric unchanged, while the 220-step runs' final
# validation loss moved by up to 2.6e-7 relative and gpt4's held-out nll by 8e-6). 1e-6 leaves
# room for other kernels' rounding over 10 steps, while the smallest planted bug
# (benchmarks/plant_bugs.py: the banded window one key too wide) moves gpt3's untrained loss by
# 1.1e-5 and its short-run validation loss by 4.4e-5, relative.
DETERMINISTIC_RTOL = 1e-6
REFERENCE_MATMUL = 1024  # square fp32 matmul timed before each training run (about 0.5 s on one thread)

RECORD_EXACT_KEYS = ("params", "non_embedding_params", "active_params", "forward_flops_per_token",
                     "train_flops_per_token", "planned_steps", "tokens")
# plus the text run's split and tokenization
EXACT_KEYS = RECORD_EXACT_KEYS + ("n_train_docs", "n_val_docs", "n_train_tokens", "n_val_tokens", "val_bytes",
                                  "vocab_size")
FLOPS_PREFIX = "flops."  # forward FLOPs per token by component (harness.flops.BREAKDOWN_KEYS): exact
DIGEST_KEYS = ("param_groups", "tokenizer", "val_tokens", "documents")
DETERMINISTIC_KEYS = ("init_train_loss", "short_train_loss", "short_val_loss", "short_final_lr", "short_val_bpb",
                      "short_unigram_val_bpb")
DATA_KEYS = ("entropy_floor", "unigram_val_loss")
DERIVED_METRICS = ("token_perplexity", "excess_nll_per_token")
PERF_KEY = "throughput_vs_matmul"
# The speed ratios (harness.speed_ratios.SPEED_RATIOS) sit in the baseline's metrics under this
# key, beside the architectures: measured with --speed (and --strict-perf), one thread, the
# median of SPEED_MEASUREMENTS measurements when the baseline is made.
SPEED_GROUP = "speed"
SPEED_MEASUREMENTS = 3
# The text run's metrics sit under this key, beside the architectures (``--archs text`` selects it).
TEXT_GROUP = "text"
# Metrics of the resumed short run, compared with the same check's uninterrupted one (not stored).
RESUME_PREFIX = "resume."


@dataclass
class CheckSettings:
    """What a check trains and evaluates; stored in the baseline so a check repeats it exactly."""

    archs: tuple[str, ...] = ("gpt1", "gpt2", "gpt3", "gpt4")
    size: str = "nano"
    data: str = "synthetic"
    budget_flops: float = 2e11
    seed: int = 0
    spread_seeds: tuple[int, ...] = (1, 2, 3)
    eval_limit: int = 100
    tasks: tuple[str, ...] | None = None  # None: every harness probe
    device: str = "cpu"
    dtype: str = "fp32"
    # torch intra-op threads. One: the numbers then do not depend on the machine's core count,
    # and a busy machine does not slow the check down: with two threads on two cores shared
    # with other work, OpenMP's spinning barriers made a nano training step 15x slower
    # (338 ms against 22 ms with one thread, load average 7).
    threads: int = 1
    # The deterministic metrics: a short run per architecture at this budget (10-11 nano steps,
    # its whole schedule: warm-up, cosine, floor), at the check seed only.
    short_budget_flops: float = 1e10
    # This architecture's short run is also stopped half-way and resumed, when it is checked; it
    # must equal the uninterrupted one exactly (None: no resume check).
    resume_arch: str | None = "gpt1"
    # The text run: ``text_arch`` at ``size`` on this corpus (a path under HARNESS_DATA_DIR),
    # a byte-level BPE of ``text_vocab_size`` trained on its training split, the short budget
    # (None: no text run). Missing data is a failure under CI=true, else the group is skipped.
    text_data: str | None = "corpora/tinyshakespeare.txt"
    text_arch: str = "gpt2"
    text_vocab_size: int = 512

    def __post_init__(self) -> None:
        self.archs = tuple(self.archs)
        self.spread_seeds = tuple(int(s) for s in self.spread_seeds)
        if self.tasks is not None:
            self.tasks = tuple(self.tasks)
        if not self.archs:
            raise ValueError("a check needs at least one architecture, e.g. archs=('gpt2',).")
        if not (isinstance(self.eval_limit, int) and self.eval_limit >= 1):
            raise ValueError(f"eval_limit must be a positive whole number of documents, got {self.eval_limit!r}.")
        if not (isinstance(self.budget_flops, (int, float)) and math.isfinite(self.budget_flops) and self.budget_flops > 0):
            raise ValueError(f"budget_flops must be a positive number of FLOPs, got {self.budget_flops!r}.")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be a positive whole number, got {self.threads!r}.")
        if not (isinstance(self.short_budget_flops, (int, float)) and self.short_budget_flops > 0):
            raise ValueError(f"short_budget_flops must be a positive number of FLOPs, got {self.short_budget_flops!r}.")
        if self.seed in self.spread_seeds:
            raise ValueError(f"spread_seeds {self.spread_seeds} must not include the check's seed {self.seed}.")

    def groups(self) -> list[str]:
        """The metric groups a check measures: every architecture, then the text run (when set)."""
        return [*self.archs, *([TEXT_GROUP] if self.text_data else [])]

    def task_names(self) -> list[str]:
        if self.tasks is not None:
            return list(self.tasks)
        from harness.evaluation.probes import probe_task_names

        return probe_task_names()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["archs"], data["spread_seeds"] = list(self.archs), list(self.spread_seeds)
        data["tasks"] = list(self.tasks) if self.tasks is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown check setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**data)


def metric_kind(name: str) -> str:
    """``exact``, ``digest``, ``deterministic``, ``data``, ``perf`` or ``quality`` (see the module docstring)."""
    if name in EXACT_KEYS or name.startswith(FLOPS_PREFIX):
        return "exact"
    if name in DIGEST_KEYS:
        return "digest"
    if name in DETERMINISTIC_KEYS:
        return "deterministic"
    if name in DATA_KEYS:
        return "data"
    if name == PERF_KEY or name in SPEED_RATIOS:
        return "perf"
    return "quality"


def lower_is_better(name: str) -> bool:
    """Losses, negative log-likelihoods and perplexities improve downwards; accuracies upwards."""
    return any(word in name for word in ("loss", "nll", "perplexity"))
