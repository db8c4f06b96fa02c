"""Inference benchmark: prefill and decode measured apart (optimum-benchmark's conventions).

``bench_inference(...)`` builds the model (an architecture and size, or a run's own weights
with ``run``), runs ``warmup`` untimed rounds, then ``repeats`` timed rounds of:

- **prefill**: B random prompts of P tokens, one new token (a fresh cache, the prompt
  forward, the argmax); ``prefill_tokens_per_s`` = B·P / median prefill time.
- **decode**: after an untimed prefill, G greedy steps with the cache on, each timed (device
  synchronised); ``decode_tokens_per_s`` = B·G / median total decode time of a round;
  ``decode_latency_ms_p50/p90/p99``: percentiles over every timed step (ms per step; a step
  yields one token for each of the B rows).

Memory: ``peak_memory_bytes`` (CUDA max_memory_allocated, or the process's peak RSS on the
CPU, as ``harness bench``). KV cache: ``kv_cache_bytes`` is what the cache for B rows of
P + G positions holds (its key and value buffers, measured from the tensors; on CUDA also
the allocator's growth when it is created, ``kv_cache_bytes_allocated``);
``kv_bytes_per_token`` = that / (B·(P + G)), with ``kv_bytes_per_token_analytic``
(``architectures.kv_cache.kv_bytes_per_token``) beside it; ``kv_bytes_per_token_at_context``
the same measured for one row of the full context.

``record_serving(run, result)`` keeps a result in the run's record under ``serving`` (keyed
``b<B>``), where compare and study reports find it (``harness.reporting.serving``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from harness.bench import peak_memory_bytes, synchronize
from harness.device import configure_device
from harness.serving.generation import decode, prefill

DEFAULT_NEW_TOKENS = 128


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_model(arch: str | None, size: str | None, run: str | None, overrides: dict | None, seed: int):
    """(model on the CPU in eval mode, where it came from): a run's weights, or a fresh model."""
    import architectures

    if run is not None:
        from harness.runs.run_dir import load_run_model

        if overrides:
            raise ValueError("--set changes the model shape; a run's weights fix it: leave out --set with --run.")
        model, _, _ = load_run_model(run)
        return model, f"weights of run {run}"
    torch.manual_seed(seed)
    model = architectures.build(arch, size, **(overrides or {}))
    return model.eval(), f"random init (seed {seed})"


def resolve_lengths(context: int, prompt_tokens: int | None, new_tokens: int | None) -> tuple[int, int]:
    """(P, G): defaults P = context/2 and G = min(128, context - P); P + G must fit the context."""
    P = context // 2 if prompt_tokens is None else int(prompt_tokens)
    G = min(DEFAULT_NEW_TOKENS, context - P) if new_tokens is None else int(new_tokens)
    if P < 1 or G < 1:
        raise ValueError(f"--prompt-tokens and --new-tokens must be at least 1, got {P} and {G}.")
    if P + G > context:
        raise ValueError(f"--prompt-tokens {P} + --new-tokens {G} exceed the context of {context}; make them sum to at most {context}.")
    return P, G


def time_prefill(model, prompts: list[list[int]], device: str) -> float:
    """Seconds for a fresh cache, the prompt forward and the first token."""
    synchronize(device)
    start = time.perf_counter()
    _, logits = prefill(model, prompts, 1)
    logits.argmax(dim=-1)
    synchronize(device)
    return time.perf_counter() - start


def time_decode(model, prompts: list[list[int]], new_tokens: int, device: str) -> list[float]:
    """Seconds of each of ``new_tokens`` greedy steps after an untimed prefill."""
    cache, logits = prefill(model, prompts, new_tokens)
    steps = decode(model, cache, logits, new_tokens + 1)
    next(steps)  # the prefill's own token
    times = []
    for _ in range(new_tokens):
        synchronize(device)
        start = time.perf_counter()
        next(steps)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure_kv_cache(model, batch_size: int, tokens: int, settings) -> dict[str, Any]:
    """Bytes the cache for ``batch_size`` rows of ``tokens`` positions holds, with the analytic figure."""
    from architectures.kv_cache import kv_bytes_per_token

    cuda = settings.device_type == "cuda"
    before = torch.cuda.memory_allocated() if cuda else 0
    cache = model.new_kv_cache(batch_size, max_tokens=tokens)
    allocated = torch.cuda.memory_allocated() - before if cuda else None
    held = getattr(cache, "nbytes", None)
    element = next(model.parameters()).element_size()
    context = int(model.config.context)
    at_context = getattr(model.new_kv_cache(1, max_tokens=context), "nbytes", None)
    return {
        "kv_cache_bytes": held,
        "kv_bytes_per_token_at_context": at_context / context if at_context is not None else None,
        "kv_cache_bytes_allocated": allocated,
        "kv_bytes_per_token": held / (batch_size * tokens) if held is not None else None,
        "kv_bytes_per_token_analytic": kv_bytes_per_token(model.config, tokens, element),
        "kv_positions_per_row": tokens,
    }


