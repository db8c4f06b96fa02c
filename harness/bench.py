"""Throughput benchmark: training and prefill tokens/s, achieved FLOP/s, MFU, peak memory.

``bench(arch, size, ...)`` builds the model with ``harness.device.configure_device`` (the
trainer's own defaults), runs warm-up steps, then times ``steps`` steps and reports medians:

- ``train_tokens_per_s``: batch × seq_len / median time of one full training step —
  forward (autocast), backward, gradient clipping to norm 1, fused AdamW step, zeroing
  the gradients — in train mode (dropout on, MoE capacity limit on), as the trainer runs it.
- ``prefill_tokens_per_s``: batch × seq_len / median time of one inference-mode forward
  pass that fills a fresh KV cache (eval mode).
- ``achieved_flops_per_s``: analytic training FLOPs per token
  (``harness.flops.train_flops_per_token``, 3 × forward, 2 per multiply-add, attention counted as
  PaLM does — ``attention_flops="full"`` — as MFU figures elsewhere are) × train tokens/s.
- ``peak_flops_per_s``: the device's own dense matmul ceiling in that dtype, measured once
  with a large matmul and cached (``harness.device.measured_peak_flops_per_s``); the cache
  keeps the best rate seen, so a ceiling first measured while other processes loaded the
  CPU (which reads low and inflates MFU) is corrected by ``refresh_peak``/``--remeasure-peak``
  on a quiet machine, and automatically whenever achieved would exceed it.
- ``mfu`` = achieved / peak.
- ``peak_memory_bytes``: CUDA ``torch.cuda.max_memory_allocated`` over the benchmark;
  CPU the process's peak resident set (``resource.getrusage(...).ru_maxrss``, in bytes),
  which includes everything the process held before — ``peak_memory_kind`` says which.

Timing values depend on the machine and its load; medians of alternating runs are the
figure to compare (``benchmarks/nanogpt_reference.py`` does that for nanoGPT).
"""

from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from harness.device import DeviceSettings, configure_device
from harness.training.optim import adamw_param_groups
from harness.training.step import accumulate_gradients, apply_gradients

DEFAULT_STEPS = 10
DEFAULT_WARMUP = 3
DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 32}
BATCH_POOL = 4  # distinct random batches cycled through (data loading is not timed)


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def make_adamw(model: nn.Module, settings: DeviceSettings, lr: float = 6e-4) -> torch.optim.AdamW:
    """The benchmark's optimizer: AdamW(β=(0.9, 0.95), wd 0.1), fused when the settings say so."""
    extra = {"fused": True} if settings.fused_adamw else {}
    return torch.optim.AdamW(adamw_param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95), **extra)  # as Recipe()


def ours_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x, targets=y).loss


class TrainingStep:
    """One timed training step of a model: forward, backward, clip, optimizer step, zero grads.

    The step is the trainer's own (``harness.training.step``) with ``micro_steps`` micro-batches of
    ``batch_size`` sequences each (gradient accumulation, as a recipe's micro-batch splits a step; default 1).
    ``loss_of(model, x, y)`` returns the scalar loss (ours: ``model(x, targets=y).loss``), so
    the same loop times any model — the nanoGPT reference uses it too.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: DeviceSettings,
        batch_size: int,
        seq_len: int,
        vocab_size: int,
        *,
        loss_of: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = ours_loss,
        optimizer: torch.optim.Optimizer | None = None,
        grad_clip: float = 1.0,
        seed: int = 0,
        micro_steps: int = 1,
    ):
        self.model = model
        self.settings = settings
        self.device = settings.device
        self.loss_of = loss_of
        self.optimizer = optimizer or make_adamw(model, settings)
        self.grad_clip = grad_clip
        self.train_model = torch.compile(model) if settings.compile else model
        generator = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, vocab_size, (BATCH_POOL, batch_size, seq_len + 1), generator=generator)
        self.batches = [(t[:, :-1].contiguous().to(self.device), t[:, 1:].contiguous().to(self.device)) for t in tokens]
        self.micro_steps = micro_steps
        self.tokens_per_step = batch_size * seq_len * micro_steps
        self.batch_size, self.seq_len = batch_size, seq_len
        self.n = 0
        self.last_loss = float("nan")

    def step(self) -> float:
        """Run one training step; returns its wall time in seconds (device synchronised)."""
        pool = self.batches
        micro_batches = [pool[(self.n * self.micro_steps + i) % len(pool)] for i in range(self.micro_steps)]
        self.n += 1
        self.model.train()
        synchronize(self.device)
        start = time.perf_counter()
        loss, _ = accumulate_gradients(self.train_model, micro_batches, self.micro_steps, self.settings.autocast,
                                       losses=self._losses)
        apply_gradients(self.model, self.optimizer, self.grad_clip)
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.last_loss = float(loss)
        return elapsed

    def _losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        loss = self.loss_of(model, x, y)
        return loss, loss, {}

    @torch.inference_mode()
    def prefill(self) -> float:
        """One inference-mode forward over a batch (filling a fresh KV cache when the model has one)."""
        x, _ = self.batches[self.n % len(self.batches)]
        self.model.eval()
        synchronize(self.device)
        start = time.perf_counter()
        with self.settings.autocast():
            if hasattr(self.model, "new_kv_cache"):
                self.model(x, kv_cache=self.model.new_kv_cache(x.shape[0]))
            else:
                self.model(x)
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.model.train()
        return elapsed


def peak_memory_bytes(device: str) -> tuple[int, str]:
    """(bytes, what was measured): CUDA max_memory_allocated, else the process's peak RSS."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(torch.device(device))), "cuda max_memory_allocated (bytes)"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return int(rss * scale), "process peak resident set, ru_maxrss (bytes; the whole process so far)"


