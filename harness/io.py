"""File writes that are atomic and fail in one sentence.

Atomic writes go to a temporary file in the same folder, then ``os.replace``: a reader
never sees a half-written record, report or checkpoint, and a crash mid-write leaves the
previous version in place. A write that fails (disk full, read-only file system, a path
through a file, no permission) removes its temporary file and raises ``WriteFailed``,
whose message names the path and, when the disk is full, the free space left.

Every harness write opens its file through ``_open_file`` (one place; tests inject
faults there). Temporary files are named ``.<name>.<random>.tmp``; ``remove_stale_temp_files``
deletes those a killed process left behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

TEMP_SUFFIX = ".tmp"
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file is in the way of a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a folder",
}


class WriteFailed(OSError):
    """A write that failed; ``str()`` is one line naming the path (and the free space when full)."""

    def __init__(self, path: str | os.PathLike, error: OSError):
        super().__init__(error.errno, describe_write_error(path, error), str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing ancestor)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def describe_write_error(path: str | os.PathLike, error: OSError) -> str:
    """``cannot write results/x/checkpoint.pt: no space left on device (1.2 MB free)``."""
    reason = _REASONS.get(error.errno) or (error.strerror or str(error)).strip().lower()
    message = f"cannot write {path}: {reason}"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(path)
        if free is not None:
            message += f" ({_size(free)} free there)"
    return message


def as_write_failed(path: str | os.PathLike, error: BaseException) -> BaseException:
    """``error`` as a ``WriteFailed`` naming ``path`` when it is an ``OSError``; else unchanged."""
    if isinstance(error, WriteFailed) or not isinstance(error, OSError):
        return error
    return WriteFailed(getattr(error, "filename", None) or path, error)


def _open_file(path: str | os.PathLike, mode: str, buffering: int = -1):
    """The one place the harness opens a file for writing."""
    return open(path, mode, buffering=buffering)


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p``; a failure is a ``WriteFailed`` naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise as_write_failed(path, error) from None
    return path


def check_writable(folder: str | os.PathLike) -> Path:
    """Fail now (``WriteFailed``), not after hours of work, if ``folder`` cannot be written.

    Creates ``folder`` and a probe file in it, then removes both (folders it made are removed again).
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    make_dirs(folder)
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check.", suffix=TEMP_SUFFIX, dir=folder)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as error:
        raise as_write_failed(folder, error) from None
    finally:
        for path in missing:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break
    return folder


class _Recorder:
    """A binary file wrapper that remembers the ``OSError`` a write raised.

    torch.save reports a failed write as a ``RuntimeError`` ("unexpected pos ..."); the
    recorded error says what really happened.
    """

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def _write_atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    make_dirs(path.parent)
    tmp_name = None
    recorder = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        with _open_file(tmp_name, mode) as handle:
            recorder = _Recorder(handle) if "b" in mode else None
            write(recorder or handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_name, path)
    except BaseException as error:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
        cause = recorder.error if recorder is not None and recorder.error is not None else error
        if isinstance(cause, WriteFailed):
            raise cause from None
        if isinstance(cause, OSError):
            raise WriteFailed(path, cause) from None  # name the file, not its temporary
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return _write_atomic(path, lambda handle: handle.write(text), "w")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return _write_atomic(path, lambda handle: handle.write(data), "wb")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def torch_save_atomic(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return _write_atomic(path, lambda handle: torch.save(obj, handle), "wb")


def save_npy(path: str | os.PathLike, array) -> Path:
    """``np.save`` to ``path`` (not atomic: for files inside a folder that is renamed into place)."""
    import numpy as np

    try:
        with _open_file(path, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))
    except OSError as error:
        raise as_write_failed(path, error) from None
    return Path(path)


class JsonlAppender:
    """Append JSON lines to a file; a failed append is cut back off, so the file stays whole lines."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = _open_file(self.path, "ab", buffering=0)  # unbuffered: nothing left to flush later
        except OSError as error:
            raise as_write_failed(self.path, error) from None

    def append(self, obj: Any) -> None:
        data = (json.dumps(obj, default=_json_default) + "\n").encode()
        start = self._file.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view) or 0 :]
        except OSError as error:
            try:
                os.ftruncate(self._file.fileno(), start)
            except OSError:
                pass
            raise as_write_failed(self.path, error) from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # a buffered tail that no longer fits: the lines written so far stay whole
            pass


def remove_stale_temp_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files (left by killed writers) in ``folder``; returns them.

    Call only while no other process can be writing there (e.g. holding the run lock).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f"**/.*{TEMP_SUFFIX}" if recursive else f".*{TEMP_SUFFIX}"
    removed = []
    for path in folder.glob(pattern):
        try:
            if path.is_file():
                path.unlink()
                removed.append(path)
        except OSError:
            pass
    return removed


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)


def _json_default(value: Any) -> Any:
    """Make numpy/torch scalars and paths JSON-serialisable."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
