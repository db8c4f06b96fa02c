"""Local text sources: a text file, a ``.jsonl`` file, or a folder of them -> documents.

- A ``.jsonl`` file: one document per line, the string in field ``text_field``
  (default ``text``); blank lines and empty texts are skipped.
- Any other file (``.txt``, ``.raw``, ...): UTF-8 text cut at blank-line runs into
  paragraphs; consecutive paragraphs are joined into documents of at least
  ``doc_chars`` characters (default 4096; a paragraph is never split). A document's
  text is the file's text verbatim; the blank lines between documents are dropped
  (the end-of-text token separates documents instead).
- A folder: every ``.txt``, ``.raw``, ``.md`` and ``.jsonl`` file below it, in sorted
  path order.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable, Iterator

DOC_CHARS = 4096
FOLDER_SUFFIXES = (".txt", ".raw", ".md", ".jsonl")
_BLANK_LINES = re.compile(r"\r?\n(?:[ \t]*\r?\n)+")


def read_text_documents(
    path: str | Path,
    *,
    text_field: str = "text",
    doc_chars: int = DOC_CHARS,
    max_docs: int | None = None,
    max_chars: int | None = None,
) -> list[str]:
    """Documents of a file or folder, in order, up to ``max_docs`` / about ``max_chars``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"data path {path} does not exist; give a .txt/.jsonl file, a folder of them, 'synthetic' or 'hf:NAME'"
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FOLDER_SUFFIXES)
        if not files:
            raise ValueError(f"folder {path} holds no {'/'.join(FOLDER_SUFFIXES)} files")
    else:
        files = [path]
    docs = (doc for f in files for doc in _file_documents(f, text_field, doc_chars))
    return list(limit_documents(docs, max_docs=max_docs, max_chars=max_chars))


def _file_documents(path: Path, text_field: str, doc_chars: int) -> Iterator[str]:
    text = _read_utf8(path)
    if path.suffix == ".jsonl":
        yield from _jsonl_documents(path, text, text_field)
    else:
        yield from paragraph_documents(text, doc_chars)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path} is empty; give a file with text in it")
    if b"\x00" in data:
        raise ValueError(f"{path} looks like a binary file (it contains NUL bytes); give UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {error.start}); convert it to UTF-8") from None


def _jsonl_documents(path: Path, text: str, text_field: str) -> Iterator[str]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{lineno} is not valid JSON ({error.msg}); each line must be one JSON object") from None
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            fields = ", ".join(map(repr, row)) if isinstance(row, dict) else type(row).__name__
            raise ValueError(
                f"{path}:{lineno} has no string field {text_field!r} (found: {fields}); "
                f"each line must be an object like {{\"{text_field}\": \"...\"}}"
            )
        if row[text_field]:
            yield row[text_field]


def paragraph_documents(text: str, doc_chars: int = DOC_CHARS) -> list[str]:
    """Cut ``text`` at blank-line runs and join paragraphs into documents of >= ``doc_chars`` characters."""
    docs, start = [], 0
    for gap in _BLANK_LINES.finditer(text):
        if gap.start() - start >= doc_chars:
            docs.append(text[start : gap.start()])
            start = gap.end()
    docs.append(text[start:])
    return [doc.strip() for doc in docs if doc.strip()]


def limit_documents(docs: Iterable[str], *, max_docs: int | None = None, max_chars: int | None = None) -> Iterator[str]:
    """Pass documents through until ``max_docs`` of them or ``max_chars`` characters (the last one whole)."""
    n_docs = n_chars = 0
    for doc in docs:
        if max_docs is not None and n_docs >= max_docs or max_chars is not None and n_chars >= max_chars:
            return
        yield doc
        n_docs += 1
        n_chars += len(doc)


def hash_documents(docs: Iterable[str]) -> str:
    """sha256 of the documents' UTF-8 bytes (length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for doc in docs:
        data = doc.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
