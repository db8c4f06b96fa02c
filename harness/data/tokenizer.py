"""Tokenizers: byte-level BPE trained here, tiktoken's GPT-2, the synthetic vocabulary, and
a Hugging Face ``tokenizer.json`` that came with an imported checkpoint.

All of them satisfy ``Tokenizer`` and save to a folder holding ``meta.json`` (its
``kind`` says how to load it) plus, for BPE and HF, the ``tokenizers`` library's
``tokenizer.json``; ``load_tokenizer(folder)`` restores any of them.

``encode`` of the harness's own BPE treats the text ``<|endoftext|>`` as ordinary text: the
end-of-text id ``eot_id`` is only ever inserted between documents by the data pipeline. An
imported HF tokenizer encodes like ``transformers``' fast tokenizer with
``add_special_tokens=False`` (lm-eval's ``hf`` backend): its special tokens written in the
text become their ids; its ``eot_id`` is the eos token (else bos, else unk).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

from harness import paths
from harness.io import read_json, write_json_atomic, write_text_atomic

EOT_TEXT = "<|endoftext|>"
BPE_FORMAT = 1  # bump to invalidate cached BPE tokenizers after a change in training


@runtime_checkable
class Tokenizer(Protocol):
    name: str  # identifies the vocabulary, e.g. "bpe4096-1a2b3c4d5e", "tiktoken:gpt2", "synthetic512"
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, directory: str | os.PathLike) -> Path: ...


# --------------------------------------------------------------------------- BPE
class BPETokenizer:
    """Byte-level BPE (``tokenizers`` library): lossless, every byte string encodes."""

    def __init__(self, hf_tokenizer, name: str):
        self._tok = hf_tokenizer
        self._tok.encode_special_tokens = True  # "<|endoftext|>" in text is text
        self.name = name
        self.vocab_size = hf_tokenizer.get_vocab_size()
        self.eot_id = hf_tokenizer.token_to_id(EOT_TEXT)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts at once (parallel in Rust)."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        write_text_atomic(directory / "tokenizer.json", self._tok.to_str(pretty=True))  # via harness.io
        write_json_atomic(directory / "meta.json", {"kind": "bpe", "name": self.name})
        return directory

    def __repr__(self) -> str:
        return f"BPETokenizer({self.name!r}, vocab_size={self.vocab_size})"


def train_bpe(texts: Iterable[str], vocab_size: int = 4096, cache_dir: str | os.PathLike | None = None) -> BPETokenizer:
    """Train (or load from cache) a byte-level BPE with an ``<|endoftext|>`` special token.

    Cached under ``cache_dir`` (default ``harness.paths.cache_dir() / "tokenizers"``) by a
    hash of the texts and ``vocab_size``.
    """
    texts = list(texts)
    if vocab_size < 257 + 1:
        raise ValueError(f"BPE vocab_size must be at least 258 (256 bytes + end-of-text + 1 merge), got {vocab_size}")
    if not any(texts):
        raise ValueError("cannot train a BPE tokenizer on no text; give at least one non-empty document")
    digest = hashlib.sha256(f"bpe-v{BPE_FORMAT}-{vocab_size}".encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    name = f"bpe{vocab_size}-{digest.hexdigest()[:10]}"
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "tokenizers"
    folder = folder / name
    if (folder / "meta.json").exists():
        return load_tokenizer(folder)
    tokenizer = BPETokenizer(_train_bpe_uncached(texts, vocab_size), name)
    save_atomically(tokenizer, folder)
    return tokenizer


def _train_bpe_uncached(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE trained on ``texts`` (any iterable: it is read once, as a stream)."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts) if isinstance(texts, list) else None)
    return tok


def save_atomically(tokenizer: Tokenizer, folder: Path) -> None:
    """Save into a temporary sibling folder, then rename it into place (first writer wins)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tokenizer.save(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "meta.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- Hugging Face
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class ImportedTokenizer(BPETokenizer):
    """An imported ``tokenizer.json`` with its special tokens, encoding as ``transformers`` does."""

    def __init__(self, hf_tokenizer, name: str, special_tokens: dict[str, str]):
        self._tok = hf_tokenizer
        self._tok.encode_special_tokens = False  # "<|endoftext|>" in text is the special token, as in HF
        self.name = name
        self.special_tokens = dict(special_tokens)
        self.vocab_size = hf_tokenizer.get_vocab_size()
        ids = {role: hf_tokenizer.token_to_id(text) for role, text in self.special_tokens.items()}
        eot = next((ids[role] for role in ("eos_token", "bos_token", "unk_token") if ids.get(role) is not None), None)
        if eot is None:
            raise ValueError(f"tokenizer {name!r} defines no eos, bos or unk token; the harness needs an end-of-text id.")
        self.eot_id = eot

    @classmethod
    def from_folder(cls, directory: str | os.PathLike, name: str) -> "ImportedTokenizer":
        """From a folder holding ``tokenizer.json`` and ``tokenizer_config.json``/``special_tokens_map.json``."""
        from tokenizers import Tokenizer as RustTokenizer

        directory = Path(directory)
        if not (directory / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{directory} has no tokenizer.json (a fast tokenizer saved by transformers).")
        return cls(RustTokenizer.from_file(str(directory / "tokenizer.json")), name, read_special_tokens(directory))

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / "tokenizer.json"))
        write_json_atomic(directory / "special_tokens_map.json", self.special_tokens)
        write_json_atomic(directory / "meta.json", {"kind": "hf", "name": self.name, "eot_id": self.eot_id})
        return directory

    def __repr__(self) -> str:
        return f"ImportedTokenizer({self.name!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"