def bench_inference(
    arch: str | None = None,
    size: str | None = None,
    *,
    run: str | None = None,
    overrides: dict | None = None,
    batch_size: int = 1,
    prompt_tokens: int | None = None,
    new_tokens: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Prefill and decode throughput, latency percentiles, memory and KV bytes; a JSON-ready dict."""
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need --batch-size ≥ 1, --steps ≥ 1 and --warmup ≥ 0; got {batch_size}, {repeats}, {warmup}.")
    if (arch is None) == (run is None):
        raise ValueError("give either an architecture or a run to benchmark, not both.")
    settings = configure_device(device, dtype, compile=False)
    model, weights = load_model(arch, size, run, overrides, seed)
    model = model.to(settings.device, dtype=settings.autocast_dtype or torch.float32).eval()
    P, G = resolve_lengths(int(model.config.context), prompt_tokens, new_tokens)
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, model.config.vocab_size, (batch_size, P), generator=generator).tolist()
    if settings.device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch.device(settings.device))
    with torch.inference_mode():
        for _ in range(warmup):
            time_prefill(model, prompts, settings.device)
            time_decode(model, prompts, G, settings.device)
        prefill_times = [time_prefill(model, prompts, settings.device) for _ in range(repeats)]
        decode_rounds = [time_decode(model, prompts, G, settings.device) for _ in range(repeats)]
        kv = measure_kv_cache(model, batch_size, P + G, settings)
    memory, memory_kind = peak_memory_bytes(settings.device)
    steps = [t for round_ in decode_rounds for t in round_]
    return {
        "arch": model.config.arch, "size": model.config.size, "run": run, "weights": weights,
        "device": settings.device, "device_name": settings.device_name, "dtype": settings.dtype,
        "batch_size": batch_size, "prompt_tokens": P, "new_tokens": G, "warmup": warmup, "repeats": repeats,
        "prefill_s_median": statistics.median(prefill_times),
        "prefill_tokens_per_s": batch_size * P / statistics.median(prefill_times),
        "decode_s_median": statistics.median(sum(r) for r in decode_rounds),
        "decode_tokens_per_s": batch_size * G / statistics.median(sum(r) for r in decode_rounds),
        **{f"decode_latency_ms_p{q}": 1e3 * percentile(steps, q) for q in (50, 90, 99)},
        "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
        **kv,
        "attention_layers": attention_layers(model.config),
        "torch_version": torch.__version__,
        "convention": (
            "prefill tokens/s = B x P / median time of (fresh cache, prompt forward, first token); decode tokens/s = "
            "B x G / median time of G greedy cached steps; latency = ms per decode step (B tokens); KV bytes = "
            "keys + values held, per token of one row"
        ),
    }


def attention_layers(config) -> dict[str, Any]:
    """How many layers of each attention kind, and the band (tokens) of the banded ones."""
    kinds = [config.layer_attention(layer) for layer in range(config.n_layer)]
    return {"dense": kinds.count("dense"), "banded": kinds.count("banded"),
            "window": config.window if "banded" in kinds else None}


RECORDED_KEYS = ("decode_tokens_per_s", "prefill_tokens_per_s", "decode_latency_ms_p50", "decode_latency_ms_p90",
                 "decode_latency_ms_p99", "kv_bytes_per_token", "kv_bytes_per_token_analytic",
                 "kv_bytes_per_token_at_context", "peak_memory_bytes", "batch_size", "prompt_tokens", "new_tokens",
                 "device", "device_name", "dtype", "torch_version")


def record_serving(run: str, result: dict[str, Any]) -> dict[str, Any]:
    """Merge ``result`` (its main figures) into the run's record as ``serving["b<B>"]``; returns the record."""
    from harness.runs.records import update_record
    from harness.runs.run_dir import resolve_run_dir

    entry = {key: result[key] for key in RECORDED_KEYS if key in result}
    return update_record(resolve_run_dir(run), serving={f"b{result['batch_size']}": entry})
