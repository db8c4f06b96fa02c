"""Writing one token stream (train or val) as fixed-size shards, atomically, resumably.

A shard is raw little-endian tokens (``uint16`` or ``uint32``) in ``<split>-NNNNNN.bin``;
every shard but the last of a split holds exactly ``shard_tokens`` tokens. A shard is
written to ``.<name>.tmp`` and renamed into place when complete, so a killed or failed
write never leaves a partial shard under a shard's name. Each finished shard is listed
(file, tokens, sha256, and where it ended: document index and tokens of that document
written) so a rerun can skip every document whose tokens are already on disk.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from harness import io as harness_io
from harness.io import WriteFailed


COMPLETE = 2**62  # the skip index of a split whose last shard is written


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.bin"


class ShardStream:
    """Appends whole documents' tokens of one split; ``done`` lists shards already on disk (resume)."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int, done: list[dict], on_shard):
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be a positive number of tokens, got {shard_tokens}")
        self.folder, self.split, self.dtype, self.shard_tokens = Path(folder), split, np.dtype(dtype), shard_tokens
        self.shards = list(done)
        self.on_shard = on_shard  # called after each shard is in place
        last = done[-1] if done else {"end_doc": -1, "end_offset": 0}
        self.skip_doc, self.skip_offset = int(last["end_doc"]), int(last["end_offset"])
        if self.skip_offset < 0:  # the last shard of the split is written: nothing left to add
            self.skip_doc, self.skip_offset = COMPLETE, 0
        self.tokens_total = sum(s["tokens"] for s in done)
        self._file = None
        self._digest = None
        self._filled = 0

    @property
    def resume_doc(self) -> int:
        """The first document index this stream still needs tokens of."""
        return self.skip_doc if self.skip_offset else self.skip_doc + 1

    def append(self, tokens: np.ndarray, doc_ids: np.ndarray, lengths: np.ndarray) -> None:
        """Add documents ``doc_ids`` (increasing) whose tokens, ``lengths[i]`` each, are ``tokens`` in order."""
        keep = doc_ids >= self.skip_doc
        if not keep.all():
            dropped = int(lengths[~keep].sum())
            tokens, doc_ids, lengths = tokens[dropped:], doc_ids[keep], lengths[keep]
        offsets = np.zeros(len(doc_ids), dtype=np.int64)  # tokens of each document already written
        if len(doc_ids) and doc_ids[0] == self.skip_doc and self.skip_offset:
            offsets[0] = self.skip_offset
            tokens = tokens[self.skip_offset :]
            lengths = lengths.copy()
            lengths[0] -= self.skip_offset
        ends = np.cumsum(lengths)
        position = 0
        while position < len(tokens):
            take = min(self.shard_tokens - self._filled, len(tokens) - position)
            self._write(tokens[position : position + take])
            position += take
            if self._filled == self.shard_tokens:
                doc = int(np.searchsorted(ends, position - 1, side="right"))
                start = ends[doc] - lengths[doc]
                self._close_shard(int(doc_ids[doc]), int(offsets[doc] + position - start))

    def finish(self, last_doc: int) -> None:
        """Write the last, shorter shard (if any tokens are left)."""
        if self._filled:
            self._close_shard(last_doc, -1)

    def abort(self) -> None:
        """Remove the unfinished shard's temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp_path().unlink(missing_ok=True)

    def _tmp_path(self) -> Path:
        return self.folder / f".{shard_name(self.split, len(self.shards))}.tmp"

    def _write(self, tokens: np.ndarray) -> None:
        path = self._tmp_path()
        try:
            if self._file is None:
                self._file = harness_io._open_file(path, "wb")
                self._digest = hashlib.sha256()
            data = np.ascontiguousarray(tokens, dtype=self.dtype.newbyteorder("<")).tobytes()
            self._file.write(data)
        except OSError as error:
            self.abort()
            raise WriteFailed(self.folder / shard_name(self.split, len(self.shards)), error) from None
        self._digest.update(data)
        self._filled += len(tokens)

    def _close_shard(self, end_doc: int, end_offset: int) -> None:
        name = shard_name(self.split, len(self.shards))
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._tmp_path(), self.folder / name)
        except OSError as error:
            self.abort()
            raise WriteFailed(self.folder / name, error) from None
        entry = {"file": name, "tokens": self._filled, "sha256": self._digest.hexdigest(),
                 "end_doc": end_doc, "end_offset": end_offset}
        self.shards.append(entry)
        self.tokens_total += self._filled
        self._filled = 0
        self.on_shard()
