"""Reference losses a trained model must beat, for any token stream (text or synthetic)."""

from __future__ import annotations

import numpy as np

from harness.data.shards import token_chunks


def unigram_cross_entropy(train_tokens, val_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of ``val_tokens`` under train unigram frequencies, add-one smoothed.

    ``train_tokens`` may be an array or sharded tokens: it is counted in chunks, never loaded whole.
    """
    counts = np.zeros(vocab_size, dtype=np.float64)
    for chunk in token_chunks(train_tokens):
        chunk_counts = np.bincount(np.asarray(chunk, dtype=np.int64), minlength=vocab_size)
        if len(chunk_counts) > vocab_size:
            raise ValueError(f"token ids must be below vocab_size={vocab_size}")
        counts += chunk_counts
    val_tokens = np.asarray(val_tokens, dtype=np.int64)
    if int(val_tokens.max(initial=0)) >= vocab_size:
        raise ValueError(f"token ids must be below vocab_size={vocab_size}")
    log_probs = np.log(counts + 1.0) - np.log(counts.sum() + vocab_size)
    return float(-log_probs[val_tokens].mean())
