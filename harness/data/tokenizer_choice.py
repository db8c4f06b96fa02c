"""Which tokenizer a preparation uses, and training a BPE on a bounded, deterministic sample.

``bpe`` (the default) trains the ``tokenizers`` byte-level BPE on the **sample**: the
stream's training documents (validation ones never) in order, up to ``sample_bytes`` UTF-8
bytes (the last document whole). ``tiktoken:gpt2``, a saved tokenizer folder, a run directory
(its ``tokenizer/``: e.g. an imported checkpoint's) or a ready ``Tokenizer`` need no training.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Iterator

from harness.data.split import is_validation, split_threshold
from harness.data.text import update_document_hash
from harness.data.tokenizer import (
    BPETokenizer,
    Tokenizer,
    _train_bpe_uncached,
    get_tokenizer,
    load_tokenizer,
    tokenizer_sha256,
)

DEFAULT_BPE_VOCAB = 4096
DEFAULT_SAMPLE_BYTES = 100_000_000


def resolve_choice(argument: str | Tokenizer | None, spec_option: str | None, spec_raw: str) -> str | Tokenizer:
    """The tokenizer named by the argument or the spec's ``tokenizer=`` option (they must agree); ``bpe`` by default."""
    if argument is not None and not isinstance(argument, str):
        if spec_option:
            raise ValueError(f"{spec_raw!r} names tokenizer={spec_option}, but a ready tokenizer (e.g. a parent run's) was given; drop the option")
        return argument
    if argument and spec_option and argument != spec_option:
        raise ValueError(f"tokenizer {argument!r} conflicts with the spec's tokenizer={spec_option}")
    return argument or spec_option or "bpe"


def ready_tokenizer(choice: str | Tokenizer, vocab_size: int | None) -> Tokenizer | None:
    """The tokenizer when it needs no training (None for ``bpe``)."""
    if not isinstance(choice, str):
        return choice
    if choice == "bpe":
        return None
    if choice.startswith("tiktoken:"):
        tokenizer = get_tokenizer(choice)
    elif Path(choice).is_dir():
        folder = Path(choice) / "tokenizer" if (Path(choice) / "tokenizer" / "meta.json").exists() else Path(choice)
        tokenizer = load_tokenizer(folder)
    else:
        raise ValueError(f"unknown tokenizer {choice!r}; use 'bpe' (trained on the data), 'tiktoken:gpt2', "
                         "or a folder holding a saved tokenizer or a run directory")
    if vocab_size is not None and vocab_size < tokenizer.vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below {tokenizer.name}'s {tokenizer.vocab_size} tokens")
    return tokenizer


def choice_key(choice: str | Tokenizer, vocab_size: int | None, sample_bytes: int) -> list:
    """What identifies the choice in a cache key (a ready tokenizer: the hash of its files)."""
    if choice == "bpe":
        return ["bpe", vocab_size or DEFAULT_BPE_VOCAB, sample_bytes]
    if isinstance(choice, str) and choice.startswith("tiktoken:"):
        return [choice]
    return ["ready", tokenizer_sha256(ready_tokenizer(choice, None))]


def train_on_sample(documents: Iterable[str], vocab_size: int, sample_bytes: int, val_fraction: float) -> tuple[BPETokenizer, dict]:
    """A BPE trained on the stream's first training documents up to ``sample_bytes``, and the sample's description."""
    if vocab_size < 257 + 1:
        raise ValueError(f"BPE vocab_size must be at least 258 (256 bytes + end-of-text + 1 merge), got {vocab_size}")
    if sample_bytes < 1:
        raise ValueError(f"the tokenizer sample must be a positive number of bytes, got {sample_bytes}")
    stats = {"documents": 0, "bytes": 0}
    digest = hashlib.sha256()
    sample = _sample(documents, sample_bytes, split_threshold(val_fraction), stats, digest)
    hf_tokenizer = _train_bpe_uncached(sample, vocab_size)
    if not stats["bytes"]:
        raise ValueError("cannot train a BPE tokenizer on no text; the source has no training documents")
    name = f"bpe{vocab_size}-{digest.hexdigest()[:10]}"
    description = {
        "rule": f"the stream's training documents in order, up to {sample_bytes:,} UTF-8 bytes (the last one whole)",
        "max_bytes": sample_bytes, **stats, "sha256": digest.hexdigest(),
    }
    return BPETokenizer(hf_tokenizer, name), description


def _sample(documents: Iterable[str], sample_bytes: int, threshold: int, stats: dict, digest) -> Iterator[str]:
    for doc in documents:
        if stats["bytes"] >= sample_bytes:
            return
        data = doc.encode("utf-8")
        if is_validation(data, threshold):
            continue
        update_document_hash(digest, data)
        stats["documents"] += 1
        stats["bytes"] += len(data)
        yield doc