def read_special_tokens(directory: str | os.PathLike) -> dict[str, str]:
    """{role: text} for bos/eos/unk/pad from ``special_tokens_map.json``, else ``tokenizer_config.json``."""
    directory = Path(directory)
    roles = ("bos_token", "eos_token", "unk_token", "pad_token")
    found: dict[str, str] = {}
    for file_name in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins where both say
        path = directory / file_name
        if path.is_file():
            data = read_json(path)
            for role in roles:
                value = data.get(role)
                value = value.get("content") if isinstance(value, dict) else value
                if isinstance(value, str):
                    found[role] = value
    return found


# --------------------------------------------------------------------------- tiktoken
class TiktokenTokenizer:
    """A ``tiktoken`` encoding such as ``gpt2`` (needs ``pip install tiktoken``)."""

    def __init__(self, encoding: str = "gpt2"):
        try:
            import tiktoken
        except ImportError:
            raise ValueError(
                f"tokenizer 'tiktoken:{encoding}' needs the tiktoken package; pip install tiktoken"
            ) from None
        try:
            self._enc = tiktoken.get_encoding(encoding)
        except Exception as error:  # unknown name, or its files cannot be downloaded offline
            raise ValueError(f"cannot load tiktoken encoding {encoding!r}: {error}") from None
        self.name = f"tiktoken:{encoding}"
        self.vocab_size = self._enc.n_vocab
        self.eot_id = self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts)

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        write_json_atomic(directory / "meta.json", {"kind": "tiktoken", "name": self.name})
        return directory


# --------------------------------------------------------------------------- synthetic
class SyntheticTokenizer:
    """Text form of the synthetic vocabulary: id ``i`` is the word ``w{i}``, words joined by spaces."""

    def __init__(self, vocab_size: int, eot_id: int = 0):
        self.vocab_size = vocab_size
        self.eot_id = eot_id
        self.name = f"synthetic{vocab_size}"

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            i = int(word[1:]) if word[:1] == "w" and word[1:].isdigit() else -1
            if not 0 <= i < self.vocab_size or word != f"w{i}":
                raise ValueError(f"{word!r} is not a word of the synthetic vocabulary (w0 .. w{self.vocab_size - 1})")
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(f"w{int(i)}" for i in ids)

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        write_json_atomic(
            directory / "meta.json",
            {"kind": "synthetic", "name": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id},
        )
        return directory


# --------------------------------------------------------------------------- loading
def get_tokenizer(name: str) -> Tokenizer:
    """A ready-made tokenizer by name: ``tiktoken:ENCODING`` (e.g. ``tiktoken:gpt2``)."""
    if name.startswith("tiktoken:"):
        return TiktokenTokenizer(name.split(":", 1)[1])
    raise ValueError(f"unknown tokenizer {name!r}; use 'bpe' (trained on the data) or 'tiktoken:gpt2'")


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Restore a tokenizer saved with ``save(directory)``."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} holds no saved tokenizer (meta.json is missing)")
    meta = read_json(meta_path)
    kind = meta.get("kind")
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_file(str(directory / "tokenizer.json")), meta["name"])
    if kind == "tiktoken":
        return get_tokenizer(meta["name"])
    if kind == "synthetic":
        return SyntheticTokenizer(int(meta["vocab_size"]), int(meta["eot_id"]))
    if kind == "hf":
        return ImportedTokenizer.from_folder(directory, meta["name"])
    raise ValueError(f"{meta_path} has unknown tokenizer kind {kind!r}; expected bpe, hf, tiktoken or synthetic")


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's saved files (names and bytes, sorted): what identifies it in a manifest."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """A short, stable string for cache keys and records (name + vocab size + eot id)."""
    return json.dumps([tokenizer.name, tokenizer.vocab_size, tokenizer.eot_id])
