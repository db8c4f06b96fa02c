"""Greedy generation with the KV cache, for batches of prompts of different lengths.

Prompts are left-padded (``left_pad``) so every row's next token sits in the last column; the
cache (``model.new_kv_cache(B, max_tokens, left_padding)``) masks the padding and gives each
row positions from 0 at its first real token, so a row generates exactly what it would alone.
Models without ragged support (``new_kv_cache(batch_size)`` only) take equal-length prompts.

Log-probabilities are natural logs of the float32 softmax of the logits at the chosen token.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn


@dataclass
class Generation:
    """New tokens per row (stopped at ``stop_token``, which is not included) and, when asked,
    the natural-log probability of each under the model."""

    tokens: list[list[int]]
    logprobs: list[list[float]] = field(default_factory=list)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0, device="cpu") -> tuple[torch.Tensor, list[int]]:
    """([B, longest] token ids, pad count per row): each prompt right-aligned after ``pad_id``s."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generation needs at least one prompt and no empty prompt.")
    longest = max(len(p) for p in prompts)
    padding = [longest - len(p) for p in prompts]
    rows = [[pad_id] * pad + [int(t) for t in p] for p, pad in zip(prompts, padding)]
    return torch.tensor(rows, dtype=torch.long, device=device), padding


def supports_left_padding(model: nn.Module) -> bool:
    """Whether ``model.new_kv_cache`` exists and takes ``left_padding`` (ragged batches)."""
    make = getattr(model, "new_kv_cache", None)
    return make is not None and "left_padding" in inspect.signature(make).parameters


def new_cache(model: nn.Module, batch_size: int, max_tokens: int, padding: list[int]):
    """A cache for the batch: preallocated for ``max_tokens`` and padded when the model can."""
    if supports_left_padding(model):
        return model.new_kv_cache(batch_size, max_tokens=max_tokens, left_padding=padding if any(padding) else None)
    if any(padding):
        raise ValueError("this model's KV cache takes no padding; give prompts of one length.")
    return model.new_kv_cache(batch_size)


def prefill(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int = 0):
    """Run the (left-padded) prompts once: (cache, logits of each row's next token [B, vocab])."""
    device = next(model.parameters()).device
    batch, padding = left_pad(prompts, pad_id, device)
    longest = batch.shape[1]
    context = int(model.config.context)
    if longest > context:
        raise ValueError(f"a prompt of {longest} tokens does not fit the context of {context}.")
    cache = new_cache(model, len(prompts), min(context, longest + max_new_tokens), padding)
    logits = model(batch, kv_cache=cache).logits[:, -1]
    return cache, logits


def decode(model: nn.Module, cache, logits: torch.Tensor, steps: int, logprobs: bool = False) -> Iterator:
    """Greedy steps from the prefill's ``logits``: yields (tokens [B], log-probs [B] or None);
    each step after the first feeds the previous tokens through the cache."""
    for step in range(steps):
        if step:
            logits = model(token[:, None], kv_cache=cache).logits[:, -1]
        token = logits.argmax(dim=-1)
        chosen = torch.log_softmax(logits.float(), dim=-1).gather(1, token[:, None])[:, 0] if logprobs else None
        yield token, chosen


@torch.inference_mode()
def greedy_generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_token: int | None = None,
    logprobs: bool = False,
    pad_id: int = 0,
) -> Generation:
    """Greedy continuations of ``prompts`` (token id lists of any lengths) with the KV cache.

    At most ``max_new_tokens`` per row, fewer when the context fills (the longest prompt
    leaves ``context - longest + 1``) or a row emits ``stop_token``. Runs in eval mode
    (no dropout, dropless MoE) and restores the model's mode.
    """
    longest = max((len(p) for p in prompts), default=0)
    steps = max(0, min(int(max_new_tokens), int(model.config.context) - longest + 1))
    out = Generation([[] for _ in prompts], [[] for _ in prompts] if logprobs else [])
    if steps == 0 or not prompts:
        return out
    was_training = model.training
    model.eval()
    try:
        cache, logits = prefill(model, prompts, steps - 1, pad_id)
        done = [False] * len(prompts)
        for token, chosen in decode(model, cache, logits, steps, logprobs):
            values = chosen.tolist() if logprobs else None
            for row, t in enumerate(token.tolist()):
                if done[row] or t == stop_token:
                    done[row] = True
                    continue
                out.tokens[row].append(t)
                if logprobs:
                    out.logprobs[row].append(values[row])
            if all(done):
                break
    finally:
        model.train(was_training)
    return out
