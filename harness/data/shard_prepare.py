"""``prepare_shards(spec)``: stream a text or ``hf:`` source into token shards + ``manifest.json``.

The main process reads documents in order, hashes them (the content hash and the split,
``harness.data.split``) and hands chunks of about ``CHUNK_BYTES`` to ``workers`` processes
that tokenize them (``harness.data.encoding``); results come back in order and go to the
train and val ``ShardStream``s. At most ``2 * workers + 2`` chunks are in flight, so memory
does not grow with the corpus. The output folder holds ``tokenizer/``, the shards,
``progress.json`` while running and ``manifest.json`` when done; a rerun after a kill
skips every document already in a finished shard and writes the same bytes.
"""

from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness import paths
from harness.data.cache import cache_key, token_dtype
from harness.data.encoding import document_encoder, encode_documents, encode_in_worker, init_worker
from harness.data.shard_writer import ShardStream
from harness.data.shards import MANIFEST, read_progress, verified_done
from harness.data.sources import open_source
from harness.data.spec import parse_spec
from harness.data.split import describe_split, is_validation, split_threshold
from harness.data.text import update_document_hash
from harness.data.tokenizer import Tokenizer, load_tokenizer, save_atomically, tokenizer_sha256
from harness.data.tokenizer_choice import (
    DEFAULT_BPE_VOCAB,
    DEFAULT_SAMPLE_BYTES,
    choice_key,
    ready_tokenizer,
    resolve_choice,
    train_on_sample,
)
from harness.io import make_dirs, read_json, write_json_atomic

SHARD_FORMAT = 1  # bump to re-prepare after a change in what the shards hold
DEFAULT_SHARD_TOKENS = 100_000_000
CHUNK_BYTES = 1 << 20
PROGRESS = "progress.json"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class ShardOptions:
    """How to prepare: tokenizer (``bpe``, ``tiktoken:gpt2``, a tokenizer folder or run directory, or a
    ready ``Tokenizer``), BPE size, validation fraction, tokens per shard, BPE sample bytes, processes."""

    tokenizer: str | Tokenizer | None = None
    vocab_size: int | None = None
    val_fraction: float = 0.1
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    sample_bytes: int = DEFAULT_SAMPLE_BYTES
    workers: int | None = None  # default: os.cpu_count(); 1 tokenizes in this process


