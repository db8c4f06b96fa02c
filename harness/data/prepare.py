"""``prepare_data(spec)``: a data spec -> fixed, cached train/val token arrays + tokenizer.

- ``synthetic[?options]``: train tokens drawn with the run ``seed``; val tokens drawn with
  the fixed ``VAL_SEED``, so every run of the same spec is validated on the same tokens.
  Options: ``n_train`` (default 2,000,000), ``n_val`` (100,000) and any
  ``SyntheticConfig`` field.
- a path or ``hf:...``: prepared into token shards by ``harness.data.shard_prepare`` (the
  same step as ``python -m harness data prepare``), cached under ``cache_dir`` in
  ``data/shards-<key>/``: validation is chosen per document by a hash of its content
  (``harness.data.split``, ``val_fraction`` of the documents, never trained on, independent of
  the seed); a byte-level BPE is trained on a bounded sample of the train documents
  (``vocab_size``, default 4096) unless ``tokenizer=tiktoken:gpt2``. Each document is followed
  by the end-of-text token. Options: ``tokenizer``, ``text_field``, ``max_docs``,
  ``max_chars``, ``doc_chars`` (text files), ``data_files`` (hf).
- a folder holding a ``manifest.json`` (the output of ``harness data prepare``): read as is.

Synthetic token arrays are cached in ``data/synthetic-*/`` as ``.npy``. All token sequences
come back memory-mapped (text: ``ShardedTokens`` over the shards).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from harness import paths
from harness.data.cache import cache_key, cached_arrays
from harness.data.shard_prepare import ShardOptions, prepare_shards
from harness.data.shards import MANIFEST, is_shard_folder, load_manifest, open_split, token_chunks
from harness.data.spec import DataSpec, parse_spec, take_options
from harness.data.synthetic_config import SEGMENT_NAMES, SyntheticConfig
from harness.data.synthetic_generator import SyntheticGenerator
from harness.data.tokenizer import SyntheticTokenizer, Tokenizer, load_tokenizer, tokenizer_sha256

DATA_FORMAT = 1  # bump to invalidate cached token arrays after a change in preparation
VAL_SEED = 2_147_483_647  # synthetic validation documents; a run seed must differ
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
            "val_sha256": _tokens_sha256(self.val_tokens),
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
    workers: int | None = None,
) -> PreparedData:
    """Resolve ``spec`` to cached train/val tokens (see the module docstring for the syntax).

    ``vocab_size``: the BPE size to train (text; default 4096). A source with a fixed
    vocabulary (synthetic, tiktoken) accepts ``None`` or any value not below its own
    size. ``seed`` only changes synthetic train tokens. ``max_train_tokens`` keeps a
    prefix of the train tokens. ``tokenizer``: ``bpe`` or ``tiktoken:gpt2`` (also a spec
    option), or a ready ``Tokenizer`` (text only: e.g. a parent run's, for fine-tuning).
    ``workers``: tokenizing processes for text (default: the cores). A folder of prepared
    shards is read as prepared (``vocab_size`` and ``tokenizer`` must then be left out).
    """
    if isinstance(spec, str) and "?" not in spec and is_shard_folder(spec):
        return _limit(_prepared_folder(Path(spec), vocab_size, tokenizer), max_train_tokens)
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
        data = _prepare_text(parsed, vocab_size, root, val_fraction, tokenizer, workers)
    return _limit(data, max_train_tokens)


def _prepared_folder(folder: Path, vocab_size, tokenizer) -> PreparedData:
    """A folder ``harness data prepare`` wrote; a given tokenizer (a parent run's) must be the one it used."""
    if vocab_size is not None or isinstance(tokenizer, str):
        raise ValueError(f"{folder} is a prepared shard folder with its own tokenizer; drop the tokenizer and vocab_size arguments")
    data = load_prepared(folder)
    if tokenizer is not None:
        if tokenizer_sha256(tokenizer) != data.info["tokenizer_sha256"]:
            raise ValueError(f"the shards in {folder} were encoded with {data.tokenizer.name}, not {tokenizer.name}; "
                             f"prepare them with `harness data prepare SPEC --tokenizer RUN_DIR` (the run's tokenizer)")
        data.tokenizer = tokenizer
    return data


def _limit(data: PreparedData, max_train_tokens: int | None) -> PreparedData:
    if max_train_tokens is not None and max_train_tokens < 1:
        raise ValueError(f"max_train_tokens must be positive, got {max_train_tokens}")
    if max_train_tokens is not None and len(data.train_tokens) > max_train_tokens:
        tokens = data.train_tokens
        data.train_tokens = tokens.head(max_train_tokens) if hasattr(tokens, "head") else tokens[:max_train_tokens]
    return data


def _tokens_sha256(tokens) -> str:
    """sha256 of the tokens' bytes as stored (read in chunks)."""
    digest = hashlib.sha256()
    for chunk in token_chunks(tokens):
        digest.update(np.ascontiguousarray(chunk).tobytes())
    return digest.hexdigest()


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
def _prepare_text(spec: DataSpec, vocab_size, root, val_fraction, tokenizer_arg, workers) -> PreparedData:
    """Prepare (or reuse) the spec's shards under ``root``, then read them memory-mapped."""
    options = ShardOptions(tokenizer=tokenizer_arg, vocab_size=vocab_size, val_fraction=val_fraction, workers=workers)
    data = load_prepared(prepare_shards(spec.raw, options, cache_dir=root), spec.raw)
    if tokenizer_arg is not None and not isinstance(tokenizer_arg, str):
        data.tokenizer = tokenizer_arg  # the same vocabulary (the shards were encoded with it): keep the caller's object
    return data


def load_prepared(folder: Path, spec: str | None = None) -> PreparedData:
    """The ``PreparedData`` of a folder ``harness data prepare`` wrote (shards verified against its manifest)."""
    manifest = load_manifest(folder)
    manifest_bytes = (Path(folder) / MANIFEST).read_bytes()
    return PreparedData(
        spec=spec or str(folder),
        kind="text",
        train_tokens=open_split(folder, manifest, "train"),
        val_tokens=open_split(folder, manifest, "val"),
        tokenizer=load_tokenizer(Path(folder) / "tokenizer"),
        content_hash=manifest["content_sha256"],
        val_bytes=int(manifest["bytes"]["val"]),
        cache_path=Path(folder),
        info={"n_train_docs": manifest["documents"]["train"], "n_val_docs": manifest["documents"]["val"],
              "val_fraction": manifest["split"]["val_fraction"], "split_rule": manifest["split"]["rule"],
              "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(), "shards": str(folder),
              "tokenizer_sha256": manifest["tokenizer"]["sha256"]},
    )