def model_config(arch: str, size: str | None, overrides: dict | None = None):
    import architectures

    return architectures.get(arch).config(size, **(overrides or {}))


def run_model_config(run: str, overrides: dict | None = None):
    """The model config of a run directory (trained or imported), with field overrides."""
    from architectures.config import ModelConfig
    from harness.io import read_json
    from harness.runs.run_dir import CONFIG_NAME, resolve_run_dir

    path = resolve_run_dir(run) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a run directory made by `harness run` or `harness import`.")
    config = ModelConfig.from_dict(read_json(path)["model"])
    return config.replace(**overrides) if overrides else config


@dataclass
class _Choice:
    value: object
    source: str  # "given" or "default"


def bench(
    arch: str,
    size: str | None = None,
    *,
    batch_size: int | None = None,
    seq_len: int | None = None,
    overrides: dict | None = None,
    dtype: str | None = None,
    device: str | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    compile: bool | None = None,
    prefill: bool = True,
    refresh_peak: bool = False,
    seed: int = 0,
    settings: DeviceSettings | None = None,
    run: str | None = None,
) -> dict:
    """Benchmark one architecture at one shape (or a run's shape, ``run``); returns a JSON-ready dict.

    ``steps`` / ``warmup``: None takes ``DEFAULT_STEPS`` / ``DEFAULT_WARMUP`` (reported as defaults)."""
    import architectures

    given_steps, given_warmup = steps is not None, warmup is not None
    steps = DEFAULT_STEPS if steps is None else steps
    warmup = DEFAULT_WARMUP if warmup is None else warmup
    _check_counts(steps, warmup, batch_size)
    config = model_config(arch, size, overrides) if run is None else run_model_config(run, overrides)
    T = config.check_seq_len(seq_len)
    settings = settings or configure_device(device, dtype, compile=compile)
    choices = _choices(settings, batch_size, T, given_seq_len=seq_len is not None, given_dtype=bool(dtype),
                       given_device=bool(device), steps=(steps, given_steps), warmup=(warmup, given_warmup))
    torch.manual_seed(seed)
    model = architectures.get(config.arch).build(config).to(settings.device)
    if settings.device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch.device(settings.device))
    runner = TrainingStep(model, settings, int(choices["batch_size"].value), T, config.vocab_size, seed=seed)
    train_times, prefill_times = _time(runner, steps, warmup, prefill)
    return {
        "arch": config.arch,
        "size": config.size,
        "overrides": dict(overrides or {}),
        "device": settings.device,
        "device_name": settings.device_name,
        "dtype": settings.dtype,
        "batch_size": runner.batch_size,
        "seq_len": T,
        "tokens_per_step": runner.tokens_per_step,
        "steps": steps,
        "warmup": warmup,
        **_rates(config, runner, settings, train_times, prefill_times, refresh_peak),
        **_memory_and_params(model, settings),
        "final_loss": runner.last_loss,
        "defaults": {name: {"value": c.value, "source": c.source} for name, c in choices.items()},
        "settings": settings.to_dict(),
        "torch_version": torch.__version__,
        "convention": (
            "tokens/s = batch x seq_len / median step time; achieved FLOP/s = analytic training FLOPs/token "
            "(3 x forward, 2 FLOPs per multiply-add, attention as PaLM counts it: attention_flops=full) x train "
            "tokens/s; mfu = achieved / measured matmul peak"
        ),
    }


