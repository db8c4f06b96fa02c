"""Reference losses a trained model must beat, for any token stream (text or synthetic)."""

from __future__ import annotations

import numpy as np


def unigram_cross_entropy(train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of ``val_tokens`` under train unigram frequencies, add-one smoothed."""
    train_tokens, val_tokens = np.asarray(train_tokens), np.asarray(val_tokens)
    if max(int(train_tokens.max(initial=0)), int(val_tokens.max(initial=0))) >= vocab_size:
        raise ValueError(f"token ids must be below vocab_size={vocab_size}")
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size)[:vocab_size] + 1.0
    log_probs = np.log(counts) - np.log(counts.sum())
    return float(-log_probs[np.asarray(val_tokens, dtype=np.int64)].mean())
