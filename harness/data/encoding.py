"""Tokenizing documents in worker processes: each worker loads the tokenizer once, then encodes
chunks of documents into one token array (each document followed by the end-of-text id).

Workers never see a document's position or split: the output for a chunk is a pure function
of its texts, so any number of workers gives the same tokens.

ASCII documents of the harness's own byte-level BPE are encoded piece by piece with a cache
(``WordCache``): its pre-tokenizer cuts text with GPT-2's pattern and BPE never merges across
those pieces, so encoding each piece once and reusing its ids gives exactly ``encode(text)``
(tested against ``tokenizers``), about twice as fast on natural-language text. A document with
any non-ASCII character is encoded whole by ``tokenizers``: the pattern's letter and number
classes follow each library's Unicode version, which differ for recently assigned characters.
Other tokenizers encode each document whole.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np

from harness.data.tokenizer import BPETokenizer, Tokenizer, load_tokenizer

# GPT-2's pre-tokenization pattern, as the tokenizers ByteLevel pre-tokenizer (use_regex=True) applies it
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CACHE_WORDS = 500_000  # the word cache is emptied when it holds more pieces than this


class WordCache:
    """``encode(text)`` of a byte-level BPE without a normalizer: ASCII text one cached pre-tokenized piece at a time."""

    def __init__(self, tokenizer: BPETokenizer):
        import regex

        self.encode_piece = tokenizer.encode
        self.pattern = regex.compile(GPT2_PATTERN)
        self.cache: dict[str, list[int]] = {}

    @staticmethod
    def applies_to(tokenizer: Tokenizer) -> bool:
        """Whether ``tokenizer`` is the harness's own BPE with the ByteLevel pre-tokenizer this reproduces."""
        if type(tokenizer) is not BPETokenizer:
            return False
        config = json.loads(tokenizer._tok.to_str())
        pre = config.get("pre_tokenizer") or {}
        return (config.get("normalizer") is None and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
                and not pre.get("add_prefix_space") and not config["model"].get("dropout"))

    def encode(self, text: str) -> list[int]:
        if not text.isascii():
            return self.encode_piece(text)
        if len(self.cache) > CACHE_WORDS:
            self.cache.clear()
        out: list[int] = []
        cache = self.cache
        for piece in self.pattern.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = cache[piece] = self.encode_piece(piece)
            out.extend(ids)
        return out


def document_encoder(tokenizer: Tokenizer) -> Callable[[str], list[int]]:
    """The fastest function giving ``tokenizer.encode(text)``."""
    return WordCache(tokenizer).encode if WordCache.applies_to(tokenizer) else tokenizer.encode

_WORKER_TOKENIZER: Tokenizer | None = None
_WORKER_ENCODE: Callable[[str], list[int]] | None = None
_WORKER_DTYPE: np.dtype | None = None


def init_worker(tokenizer_dir: str, dtype: str) -> None:
    """Pool initializer: one single-threaded tokenizer per process."""
    global _WORKER_TOKENIZER, _WORKER_ENCODE, _WORKER_DTYPE
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one worker = one core
    _WORKER_TOKENIZER = load_tokenizer(tokenizer_dir)
    _WORKER_ENCODE = document_encoder(_WORKER_TOKENIZER)
    _WORKER_DTYPE = np.dtype(dtype)


def encode_in_worker(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``encode_documents`` with the worker's tokenizer."""
    return encode_documents(_WORKER_ENCODE, _WORKER_TOKENIZER.eot_id, docs, _WORKER_DTYPE)


def encode_documents(encode: Callable[[str], list[int]], eot_id: int, docs: list[str], dtype: np.dtype):
    """``(lengths, tokens)``: tokens per document including its end-of-text ``eot_id``, and all tokens in order."""
    encoded = [encode(doc) for doc in docs]
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    tokens = np.empty(int(lengths.sum()), dtype=dtype)
    ends = np.cumsum(lengths)
    for ids, end, length in zip(encoded, ends, lengths):
        tokens[end - length : end - 1] = ids
    tokens[ends - 1] = eot_id
    return lengths, tokens
