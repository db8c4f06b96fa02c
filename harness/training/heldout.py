"""Validation on held-out tokens: per-token losses, the record's quality metrics, the unigram baseline.

Losses are in nats per token; bits per byte divide the summed loss by ln 2 × the UTF-8 bytes
of the evaluated text (end-of-text separators carry no bytes). On synthetic data the excess
loss is the loss minus the generator's entropy floor at the same positions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.data import unigram_cross_entropy

MAX_EVAL_TOKENS = 131072
LN2 = math.log(2)


@torch.no_grad()
def token_losses(model, tokens: np.ndarray, seq_len: int, batch_size: int, device, autocast, max_tokens: int) -> np.ndarray:
    """Per-token LM loss (nats) over non-overlapping windows of ``tokens``, in eval mode.

    Element i is the loss of predicting ``tokens[i + 1]``; windows cover the first
    ``max_tokens`` predictions (whole windows only). The model's training mode is restored
    afterwards, also when the forward pass raises.
    """
    n_windows = min((len(tokens) - 1) // seq_len, max(1, max_tokens // seq_len))
    if n_windows < 1:
        raise ValueError(f"the validation split has {len(tokens)} tokens, fewer than one window of {seq_len + 1}.")
    was_training = model.training
    model.eval()
    try:
        losses = []
        for first in range(0, n_windows, batch_size):
            starts = range(first * seq_len, min(n_windows, first + batch_size) * seq_len, seq_len)
            chunk = torch.from_numpy(np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts]))
            chunk = chunk.to(device)
            with autocast():
                logits = model(chunk[:, :-1]).logits
            loss = F.cross_entropy(logits.float().transpose(1, 2), chunk[:, 1:], reduction="none")
            losses.append(loss.reshape(-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(losses)


def validation_metrics(model, data, seq_len, batch_size, device, autocast, max_tokens=MAX_EVAL_TOKENS) -> dict:
    """Validation loss, and bits per byte (text) or excess loss over the entropy floor (synthetic)."""
    losses = token_losses(model, data.val_tokens, seq_len, batch_size, device, autocast, max_tokens)
    n = len(losses)
    metrics: dict[str, Any] = {"val_loss": float(losses.mean()), "val_tokens": n}
    if data.kind == "text":
        evaluated = np.asarray(data.val_tokens[1 : n + 1])
        # end-of-text separators are not text: they carry no bytes (as in PreparedData.val_bytes)
        text_tokens = evaluated[evaluated != data.tokenizer.eot_id].tolist()
        n_bytes = len(data.tokenizer.decode(text_tokens).encode("utf-8"))
        metrics["val_bytes"] = n_bytes
        metrics["val_bpb"] = float(losses.sum() / (LN2 * n_bytes))
    else:
        floor = np.asarray(data.val_entropy[1 : n + 1], dtype=np.float64)
        metrics["entropy_floor"] = float(floor.mean())
        metrics["excess_loss"] = float(losses.mean() - floor.mean())
        metrics["per_segment"] = _per_segment(losses, floor, np.asarray(data.val_segments[1 : n + 1]), data.segment_names)
    return metrics


def _per_segment(losses: np.ndarray, floor: np.ndarray, segments: np.ndarray, names) -> dict:
    per_segment = {}
    for index, name in enumerate(names):
        mask = segments == index
        if mask.any():
            per_segment[name] = {
                "loss": float(losses[mask].mean()),
                "entropy_floor": float(floor[mask].mean()),
                "excess_loss": float(losses[mask].mean() - floor[mask].mean()),
                "tokens": int(mask.sum()),
            }
    return per_segment


def unigram_baseline(data, final: dict) -> dict:
    """The loss of a unigram model fitted on the training tokens, on the same validation tokens."""
    n = final["val_tokens"]
    unigram = unigram_cross_entropy(data.train_tokens, np.asarray(data.val_tokens[1 : n + 1]), data.tokenizer.vocab_size)
    baseline = {"unigram_val_loss": float(unigram)}
    if data.kind == "text":
        baseline["unigram_val_bpb"] = float(unigram * n / (LN2 * final["val_bytes"]))
    else:
        baseline["unigram_excess_loss"] = float(unigram - final["entropy_floor"])
    return baseline
