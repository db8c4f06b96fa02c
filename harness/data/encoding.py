"""Tokenizing documents in worker processes: each worker loads the tokenizer once, then encodes
chunks of documents into one token array (each document followed by the end-of-text id).

Workers never see a document's position or split: the output for a chunk is a pure function
of its texts, so any number of workers gives the same tokens.
"""

from __future__ import annotations

import os

import numpy as np

from harness.data.tokenizer import Tokenizer, load_tokenizer

_WORKER_TOKENIZER: Tokenizer | None = None
_WORKER_DTYPE: np.dtype | None = None


def init_worker(tokenizer_dir: str, dtype: str) -> None:
    """Pool initializer: one single-threaded tokenizer per process."""
    global _WORKER_TOKENIZER, _WORKER_DTYPE
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one worker = one core
    _WORKER_TOKENIZER = load_tokenizer(tokenizer_dir)
    _WORKER_DTYPE = np.dtype(dtype)


def encode_in_worker(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``encode_documents`` with the worker's tokenizer."""
    return encode_documents(_WORKER_TOKENIZER, docs, _WORKER_DTYPE)


def encode_documents(tokenizer: Tokenizer, docs: list[str], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, tokens)``: tokens per document including its end-of-text, and all tokens in order."""
    encode_batch = getattr(tokenizer, "encode_ids_batch", None)
    encoded = encode_batch(docs) if encode_batch else [tokenizer.encode(doc) for doc in docs]
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    tokens = np.empty(int(lengths.sum()), dtype=dtype)
    ends = np.cumsum(lengths)
    for ids, end, length in zip(encoded, ends, lengths):
        tokens[end - length : end - 1] = ids
    tokens[ends - 1] = tokenizer.eot_id
    return lengths, tokens
