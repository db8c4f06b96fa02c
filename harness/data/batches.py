"""Training batches as a pure function of (seed, step, ...).

Training rows are windows of ``seq_len + 1`` tokens at pseudo-random starts. Each row of
a step has a *global index*::

    g = (micro_step * world_size + rank) * batch_size + j      (row j of this call)

and its start is a hash of ``(seed, step, g)``. So the rows of a step depend only on
``seed``, ``step`` and how many rows came before: rank ``r`` of ``W`` takes its slice
of the global batch, and 2 ranks x 1 micro-step, 1 rank x 2 micro-steps and 1 rank with
twice the batch all see the same rows. Resuming needs no saved iterator state.

``tokens`` is a 1-D array or a ``harness.data.shards.ShardedTokens`` (the shard set read as one
sequence: a window may span two shards, as the stream does).
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100  # targets the loss skips (design contract)


def get_batch(
    tokens: np.ndarray,
    step: int,
    batch_size: int,
    seq_len: int,
    *,
    seed: int,
    micro_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(x, y)`` LongTensors ``[batch_size, seq_len]``, ``y`` = ``x`` shifted by one token.

    ``batch_size`` is this rank's micro-batch; see the module docstring for which rows.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if batch_size < 1 or seq_len < 1 or step < 0 or micro_step < 0 or seed < 0:
        raise ValueError("batch_size and seq_len must be positive; step, micro_step and seed non-negative")
    n_starts = len(tokens) - seq_len
    if n_starts < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for windows of seq_len + 1 = {seq_len + 1}")
    first = (micro_step * world_size + rank) * batch_size
    rows = np.arange(first, first + batch_size, dtype=np.uint64)
    starts = (_hash_rows(seed, step, rows) % np.uint64(n_starts)).astype(np.int64)
    if hasattr(tokens, "windows"):  # ShardedTokens: rows read from the memory-mapped shards
        window = np.asarray(tokens.windows(starts, seq_len + 1), dtype=np.int64)
    else:
        window = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    import torch  # here, so preparing data (which imports this package) does not load torch

    window = torch.from_numpy(window)
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def _hash_rows(seed: int, step: int, rows: np.ndarray) -> np.ndarray:
    """64-bit hash of (seed, step, row) for each row (SeedSequence key + splitmix64 finaliser)."""
    key = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]
    with np.errstate(over="ignore"):
        x = rows * np.uint64(0x9E3779B97F4A7C15) + key
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x
