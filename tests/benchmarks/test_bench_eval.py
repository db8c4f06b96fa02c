"""Evaluation speed: batched log-likelihood vs one request per forward, KV-cache decoding vs
recomputing the prefix (micro model, CPU).

    python -m pytest tests/benchmarks/test_bench_eval.py --benchmark-enable     # pytest-benchmark tables
    python -m pytest tests/benchmarks/test_bench_eval.py -k speedups -s         # the two ratios, one run

Under ``--benchmark-disable`` (the default in pyproject) every benchmark runs once as a test,
checking that both ways give the same results. Times are printed, never asserted.
"""

from __future__ import annotations

import time

import pytest
import torch

from architectures import build
from harness.evaluation.lm import HarnessLM

N_DOCS, N_CHOICES = 16, 4  # like a 4-way multiple-choice task: 64 requests
NEW_TOKENS = 128
PROMPT_TOKENS = 64
BATCH_SIZE = 16


class IdTokenizer:
    """Token ids are the text; end-of-text id 0."""

    name = "ids"
    vocab_size = 4096
    eot_id = 0

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("gpt2", size="micro", vocab_size=IdTokenizer.vocab_size).eval()


@pytest.fixture(scope="module")
def requests_() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(N_DOCS):
        n_context = int(torch.randint(32, 160, (1,), generator=g))
        context = torch.randint(1, 4096, (n_context,), generator=g).tolist()
        for _ in range(N_CHOICES):
            n_choice = int(torch.randint(1, 9, (1,), generator=g))
            out.append((None, context, torch.randint(1, 4096, (n_choice,), generator=g).tolist()))
    return out


@pytest.fixture(scope="module")
def prompt() -> list[list[int]]:
    return [torch.randint(1, 4096, (PROMPT_TOKENS,), generator=torch.Generator().manual_seed(1)).tolist()]


def loglikelihood(model, requests, batch_size):
    return HarnessLM(model, IdTokenizer(), batch_size=batch_size)._loglikelihood_tokens(requests, disable_tqdm=True)


def decode(model, prompt, use_cache):
    return HarnessLM(model, IdTokenizer()).greedy_generate(prompt, NEW_TOKENS, use_cache=use_cache, stop_at_eot=False)


def test_bench_loglikelihood_batched(benchmark, model, requests_):
    results = benchmark(loglikelihood, model, requests_, BATCH_SIZE)
    assert len(results) == len(requests_)


def test_bench_loglikelihood_one_per_forward(benchmark, model, requests_):
    results = benchmark(loglikelihood, model, requests_, 1)
    assert len(results) == len(requests_)


def test_bench_decode_kv_cache(benchmark, model, prompt):
    assert len(benchmark(decode, model, prompt, True)[0]) == NEW_TOKENS


def test_bench_decode_recompute(benchmark, model, prompt):
    assert len(benchmark(decode, model, prompt, False)[0]) == NEW_TOKENS


def best_time(fn, *args, repeats: int = 2):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def test_eval_speedups(model, requests_, prompt):
    """Both ratios in one run (printed with -s); the two ways must agree."""
    loglikelihood(model, requests_[:4], BATCH_SIZE)  # warm-up
    t_batched, batched = best_time(loglikelihood, model, requests_, BATCH_SIZE)
    t_single, single = best_time(loglikelihood, model, requests_, 1)
    t_cache, cached = best_time(decode, model, prompt, True)
    t_recompute, recomputed = best_time(decode, model, prompt, False)
    assert [g for _, g in batched] == [g for _, g in single]
    assert [lp for lp, _ in batched] == pytest.approx([lp for lp, _ in single], rel=1e-5, abs=1e-4)
    assert cached == recomputed
    print(
        f"\nloglikelihood, {len(requests_)} requests (micro): batch {BATCH_SIZE} {t_batched:.3f} s, "
        f"one per forward {t_single:.3f} s → {t_single / t_batched:.1f}x"
        f"\ngreedy decoding, {NEW_TOKENS} new tokens after {PROMPT_TOKENS} (micro): KV cache {t_cache:.3f} s, "
        f"recomputing the prefix {t_recompute:.3f} s → {t_recompute / t_cache:.1f}x"
    )
