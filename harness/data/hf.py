"""Hugging Face ``datasets`` source, streamed: ``hf:NAME[:CONFIG][@SPLIT][?options]``.

``NAME`` is a hub dataset (``roneneldan/TinyStories``) or a packaged builder such as
``json``/``text``/``parquet`` with ``data_files=PATH`` (so tests and offline machines
use the same code path on local files). ``SPLIT`` defaults to ``train``. Documents are
the ``text_field`` column (default ``text``), up to ``max_docs`` documents or about
``max_chars`` characters (default 20 million, so a web-scale corpus stays bounded;
``?max_chars=none`` streams all of it, e.g. into ``harness data prepare``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from harness.data.text import limit_documents

HF_MAX_CHARS = 20_000_000


@dataclass(frozen=True)
class HFSource:
    """A parsed ``hf:`` target."""

    name: str
    config: str | None = None
    split: str = "train"


def parse_hf_target(target: str) -> HFSource:
    """``NAME[:CONFIG][@SPLIT]`` (the part after ``hf:``) -> ``HFSource``."""
    rest, _, split = target.partition("@")
    name, _, config = rest.partition(":")
    if not name:
        raise ValueError(f"'hf:{target}' names no dataset; write hf:NAME[:CONFIG][@SPLIT]")
    return HFSource(name, config or None, split or "train")


def iter_hf_documents(
    source: HFSource,
    *,
    text_field: str = "text",
    data_files: str | None = None,
    max_docs: int | None = None,
    max_chars: int | None = HF_MAX_CHARS,
) -> Iterator[str]:
    """Stream the documents of ``source`` (non-empty strings of ``text_field``)."""
    import datasets

    kwargs = {"data_files": data_files} if data_files else {}
    try:
        stream = datasets.load_dataset(source.name, source.config, split=source.split, streaming=True, **kwargs)
    except Exception as error:  # hub unreachable, unknown name/config/split, bad files
        raise ValueError(f"cannot load Hugging Face dataset {_describe(source)}: {type(error).__name__}: {error}") from None

    def texts() -> Iterator[str]:
        for row in stream:
            if text_field not in row:
                raise ValueError(
                    f"Hugging Face dataset {_describe(source)} has no column {text_field!r} "
                    f"(columns: {', '.join(row)}); pick one with ?text_field=NAME"
                )
            if isinstance(row[text_field], str) and row[text_field]:
                yield row[text_field]

    return limit_documents(texts(), max_docs=max_docs, max_chars=max_chars)


def _describe(source: HFSource) -> str:
    return f"{source.name!r}" + (f" config {source.config!r}" if source.config else "") + f" split {source.split!r}"
