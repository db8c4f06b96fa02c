"""On-disk cache of token arrays: one folder per key, ``.npy`` files + ``meta.json``.

A folder is built in a temporary sibling and renamed into place, so readers never see a
half-written one and two processes preparing the same data do not clash. Arrays come
back memory-mapped (``np.load(mmap_mode="r")``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from harness.io import as_write_failed, make_dirs, read_json, save_npy, write_json_atomic


def cache_key(*parts: object) -> str:
    """sha256 hex digest of the JSON form of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding ids below ``vocab_size``."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


STALE_BUILD_S = 3600  # a temporary build folder untouched this long belongs to a killed process


def _remove_stale_builds(folder: Path) -> None:
    """Delete ``.<key>.*`` build folders a killed process left (untouched for ``STALE_BUILD_S``)."""
    if not folder.parent.is_dir():
        return
    for tmp in folder.parent.glob(f".{folder.name}.*"):
        try:
            if tmp.is_dir() and time.time() - tmp.stat().st_mtime > STALE_BUILD_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def cached_arrays(
    folder: Path, build: Callable[[], tuple[dict[str, np.ndarray], dict]]
) -> tuple[dict[str, np.ndarray], dict]:
    """Load ``folder``'s arrays and meta, building and saving them with ``build()`` first if absent.

    A write that fails raises ``harness.io.WriteFailed`` naming the file (and the free space).
    """
    folder = Path(folder)
    if not (folder / "meta.json").exists():
        arrays, meta = build()
        make_dirs(folder.parent)
        _remove_stale_builds(folder)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        except OSError as error:
            raise as_write_failed(folder.parent, error) from None
        try:
            for name, array in arrays.items():
                save_npy(tmp / f"{name}.npy", array)
            write_json_atomic(tmp / "meta.json", {**meta, "arrays": sorted(arrays)})
            os.replace(tmp, folder)  # fails if another process got there first: keep theirs
        except OSError as error:
            if not (folder / "meta.json").exists():
                raise as_write_failed(folder, error) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = read_json(folder / "meta.json")
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
    return arrays, meta
