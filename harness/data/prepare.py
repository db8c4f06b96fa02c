"""``prepare_data(spec)``: a data spec -> fixed, cached train/val token arrays + tokenizer.

- ``synthetic[?options]``: train tokens drawn with the run ``seed``; val tokens drawn with
  the fixed ``VAL_SEED``, so every run of the same spec is validated on the same tokens.
  Options: ``n_train`` (default 2,000,000), ``n_val`` (100,000) and any
  ``SyntheticConfig`` field.
- a path or ``hf:...``: documents are split by position, the last documents holding
  ``val_fraction`` of the characters are validation (never trained on, independent of the
  seed); a byte-level BPE is trained on the train documents only (``vocab_size``,
  default 4096) unless ``tokenizer=tiktoken:gpt2``. Each document is followed by the
  end-of-text token. Options: ``tokenizer``, ``text_field``, ``max_docs``, ``max_chars``,
  ``doc_chars`` (text files), ``data_files`` (hf).

Token arrays are cached under ``cache_dir`` (default ``harness.paths.cache_dir()``) in
``data/<kind>-<key>/``, keyed by the source content hash, the tokenizer and the split,
and returned memory-mapped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from harness import paths
from harness.data.cache import cache_key, cached_arrays, token_dtype
from harness.data.hf import HF_MAX_CHARS, iter_hf_documents, parse_hf_target
from harness.data.spec import DataSpec, parse_spec, take_options
from harness.data.synthetic_config import SEGMENT_NAMES, SyntheticConfig
from harness.data.synthetic_generator import SyntheticGenerator
from harness.data.text import DOC_CHARS, hash_documents, read_text_documents
from harness.data.tokenizer import SyntheticTokenizer, Tokenizer, get_tokenizer, tokenizer_fingerprint, train_bpe

DATA_FORMAT = 1  # bump to invalidate cached token arrays after a change in preparation
VAL_SEED = 2_147_483_647  # synthetic validation documents; a run seed must differ
DEFAULT_BPE_VOCAB = 4096
SYNTHETIC_N_TRAIN = 2_000_000
SYNTHETIC_N_VAL = 100_000


@dataclass
class PreparedData:
    """Train/val token arrays (1-D, memory-mapped) and what is needed to interpret them."""

    spec: str
    kind: str  # "synthetic" or "text"
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    tokenizer: Tokenizer
    content_hash: str  # text: sha256 of all documents; synthetic: of the generator config, sizes and seed
    val_bytes: int | None = None  # text: UTF-8 bytes of the val documents (= the val tokens decoded, minus EOT)
    val_segments: np.ndarray | None = None  # synthetic: segment id per val token
    segment_names: tuple[str, ...] | None = None  # synthetic: name of each segment id
    val_entropy: np.ndarray | None = None  # synthetic: per-token entropy floor, nats
    cache_path: Path | None = None
    info: dict = field(default_factory=dict)  # source-specific facts for the record

    def floor_by_segment(self) -> dict[str, float]:
        """Mean entropy floor (nats) over val targets (tokens 1..N-1), overall and per segment."""
        if self.val_entropy is None:
            return {}
        floors = np.asarray(self.val_entropy[1:], dtype=np.float64)
        segments = np.asarray(self.val_segments[1:])
        result = {"all": float(floors.mean())}
        for i, name in enumerate(self.segment_names):
            mask = segments == i
            result[name] = float(floors[mask].mean()) if mask.any() else float("nan")
        return result

    def describe(self) -> dict:
        """JSON-able summary for the run record."""
        out = {
            "spec": self.spec,
            "kind": self.kind,
            "n_train_tokens": int(len(self.train_tokens)),
            "n_val_tokens": int(len(self.val_tokens)),
            "tokenizer": self.tokenizer.name,
            "vocab_size": int(self.tokenizer.vocab_size),
            "eot_id": int(self.tokenizer.eot_id),
            "content_hash": self.content_hash,
            "val_sha256": hashlib.sha256(np.ascontiguousarray(self.val_tokens).tobytes()).hexdigest(),
        }
        if self.kind == "text":
            out["val_bytes"] = int(self.val_bytes)
        else:
            out["segment_names"] = list(self.segment_names)
            out["val_floor_nats"] = self.floor_by_segment()
            counts = np.bincount(np.asarray(self.val_segments, dtype=np.int64), minlength=len(self.segment_names))
            out["val_segment_fractions"] = {n: float(c / counts.sum()) for n, c in zip(self.segment_names, counts)}
        return {**out, **self.info}


def prepare_data(
    spec: str,
    *,
    vocab_size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    max_train_tokens: int | None = None,
    tokenizer: str | Tokenizer | None = None,
) -> PreparedData:
    """Resolve ``spec`` to cached train/val tokens (see the module docstring for the syntax).

    ``vocab_size``: the BPE size to train (text; default 4096). A source with a fixed
    vocabulary (synthetic, tiktoken) accepts ``None`` or any value not below its own
    size. ``seed`` only changes synthetic train tokens. ``max_train_tokens`` keeps a
    prefix of the train tokens. ``tokenizer``: ``bpe`` or ``tiktoken:gpt2`` (also a spec
    option), or a ready ``Tokenizer`` (text only: e.g. a parent run's, for fine-tuning).
    """
    parsed = parse_spec(spec)
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    if max_train_tokens is not None and max_train_tokens < 1:
        raise ValueError(f"max_train_tokens must be positive, got {max_train_tokens}")
    if parsed.kind == "synthetic":
        if tokenizer is not None:
            raise ValueError("synthetic data has its own vocabulary; drop the tokenizer argument")
        data = _prepare_synthetic(parsed, vocab_size, seed, root, max_train_tokens)
    else:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        data = _prepare_text(parsed, vocab_size, root, val_fraction, tokenizer)
    if max_train_tokens is not None and len(data.train_tokens) > max_train_tokens:
        data.train_tokens = data.train_tokens[:max_train_tokens]
    return data


# --------------------------------------------------------------------------- synthetic
def _prepare_synthetic(spec: DataSpec, vocab_size, seed, root, max_train_tokens) -> PreparedData:
    config_defaults = {f.name: f.default for f in fields(SyntheticConfig)}
    options = take_options(spec, {"n_train": SYNTHETIC_N_TRAIN, "n_val": SYNTHETIC_N_VAL, **config_defaults})
    n_train, n_val = int(options.pop("n_train")), int(options.pop("n_val"))
    if n_train < 2 or n_val < 2:
        raise ValueError(f"synthetic n_train and n_val must be at least 2 tokens, got {n_train} and {n_val}")
    if seed == VAL_SEED or seed < 0:
        raise ValueError(f"seed must be non-negative and differ from the validation seed {VAL_SEED}, got {seed}")
    config = SyntheticConfig(**options)
    if vocab_size is not None and vocab_size < config.vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below the synthetic vocabulary of {config.vocab_size} tokens")
    if max_train_tokens is not None:
        n_train = min(n_train, max_train_tokens)  # streams are prefix-stable: same tokens as slicing
    generator = SyntheticGenerator(config)
    config_key = cache_key("synthetic", DATA_FORMAT, config.to_dict())

    def build(n: int, s: int):
        tokens, segments, entropy = generator.generate(n, s)
        return {"tokens": tokens, "segments": segments, "entropy": entropy}, {"n_tokens": n, "seed": s}

    val_dir = root / "data" / f"synthetic-val-{cache_key(config_key, n_val, VAL_SEED)[:16]}"
    val, _ = cached_arrays(val_dir, lambda: build(n_val, VAL_SEED))
    train_dir = root / "data" / f"synthetic-train-{cache_key(config_key, n_train, seed)[:16]}"
    train, _ = cached_arrays(train_dir, lambda: build(n_train, seed))
    return PreparedData(
        spec=spec.raw,
        kind="synthetic",
        train_tokens=train["tokens"],
        val_tokens=val["tokens"],
        tokenizer=SyntheticTokenizer(config.vocab_size),
        content_hash=cache_key(config_key, n_train, n_val, seed),
        val_segments=val["segments"],
        segment_names=SEGMENT_NAMES,
        val_entropy=val["entropy"],
        cache_path=train_dir,
        info={"seed": seed, "val_seed": VAL_SEED, "synthetic_config": config.to_dict()},
    )


# --------------------------------------------------------------------------- text / hf
def _read_documents(spec: DataSpec) -> tuple[list[str], str | None]:
    """The documents of a text or hf spec, and its ``tokenizer`` option."""
    if spec.kind == "text":
        opts = take_options(
            spec,
            {"tokenizer": None, "text_field": "text", "doc_chars": DOC_CHARS, "max_docs": None, "max_chars": None},
            types={"max_docs": int, "max_chars": int},
        )
        tokenizer = opts.pop("tokenizer")
        return read_text_documents(spec.target, **opts), tokenizer
    opts = take_options(
        spec,
        {"tokenizer": None, "text_field": "text", "data_files": None, "max_docs": None, "max_chars": HF_MAX_CHARS},
        types={"max_docs": int},
    )
    tokenizer = opts.pop("tokenizer")
    docs = list(iter_hf_documents(parse_hf_target(spec.target), **opts))
    if not docs:
        raise ValueError(f"Hugging Face source {spec.raw!r} gave no non-empty documents")
    return docs, tokenizer


def split_documents(docs: list[str], val_fraction: float) -> int:
    """Number of validation documents: the shortest suffix holding >= ``val_fraction`` of the characters."""
    target = val_fraction * sum(len(d) for d in docs)
    n_val, chars = 0, 0
    while chars < target and n_val < len(docs) - 1:
        n_val += 1
        chars += len(docs[-n_val])
    return max(n_val, 1)


def _prepare_text(spec: DataSpec, vocab_size, root, val_fraction, tokenizer_arg) -> PreparedData:
    docs, tokenizer_opt = _read_documents(spec)
    given = None if tokenizer_arg is None or isinstance(tokenizer_arg, str) else tokenizer_arg
    if given is not None and tokenizer_opt:
        raise ValueError(f"{spec.raw!r} names tokenizer={tokenizer_opt}, but a ready tokenizer (e.g. a parent run's) was given; drop the option")
    if given is not None:
        tokenizer_arg = None
    if tokenizer_arg and tokenizer_opt and tokenizer_arg != tokenizer_opt:
        raise ValueError(f"tokenizer {tokenizer_arg!r} conflicts with the spec's tokenizer={tokenizer_opt}")
    tokenizer_name = tokenizer_arg or tokenizer_opt or "bpe"
    if len(docs) < 2:
        raise ValueError(
            f"{spec.raw!r} gives {len(docs)} document{'s' if len(docs) != 1 else ''}; a train/val split needs at least 2 "
            f"(add text, or for a text file lower ?doc_chars=N, now {spec.options.get('doc_chars', DOC_CHARS)})"
        )
    content_hash = hash_documents(docs)
    n_val = split_documents(docs, val_fraction)
    train_docs, val_docs = docs[:-n_val], docs[-n_val:]

    if given is not None:
        tokenizer = given
    elif tokenizer_name == "bpe":
        tokenizer = train_bpe(train_docs, vocab_size or DEFAULT_BPE_VOCAB, cache_dir=root / "tokenizers")
    else:
        tokenizer = get_tokenizer(tokenizer_name)
        if vocab_size is not None and vocab_size < tokenizer.vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is below {tokenizer.name}'s {tokenizer.vocab_size} tokens")

    def build():
        arrays = {"train": _encode(tokenizer, train_docs), "val": _encode(tokenizer, val_docs)}
        val_bytes = sum(len(d.encode("utf-8")) for d in val_docs)
        return arrays, {"val_bytes": val_bytes, "n_train_docs": len(train_docs), "n_val_docs": len(val_docs)}

    key = cache_key("text", DATA_FORMAT, content_hash, tokenizer_fingerprint(tokenizer), val_fraction)
    folder = root / "data" / f"text-{key[:16]}"
    arrays, meta = cached_arrays(folder, build)
    return PreparedData(
        spec=spec.raw,
        kind="text",
        train_tokens=arrays["train"],
        val_tokens=arrays["val"],
        tokenizer=tokenizer,
        content_hash=content_hash,
        val_bytes=int(meta["val_bytes"]),
        cache_path=folder,
        info={"n_train_docs": meta["n_train_docs"], "n_val_docs": meta["n_val_docs"], "val_fraction": val_fraction},
    )


def _encode(tokenizer: Tokenizer, docs: list[str]) -> np.ndarray:
    """Token ids of ``docs``, each followed by the end-of-text id."""
    encode_batch = getattr(tokenizer, "encode_batch", None)
    encoded = encode_batch(docs) if encode_batch else [tokenizer.encode(d) for d in docs]
    dtype = token_dtype(tokenizer.vocab_size)
    eot = np.array([tokenizer.eot_id], dtype=dtype)
    return np.concatenate([part for ids in encoded for part in (np.asarray(ids, dtype=dtype), eot)])