def _choices(settings: DeviceSettings, batch_size: int | None, seq_len: int, *, given_seq_len: bool,
             given_dtype: bool, given_device: bool, steps: tuple[int, bool],
             warmup: tuple[int, bool]) -> dict[str, _Choice]:
    """Each setting's value and whether the user gave it or a default chose it (reported with the result);
    ``steps`` / ``warmup``: (value, whether given)."""
    return {
        "batch_size": _Choice(
            DEFAULT_BATCH_SIZE[settings.device_type] if batch_size is None else batch_size,
            "default" if batch_size is None else "given",
        ),
        "seq_len": _Choice(seq_len, "given" if given_seq_len else "default (the context)"),
        "dtype": _Choice(settings.dtype, "given" if given_dtype else "default"),
        "device": _Choice(settings.device, "given" if given_device else "default"),
        "steps": _Choice(steps[0], "given" if steps[1] else "default"),
        "warmup": _Choice(warmup[0], "given" if warmup[1] else "default"),
    }


def _check_counts(steps: int, warmup: int, batch_size: int | None) -> None:
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}.")
    if warmup < 0:
        raise ValueError(f"--warmup must be 0 or more, got {warmup}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}.")


def _time(runner: TrainingStep, steps: int, warmup: int, prefill: bool) -> tuple[list[float], list[float]]:
    """Seconds per training step and per prefill (``steps`` each, after warm-up)."""
    for _ in range(warmup):
        runner.step()
    train_times = [runner.step() for _ in range(steps)]
    prefill_times: list[float] = []
    if prefill:
        for _ in range(min(warmup, 2)):
            runner.prefill()
        prefill_times = [runner.prefill() for _ in range(steps)]
    return train_times, prefill_times


def _rates(config, runner: TrainingStep, settings: DeviceSettings, train_times: list[float],
           prefill_times: list[float], refresh_peak: bool) -> dict:
    """Step times, tokens/s, FLOPs per token, achieved and peak FLOP/s, MFU."""
    from harness.flops import MFU_ATTENTION_FLOPS, forward_flops_per_token, train_flops_per_token

    train_s = statistics.median(train_times)
    train_tokens_per_s = runner.tokens_per_step / train_s
    prefill_s = statistics.median(prefill_times) if prefill_times else None
    train_fpt = train_flops_per_token(config, runner.seq_len, MFU_ATTENTION_FLOPS)  # MFU: PaLM's convention
    achieved = train_fpt * train_tokens_per_s
    peak = settings.peak_flops_per_s(refresh=refresh_peak)
    if achieved > peak:  # the cached ceiling was measured on a busy machine: measure it again
        peak = settings.peak_flops_per_s(refresh=True)
    return {
        "train_step_s_median": train_s,
        "train_step_s": train_times,
        "train_step_s_min": min(train_times),
        "train_tokens_per_s": train_tokens_per_s,
        "prefill_s_median": prefill_s,
        "prefill_tokens_per_s": runner.tokens_per_step / prefill_s if prefill_s else None,
        "forward_flops_per_token": forward_flops_per_token(config, runner.seq_len, MFU_ATTENTION_FLOPS),
        "attention_flops": MFU_ATTENTION_FLOPS,
        "train_flops_per_token": train_fpt,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak,
        "peak_flops_source": f"measured {settings.dtype} matmul on {settings.device_name}, cached",
        "mfu": achieved / peak if peak > 0 else math.nan,
    }


def _memory_and_params(model: nn.Module, settings: DeviceSettings) -> dict:
    memory, memory_kind = peak_memory_bytes(settings.device)
    counts = model.param_counts() if hasattr(model, "param_counts") else {}
    return {"peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
            "params": counts.get("params"), "active_params": counts.get("active_params")}
