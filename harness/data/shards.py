"""Reading prepared token shards: the manifest, verification, and ``ShardedTokens`` — the shards of
one split as one memory-mapped 1-D token sequence (what ``get_batch`` and validation index).

A shard that is missing, of the wrong size or whose sha256 differs from the manifest's is an
error naming it. Hashes are checked once per process per file (size and mtime unchanged).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.io import read_json

MANIFEST = "manifest.json"
HASH_BLOCK = 16 << 20
_VERIFIED: set[tuple[str, int, int, str]] = set()


class ShardedTokens:
    """Several 1-D token arrays read as one: ``len``, integer and slice indexing, ``windows``, ``head``."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = [a for a in arrays if len(a)]
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        self.dtype = self.arrays[0].dtype if self.arrays else np.dtype(np.uint16)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[start:stop][::step]
            return self._read(start, max(stop - start, 0))
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"token index {key} is out of range for {len(self)} tokens")
            return self._read(index, 1)[0]
        return self.windows(np.asarray(key).reshape(-1), 1).reshape(np.shape(key))

    def __array__(self, dtype=None, copy=None):
        out = self._read(0, len(self))
        return out.astype(dtype) if dtype is not None else out

    def _read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` as one array (a view when inside one shard)."""
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        offset = start - int(self.starts[shard]) if length else 0
        if length == 0:
            return np.empty(0, dtype=self.dtype)
        if offset + length <= len(self.arrays[shard]):
            return self.arrays[shard][offset : offset + length]
        parts, remaining = [], length
        while remaining:
            piece = self.arrays[shard][offset : offset + remaining]
            parts.append(piece)
            remaining -= len(piece)
            shard, offset = shard + 1, 0
        return np.concatenate(parts)

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``[len(starts), length]`` array: row i is tokens ``starts[i] .. starts[i] + length - 1``."""
        if len(starts) and (int(np.min(starts)) < 0 or int(np.max(starts)) + length > len(self)):
            raise IndexError(f"windows of {length} tokens at the given starts run past {len(self)} tokens")
        out = np.empty((len(starts), length), dtype=self.dtype)
        for row, start in enumerate(starts):
            out[row] = self._read(int(start), length)
        return out

    def head(self, n: int) -> "ShardedTokens":
        """The first ``n`` tokens, still sharded."""
        arrays, left = [], n
        for array in self.arrays:
            if left <= 0:
                break
            arrays.append(array[:left])
            left -= len(array)
        return ShardedTokens(arrays)

    def chunks(self, size: int = HASH_BLOCK) -> Iterator[np.ndarray]:
        """The tokens in order, at most ``size`` at a time."""
        for array in self.arrays:
            for first in range(0, len(array), size):
                yield array[first : first + size]

    def __repr__(self) -> str:
        return f"ShardedTokens({len(self):,} tokens in {len(self.arrays)} shards, {self.dtype})"


def token_chunks(tokens, size: int = HASH_BLOCK) -> Iterator[np.ndarray]:
    """A token sequence (array or ``ShardedTokens``) in chunks of at most ``size``."""
    if isinstance(tokens, ShardedTokens):
        yield from tokens.chunks(size)
    else:
        for first in range(0, len(tokens), size):
            yield np.asarray(tokens[first : first + size])


def is_shard_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no {MANIFEST}; prepare it with `python -m harness data prepare SPEC --out {folder}`")
    return read_json(path)


def open_split(folder: str | Path, manifest: dict, split: str) -> ShardedTokens:
    """The ``split`` shards of a prepared folder, verified against the manifest and memory-mapped."""
    folder = Path(folder)
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    arrays = []
    for entry in manifest["shards"][split]:
        path = folder / entry["file"]
        check_shard(path, entry, dtype.itemsize)
        arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=(entry["tokens"],)))
    return ShardedTokens(arrays)


def check_shard(path: Path, entry: dict, itemsize: int, rehash: bool = False) -> None:
    """Raise a one-sentence FileNotFoundError/ValueError if the shard at ``path`` is missing or not the listed one."""
    redo = "; rerun `python -m harness data prepare` with the same spec to rewrite it"
    if not path.is_file():
        raise FileNotFoundError(f"shard {path} listed in the manifest is missing{redo}")
    stat = path.stat()
    if stat.st_size != entry["tokens"] * itemsize:
        raise ValueError(f"shard {path} is corrupt: {stat.st_size:,} bytes where the manifest lists "
                         f"{entry['tokens']:,} tokens of {itemsize} bytes; delete it{redo}")
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, entry["sha256"])
    if key in _VERIFIED and not rehash:
        return
    if file_sha256(path) != entry["sha256"]:
        raise ValueError(f"shard {path} is corrupt: its sha256 differs from the manifest's; delete it{redo}")
    _VERIFIED.add(key)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def read_progress(path: Path, key: str) -> dict:
    """An interrupted preparation's state (``{}`` if none); one prepared with other options is an error."""
    if not path.is_file():
        return {}
    state = read_json(path)
    if state.get("key") != key:
        raise ValueError(f"{path.parent} holds a preparation with other options; delete it or choose another output folder")
    return state


def verified_done(folder: Path, entries: list[dict], itemsize: int) -> list[dict]:
    """The listed finished shards up to the first one missing or not matching its hash (rewritten from there)."""
    done = []
    for entry in entries:
        try:
            check_shard(folder / entry["file"], entry, itemsize)
        except (FileNotFoundError, ValueError):
            break
        done.append(entry)
    return done
