"""Speed ratios of the README's speed table that the regression gate can re-measure quickly.

Each ratio is "how many times faster" one way of doing the same work is than another, both
timed in this process by its CPU time (median of ``repeats`` calls after one warm-up call),
so the machine's speed cancels and other processes' load barely moves it when torch uses
one thread. Higher is better for every ratio:

- ``banded_vs_dense_fp32`` / ``_bf16``: the banded attention core (T = 2048, window 256,
  block 64, gpt3 125m's 12 heads x 64) against dense causal SDPA, forward + backward.
- ``moe_vs_dense_per_active_flop``: gpt4 micro's training step against gpt3 micro's, per
  active training FLOP (1.0 = an MoE FLOP costs what a dense FLOP costs).
- ``packed_eval_vs_one_per_forward``: packed log-likelihood (shared contexts, scored
  positions only, 16 rows per forward) against one request per forward with full logits,
  gpt2 micro, 64 synthetic 4-way multiple-choice requests.

``benchmarks/speed.py`` prints these beside the ratios that need outside code (nanoGPT,
lm-eval's HFLM) or minutes (compile); ``harness check --speed`` gates these against the
baseline.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

SPEED_RATIOS = ("banded_vs_dense_fp32", "banded_vs_dense_bf16", "moe_vs_dense_per_active_flop",
                "packed_eval_vs_one_per_forward")
BANDED_SHAPE = {"T": 2048, "window": 256, "block": 64, "heads": 12, "d_head": 64}
EVAL_DOCS, EVAL_CHOICES, EVAL_VOCAB = 16, 4, 4096


def cpu_median(fn: Callable[[], object], repeats: int) -> float:
    """Median process CPU time (seconds) of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def banded_core_speedup(dtype: torch.dtype, repeats: int = 5, T: int = BANDED_SHAPE["T"],
                        window: int = BANDED_SHAPE["window"]) -> float:
    """Dense causal SDPA time / banded kernel time, forward + backward, one sequence."""
    from architectures.attention import banded_attention_blocked

    shape = BANDED_SHAPE
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, shape["heads"], T, shape["d_head"], generator=g).to(dtype).requires_grad_()
               for _ in range(3))

    def step(kernel):
        return lambda: kernel(q, k, v).float().sum().backward()

    dense = cpu_median(step(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), repeats)
    banded = cpu_median(step(lambda q, k, v: banded_attention_blocked(q, k, v, window, shape["block"])), repeats)
    return dense / banded


def moe_per_active_flop(repeats: int = 5, size: str = "micro", batch_size: int = 8, seq_len: int = 256) -> dict:
    """gpt4 (MoE) vs gpt3 (dense) training step at the device's default settings, per active FLOP."""
    import architectures
    from harness.bench import TrainingStep
    from harness.device import configure_device
    from harness.flops.analytic import train_flops_per_token

    settings = configure_device("cpu")
    step_s, flops = {}, {}
    for arch in ("gpt3", "gpt4"):
        torch.manual_seed(0)
        model = architectures.build(arch, size)
        step = TrainingStep(model, settings, batch_size, seq_len, model.config.vocab_size)
        flops[arch] = train_flops_per_token(model.config, seq_len, "full")  # executed work, as MFU counts it
        step_s[arch] = cpu_median(step.step, repeats)
    return {"speedup": (step_s["gpt3"] / flops["gpt3"]) / (step_s["gpt4"] / flops["gpt4"]),
            "step_cpu_s": step_s, "active_flops_ratio": flops["gpt4"] / flops["gpt3"], "dtype": settings.dtype}


class TokenIdTokenizer:
    """Token ids written as text (``"5 17 3"``), for evaluating synthetic token requests."""

    name = "ids"

    def __init__(self, vocab_size: int = EVAL_VOCAB, eot_id: int = 0):
        self.vocab_size, self.eot_id = vocab_size, eot_id

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)


def multiple_choice_requests(docs: int = EVAL_DOCS, choices: int = EVAL_CHOICES, seed: int = 0) -> list[tuple]:
    """lm-eval token requests ``(None, context, continuation)`` shaped like a multiple-choice task:
    contexts of 32-159 tokens shared by ``choices`` answers of 1-8 tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(docs):
        context = torch.randint(1, EVAL_VOCAB, (int(torch.randint(32, 160, (1,), generator=g)),), generator=g).tolist()
        for _ in range(choices):
            n_choice = int(torch.randint(1, 9, (1,), generator=g))
            out.append((None, context, torch.randint(1, EVAL_VOCAB, (n_choice,), generator=g).tolist()))
    return out


class FullLogitsOnly(torch.nn.Module):
    """A model behind the basic forward contract only (full logits, no packing): what a plain
    loop over requests runs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, idx, kv_cache=None):
        return self.model(idx, kv_cache=kv_cache)


def request_loglikelihoods(model: torch.nn.Module, requests: list[tuple], batch_size: int) -> list:
    """Log-likelihoods through the harness's lm-eval model: packed with ``batch_size`` rows per
    forward, or (``batch_size=1``) one request per forward with full logits."""
    from harness.evaluation.lm import HarnessLM

    lm_model = FullLogitsOnly(model) if batch_size == 1 else model
    lm = HarnessLM(lm_model, TokenIdTokenizer(), batch_size=batch_size)
    return lm._loglikelihood_tokens(requests, disable_tqdm=True)


def packed_eval_speedup(repeats: int = 3, size: str = "micro", batch_size: int = 16) -> float:
    """One-request-per-forward time / packed time on the same requests and weights."""
    from architectures import build

    torch.manual_seed(0)
    model = build("gpt2", size=size, vocab_size=EVAL_VOCAB).eval()
    requests = multiple_choice_requests()
    packed = cpu_median(lambda: request_loglikelihoods(model, requests, batch_size), repeats)
    one_per_forward = cpu_median(lambda: request_loglikelihoods(model, requests, 1), repeats)
    return one_per_forward / packed


def measure_speed_ratios(repeats: int = 3) -> dict[str, float]:
    """Every ratio of ``SPEED_RATIOS`` (about a minute on one CPU thread)."""
    return {
        "banded_vs_dense_fp32": banded_core_speedup(torch.float32, repeats),
        "banded_vs_dense_bf16": banded_core_speedup(torch.bfloat16, repeats),
        "moe_vs_dense_per_active_flop": moe_per_active_flop(repeats)["speedup"],
        "packed_eval_vs_one_per_forward": packed_eval_speedup(repeats),
    }
