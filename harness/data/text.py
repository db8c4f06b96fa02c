"""Local text sources, read as a stream: a text file, a ``.jsonl`` file, or a folder of them -> documents.

- A ``.jsonl`` file: one document per line, the string in field ``text_field``
  (default ``text``); blank lines and empty texts are skipped.
- Any other file (``.txt``, ``.raw``, ...): UTF-8 text cut at blank-line runs into
  paragraphs; consecutive paragraphs are joined into documents of at least
  ``doc_chars`` characters (default 4096; a paragraph is never split). A document's
  text is the file's text verbatim, stripped; the blank lines between documents are dropped
  (the end-of-text token separates documents instead). This is the unit the validation
  split hashes, so a single file such as Tiny Shakespeare gives ~4 KB documents.
- A folder: every ``.txt``, ``.raw``, ``.md`` and ``.jsonl`` file below it, in sorted
  path order.

Files are read in blocks of ``BLOCK_BYTES`` (a ``.jsonl`` line by line), so memory does not
grow with the file.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from pathlib import Path
from typing import Iterable, Iterator

DOC_CHARS = 4096
FOLDER_SUFFIXES = (".txt", ".raw", ".md", ".jsonl")
BLOCK_BYTES = 8 << 20
_BLANK_LINES = re.compile(r"\r?\n(?:[ \t]*\r?\n)+")
_WHITESPACE_TAIL = re.compile(r"[ \t\r\n]*\Z")


def text_files(path: str | Path) -> list[Path]:
    """The files a path names: itself, or the text files below a folder in sorted order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"data path {path} does not exist; give a .txt/.jsonl file, a folder of them, 'synthetic' or 'hf:NAME'"
        )
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FOLDER_SUFFIXES)
    if not files:
        raise ValueError(f"folder {path} holds no {'/'.join(FOLDER_SUFFIXES)} files")
    return files


def iter_text_documents(
    path: str | Path,
    *,
    text_field: str = "text",
    doc_chars: int = DOC_CHARS,
    max_docs: int | None = None,
    max_chars: int | None = None,
) -> Iterator[str]:
    """Documents of a file or folder, in order, up to ``max_docs`` / about ``max_chars`` (a stream)."""
    files = text_files(path)
    docs = (doc for f in files for doc in _file_documents(f, text_field, doc_chars))
    return limit_documents(docs, max_docs=max_docs, max_chars=max_chars)


def read_text_documents(path: str | Path, **options) -> list[str]:
    """``iter_text_documents`` as a list (small corpora and tests)."""
    return list(iter_text_documents(path, **options))


def _file_documents(path: Path, text_field: str, doc_chars: int) -> Iterator[str]:
    if path.suffix == ".jsonl":
        yield from _jsonl_documents(path, text_field)
    else:
        yield from paragraph_stream(_utf8_blocks(path), doc_chars)


def _utf8_blocks(path: Path) -> Iterator[str]:
    """The file's text in blocks; empty, binary or non-UTF-8 files raise ValueError naming the file."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset, seen_text = 0, False
    with open(path, "rb") as file:
        while True:
            data = file.read(BLOCK_BYTES)
            if b"\x00" in data:
                raise ValueError(f"{path} looks like a binary file (it contains NUL bytes); give UTF-8 text")
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path} is not UTF-8 text (bad byte at offset {offset + error.start}); convert it to UTF-8"
                ) from None
            offset += len(data)
            seen_text = seen_text or bool(text.strip())
            if text:
                yield text
            if not data:
                break
    if not seen_text:
        raise ValueError(f"{path} is empty; give a file with text in it")


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    seen_line = False
    with open(path, "rb") as file:
        for lineno, raw in enumerate(file, start=1):
            if b"\x00" in raw:
                raise ValueError(f"{path} looks like a binary file (it contains NUL bytes); give UTF-8 text")
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{lineno} is not UTF-8 text (bad byte at column {error.start}); convert it to UTF-8") from None
            if not line.strip():
                continue
            seen_line = True
            yield from _jsonl_text(path, lineno, line, text_field)
    if not seen_line:
        raise ValueError(f"{path} is empty; give a file with text in it")


def _jsonl_text(path: Path, lineno: int, line: str, text_field: str) -> Iterator[str]:
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


def paragraph_stream(blocks: Iterable[str], doc_chars: int = DOC_CHARS) -> Iterator[str]:
    """Cut text arriving in ``blocks`` at blank-line runs and join paragraphs into documents of
    >= ``doc_chars`` characters. The result does not depend on where the blocks are cut."""
    pending = ""  # text not yet in a document: the current document so far + an unfinished tail
    for block in blocks:
        pending += block
        # a blank-line run may continue into the next block: decide only on gaps followed by text
        safe = len(pending) - len(_WHITESPACE_TAIL.search(pending).group())
        docs, pending = _cut(pending, safe, doc_chars)
        yield from docs
    docs, rest = _cut(pending, len(pending), doc_chars)
    yield from docs
    if rest.strip():
        yield rest.strip()


def _cut(text: str, limit: int, doc_chars: int) -> tuple[list[str], str]:
    """Documents ending at gaps that end before ``limit``, and the text after the last cut."""
    docs, start = [], 0
    for gap in _BLANK_LINES.finditer(text, 0, limit):
        if gap.end() >= limit:
            break
        if gap.start() - start >= doc_chars:
            if text[start : gap.start()].strip():
                docs.append(text[start : gap.start()].strip())
            start = gap.end()
    return docs, text[start:]


def paragraph_documents(text: str, doc_chars: int = DOC_CHARS) -> list[str]:
    """``paragraph_stream`` over one string."""
    return list(paragraph_stream([text], doc_chars))


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
        update_document_hash(digest, doc.encode("utf-8"))
    return digest.hexdigest()


def update_document_hash(digest, data: bytes) -> None:
    """Add one document's UTF-8 bytes to a ``hash_documents`` digest."""
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)
