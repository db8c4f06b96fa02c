"""A text or ``hf:`` data spec as a document stream, with a fingerprint that keys its cache.

``open_source(spec)`` reads the spec's options (``tokenizer``, ``text_field``, ``doc_chars``,
``max_docs``, ``max_chars``; ``data_files`` for hf) and returns a ``TextSource`` whose
``documents()`` can be iterated any number of times, each time from the start, in the same
order. ``max_chars=none`` lifts the 20-million-character default of ``hf:`` streams.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from harness.data.hf import HF_MAX_CHARS, iter_hf_documents, parse_hf_target
from harness.data.spec import DataSpec, convert, take_options
from harness.data.text import DOC_CHARS, iter_text_documents, text_files

FINGERPRINT_BLOCK = 8 << 20


@dataclass(frozen=True)
class TextSource:
    """Documents of a local path or a Hugging Face dataset, and what identifies them."""

    spec: DataSpec
    tokenizer: str | None  # the spec's ``tokenizer`` option
    options: dict = field(default_factory=dict)  # reader options, as passed to the reader

    @property
    def files(self) -> list[Path]:
        """Local files read (hf: the ``data_files``; a hub dataset: none)."""
        if self.spec.kind == "text":
            return text_files(self.spec.target)
        data_files = self.options.get("data_files")
        return text_files(data_files) if data_files and Path(data_files).exists() else []

    @property
    def total_bytes(self) -> int | None:
        """Size of the local files (for a progress bar), None for a hub stream."""
        files = self.files
        return sum(f.stat().st_size for f in files) if files else None

    def documents(self) -> Iterator[str]:
        if self.spec.kind == "text":
            return iter_text_documents(self.spec.target, **self.options)
        return iter_hf_documents(parse_hf_target(self.spec.target), **self.options)

    def fingerprint(self) -> str:
        """sha256 of the reader options and the local files' paths and bytes (a hub dataset: its name)."""
        digest = hashlib.sha256(repr((self.spec.kind, self.spec.target if self.spec.kind == "hf" else "",
                                      sorted(self.options.items()))).encode())
        for path in self.files:
            digest.update(str(path.name).encode() + b"\0")
            with open(path, "rb") as file:
                while block := file.read(FINGERPRINT_BLOCK):
                    digest.update(block)
        return digest.hexdigest()

    def describe(self) -> dict:
        """What the manifest says about the source."""
        unit = ("one document per .jsonl line; other files: blank-line paragraphs joined to "
                f">= {self.options.get('doc_chars', DOC_CHARS)} characters") if self.spec.kind == "text" else \
            f"one document per row's {self.options['text_field']!r} field"
        return {"spec": self.spec.raw, "kind": self.spec.kind, "document_unit": unit,
                "options": {k: v for k, v in self.options.items() if v is not None}}


def open_source(spec: DataSpec) -> TextSource:
    """The ``TextSource`` of a text or hf spec (unknown options raise ValueError)."""
    if spec.kind == "text":
        opts = take_options(
            spec,
            {"tokenizer": None, "text_field": "text", "doc_chars": DOC_CHARS, "max_docs": None, "max_chars": None},
            types={"max_docs": int},
        )
    elif spec.kind == "hf":
        opts = take_options(
            spec,
            {"tokenizer": None, "text_field": "text", "data_files": None, "max_docs": None, "max_chars": None},
            types={"max_docs": int},
        )
        if opts["max_chars"] is None:
            opts["max_chars"] = HF_MAX_CHARS
    else:
        raise ValueError(f"{spec.raw!r} is not a text or hf: source")
    opts["max_chars"] = _max_chars(opts["max_chars"], spec)
    tokenizer = opts.pop("tokenizer")
    return TextSource(spec, tokenizer, opts)


def _max_chars(value, spec: DataSpec) -> int | None:
    """``max_chars`` as an int, or None for ``none`` (no cap)."""
    if value is None or isinstance(value, int):
        return value
    if str(value).lower() == "none":
        return None
    return convert(str(value), 0, f"option 'max_chars' of {spec.raw!r} (or none for no cap)")
