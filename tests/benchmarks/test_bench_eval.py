"""Evaluation speed: packed log-likelihood vs one request per forward, KV-cache decoding vs
recomputing the prefix (micro model, CPU).

    python -m pytest tests/benchmarks/test_bench_eval.py --benchmark-enable     # pytest-benchmark tables
    python tests/benchmarks/test_bench_eval.py                                  # the two ratios, one run

Under ``--benchmark-disable`` (the default in pyproject) every benchmark runs once as a test,
checking that both ways give the same results. Times are printed, never asserted.

The log-likelihood requests look like a 4-way multiple-choice task (16 questions, contexts of
32-159 tokens, answers of 1-8 tokens). Packed (the default): a question's context runs once
with its four answers in one row, questions are packed into rows, and the LM head runs only
at scored positions. One request per forward: the model behind the basic forward contract
(full logits), batch size 1 — what a plain loop over requests does.
"""

from __future__ import annotations

import time

import pytest
import torch

from architectures import build
from harness.evaluation.lm import HarnessLM
from harness.speed_ratios import (EVAL_CHOICES, EVAL_DOCS, TokenIdTokenizer, multiple_choice_requests,
                                   request_loglikelihoods)

NEW_TOKENS = 128
PROMPT_TOKENS = 64
BATCH_SIZE = 16
SIZE = "micro"
N_REQUESTS = EVAL_DOCS * EVAL_CHOICES


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("gpt2", size=SIZE, vocab_size=TokenIdTokenizer().vocab_size).eval()


def make_prompt() -> list[list[int]]:
    return [torch.randint(1, 4096, (PROMPT_TOKENS,), generator=torch.Generator().manual_seed(1)).tolist()]


def loglikelihood(model, requests, batch_size):
    """Packed with ``batch_size`` rows per forward; ``batch_size=1``: one request per forward, full logits."""
    return request_loglikelihoods(model, requests, batch_size)


def decode(model, prompt, use_cache):
    return HarnessLM(model, TokenIdTokenizer()).greedy_generate(prompt, NEW_TOKENS, use_cache=use_cache, stop_at_eot=False)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model()


@pytest.fixture(scope="module")
def requests_() -> list[tuple]:
    return multiple_choice_requests()


@pytest.fixture(scope="module")
def prompt() -> list[list[int]]:
    return make_prompt()


def test_bench_loglikelihood_batched(benchmark, model, requests_):
    batched = benchmark(loglikelihood, model, requests_, BATCH_SIZE)
    single = loglikelihood(model, requests_, 1)
    assert [g for _, g in batched] == [g for _, g in single]
    assert [lp for lp, _ in batched] == pytest.approx([lp for lp, _ in single], rel=1e-5, abs=1e-4)


def test_bench_loglikelihood_one_per_forward(benchmark, model, requests_):
    assert len(benchmark(loglikelihood, model, requests_, 1)) == len(requests_)


def test_bench_decode_kv_cache(benchmark, model, prompt):
    cached = benchmark(decode, model, prompt, True)
    assert cached == decode(model, prompt, False) and len(cached[0]) == NEW_TOKENS


def test_bench_decode_recompute(benchmark, model, prompt):
    assert len(benchmark(decode, model, prompt, False)[0]) == NEW_TOKENS


def measure(repeats: int = 3, cpu_time: bool = False) -> dict[str, float]:
    """Best-of-``repeats`` times of the four ways, in one process: wall (perf_counter), or the
    process's CPU time (``cpu_time``; with one thread, robust to other processes' load)."""
    model, requests, prompt = make_model(), multiple_choice_requests(), make_prompt()
    loglikelihood(model, requests[:8], BATCH_SIZE)  # warm-up
    ways = {
        "loglikelihood_batched_s": lambda: loglikelihood(model, requests, BATCH_SIZE),
        "loglikelihood_one_per_forward_s": lambda: loglikelihood(model, requests, 1),
        "decode_kv_cache_s": lambda: decode(model, prompt, True),
        "decode_recompute_s": lambda: decode(model, prompt, False),
    }
    times = {name: float("inf") for name in ways}
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits every way
        for name, way in ways.items():
            start = time.process_time() if cpu_time else time.perf_counter()
            way()
            times[name] = min(times[name], (time.process_time() if cpu_time else time.perf_counter()) - start)
    times["batched_speedup"] = times["loglikelihood_one_per_forward_s"] / times["loglikelihood_batched_s"]
    times["kv_cache_speedup"] = times["decode_recompute_s"] / times["decode_kv_cache_s"]
    return times


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Print the evaluation speedups (no assertions).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t = measure(args.repeats)
    print(
        f"{SIZE}, {torch.get_num_threads()} threads, best of {args.repeats}\n"
        f"log-likelihood, {N_REQUESTS} requests: batch {BATCH_SIZE} {t['loglikelihood_batched_s']:.3f} s, "
        f"one per forward {t['loglikelihood_one_per_forward_s']:.3f} s → {t['batched_speedup']:.1f}x\n"
        f"greedy decoding, {NEW_TOKENS} new tokens after {PROMPT_TOKENS}: KV cache {t['decode_kv_cache_s']:.3f} s, "
        f"recomputing the prefix {t['decode_recompute_s']:.3f} s → {t['kv_cache_speedup']:.1f}x"
    )