def prepare_shards(spec: str, options: ShardOptions = ShardOptions(), *, cache_dir: str | Path | None = None,
                   out: str | Path | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """The folder holding ``spec``'s shards and manifest, prepared first unless already complete.

    ``out`` defaults to ``<cache_dir>/data/shards-<key>`` (key: source content, tokenizer choice,
    split, shard size). ``progress(bytes, tokens)`` is called with increments as chunks finish.
    """
    parsed = parse_spec(spec)
    source = open_source(parsed)
    choice = resolve_choice(options.tokenizer, source.tokenizer, parsed.raw)
    split_threshold(options.val_fraction)
    if options.shard_tokens < 1:
        raise ValueError(f"shard_tokens must be a positive number of tokens, got {options.shard_tokens}")
    workers = options.workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    key = cache_key("shards", SHARD_FORMAT, source.fingerprint(), choice_key(choice, options.vocab_size, options.sample_bytes),
                    options.val_fraction, options.shard_tokens)
    folder = Path(out) if out is not None else Path(cache_dir or paths.cache_dir()) / "data" / f"shards-{key[:16]}"
    if _finished(folder, key):
        return folder
    make_dirs(folder)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second preparation of the same folder waits, then finds it done
        if not _finished(folder, key):
            _Preparation(folder, source, choice, options, workers, progress).run(key)
    return folder


def _finished(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a complete preparation of ``key`` (one of other options is an error)."""
    if not (folder / MANIFEST).exists():
        return False
    if read_json(folder / MANIFEST).get("key") != key:
        raise ValueError(f"{folder} holds shards prepared from other data or options; delete it or choose another output folder")
    return True


class _Preparation:
    def __init__(self, folder, source, choice, options: ShardOptions, workers: int, progress):
        self.folder, self.source, self.choice, self.options = folder, source, choice, options
        self.workers, self.progress = workers, progress or (lambda n_bytes, n_tokens: None)
        self.threshold = split_threshold(options.val_fraction)

    def run(self, key: str) -> None:
        self.key = key
        state = read_progress(self.folder / PROGRESS, key)
        tokenizer, sample = self._tokenizer(state)
        state.update(key=key, sample=sample)
        dtype = token_dtype(tokenizer.vocab_size)
        streams = {split: ShardStream(self.folder, split, dtype, self.options.shard_tokens,
                                      verified_done(self.folder, state.get(split, []), dtype.itemsize), lambda: self._save(state, streams))
                   for split in SPLITS}
        self._save(state, streams)
        try:
            counts, digest, last_doc = self._stream(streams, dtype)
        except BaseException:
            for stream in streams.values():
                stream.abort()
            raise
        for stream in streams.values():
            stream.finish(last_doc)
        self._check_sides(counts)
        manifest = self._manifest(tokenizer, sample, dtype, counts, digest, streams)
        write_json_atomic(self.folder / MANIFEST, manifest)
        (self.folder / PROGRESS).unlink(missing_ok=True)

    def _tokenizer(self, state: dict) -> tuple[Tokenizer, dict | None]:
        """The saved tokenizer of an interrupted preparation, else the chosen or trained one (saved first)."""
        folder = self.folder / "tokenizer"
        if (folder / "meta.json").exists() and "key" in state:
            return load_tokenizer(folder), state.get("sample")
        tokenizer, sample = ready_tokenizer(self.choice, self.options.vocab_size), None
        if tokenizer is None:
            tokenizer, sample = train_on_sample(self.source.documents(), self.options.vocab_size or DEFAULT_BPE_VOCAB,
                                                self.options.sample_bytes, self.options.val_fraction)
        save_atomically(tokenizer, folder)
        return load_tokenizer(folder), sample

    def _save(self, state: dict, streams: dict) -> None:
        """``progress.json``: the key, the tokenizer sample and every finished shard (after each shard)."""
        write_json_atomic(self.folder / PROGRESS, {**state, **{s: streams[s].shards for s in SPLITS}})

    def _stream(self, streams: dict, dtype) -> tuple[dict, "hashlib._Hash", int]:
        """Read every document; encode (in order) those its split's stream still needs (all, unless resuming)."""
        resume_doc = {split: max(stream.skip_doc, 0) for split, stream in streams.items()}
        counts = {f"{what}_{split}": 0 for what in ("documents", "bytes") for split in SPLITS}
        digest = hashlib.sha256()
        pending: deque = deque()
        chunk, chunk_bytes, index = [], 0, -1
        with _Encoder(self.workers, self.folder / "tokenizer", dtype) as encoder:
            for index, doc in enumerate(self.source.documents()):
                data = doc.encode("utf-8")
                update_document_hash(digest, data)
                split = "val" if is_validation(data, self.threshold) else "train"
                counts[f"documents_{split}"] += 1
                counts[f"bytes_{split}"] += len(data)
                if index < resume_doc[split]:
                    self.progress(len(data), 0)
                    continue
                chunk.append((index, split == "val", doc))
                chunk_bytes += len(data)
                if chunk_bytes >= CHUNK_BYTES:
                    pending.append((chunk, chunk_bytes, encoder.submit([d for _, _, d in chunk])))
                    chunk, chunk_bytes = [], 0
                    while len(pending) > encoder.max_in_flight:
                        self._consume(pending.popleft(), streams)
            if chunk:
                pending.append((chunk, chunk_bytes, encoder.submit([d for _, _, d in chunk])))
            while pending:
                self._consume(pending.popleft(), streams)
        return counts, digest, index

    def _consume(self, item, streams: dict) -> None:
        chunk, chunk_bytes, result = item
        lengths, tokens = result.get()
        doc_ids = np.fromiter((i for i, _, _ in chunk), dtype=np.int64, count=len(chunk))
        is_val = np.fromiter((v for _, v, _ in chunk), dtype=bool, count=len(chunk))
        token_is_val = np.repeat(is_val, lengths)
        for split, mask, token_mask in (("train", ~is_val, ~token_is_val), ("val", is_val, token_is_val)):
            if mask.any():
                streams[split].append(tokens[token_mask], doc_ids[mask], lengths[mask])
        self.progress(chunk_bytes, len(tokens))

    def _check_sides(self, counts: dict) -> None:
        n_train, n_val = counts["documents_train"], counts["documents_val"]
        if n_train and n_val:
            return
        hint = (f"add text, or lower ?doc_chars=N (now {self.source.options['doc_chars']})"
                if "doc_chars" in self.source.options else "add documents, or raise ?max_docs / ?max_chars")
        raise ValueError(
            f"{self.source.spec.raw!r} gives {n_train + n_val} document{'s' if n_train + n_val != 1 else ''}, "
            f"{n_val} of them validation by the content hash; a train/val split needs at least 2 with one on each side ({hint})"
        )

    def _manifest(self, tokenizer: Tokenizer, sample, dtype, counts, digest, streams) -> dict:
        return {
            "format": SHARD_FORMAT,
            "key": self.key,
            "source": self.source.describe(),
            "content_sha256": digest.hexdigest(),
            "tokenizer": {"name": tokenizer.name, "vocab_size": int(tokenizer.vocab_size), "eot_id": int(tokenizer.eot_id),
                          "sha256": tokenizer_sha256(tokenizer), "sample": sample},
            "split": describe_split(self.options.val_fraction),
            "dtype": np.dtype(dtype).name,
            "byte_order": "little",
            "shard_tokens": self.options.shard_tokens,
            "documents": {s: counts[f"documents_{s}"] for s in SPLITS},
            "bytes": {s: counts[f"bytes_{s}"] for s in SPLITS},
            "tokens": {s: int(streams[s].tokens_total) for s in SPLITS},
            "shards": {s: [{k: e[k] for k in ("file", "tokens", "sha256")} for e in streams[s].shards] for s in SPLITS},
        }


class _Encoder:
    """``submit(docs)`` -> a handle whose ``get()`` is ``(lengths, tokens)``: in a process pool, or here for one worker."""

    def __init__(self, workers: int, tokenizer_dir: Path, dtype):
        self.workers, self.tokenizer_dir, self.dtype = workers, str(tokenizer_dir), np.dtype(dtype).name
        self.max_in_flight = 2 * workers + 2
        self.pool = None
        self.local = None

    def __enter__(self) -> "_Encoder":
        if self.workers == 1:
            tokenizer = load_tokenizer(self.tokenizer_dir)
            self.local = (document_encoder(tokenizer), tokenizer.eot_id)
        else:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self.pool = multiprocessing.get_context(method).Pool(
                self.workers, initializer=init_worker, initargs=(self.tokenizer_dir, self.dtype))
        return self

    def submit(self, docs: list[str]):
        if self.pool is not None:
            return self.pool.apply_async(encode_in_worker, (docs,))
        return _Done(encode_documents(*self.local, docs, np.dtype(self.dtype)))

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()


class _Done:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value
