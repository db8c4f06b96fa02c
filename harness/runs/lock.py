"""One writer per run directory: an OS lock held for the life of a run or an evaluation.

``hold_run_lock(run_dir)`` takes ``fcntl.flock`` on ``run_dir/run.lock`` and writes the
holder (PID, host, what, since when) into it. A second process asking for the same run
gets ``RunLocked`` naming that PID (the CLI prints it and exits 2) or, with ``wait``,
blocks until the holder is done. The kernel drops the lock when its holder dies, however
it dies (SIGKILL included), so a dead holder's lock is simply taken over; a record the
dead process left at ``running`` is then rewritten as ``interrupted`` (``take_over_stale``)
and the run resumes from its last checkpoint.

While holding the lock, stale temporary files (``.<name>.*.tmp``) of killed writers are
removed from the run directory. Under torchrun only global rank 0 takes the lock (it is the
one that writes the run directory); the lock is re-entrant within a process, so ``run``
can hold it across training and evaluation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from harness.io import as_write_failed, make_dirs, remove_stale_temp_files
from harness.runs.run_dir import LOCK_NAME

RETRY_S = 2.0  # a busy lock is retried this long before giving up (rides over `results` probing it)
_held: dict[str, int] = {}  # lock paths this process holds -> nesting depth


class RunLocked(RuntimeError):
    """Another live process holds the run directory; the message names its PID."""


def _holder(path: Path) -> dict:
    try:
        info = json.loads(path.read_text() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _locked_message(run_dir: Path, info: dict) -> str:
    who = f"PID {info['pid']}" if info.get("pid") else "another process"
    where = f" on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    what = f" ({info.get('purpose', 'run')} since {info['since']})" if info.get("since") else ""
    return (f"{run_dir} is in use by {who}{where}{what}; wait for it with --wait, or stop that process "
            f"(its record and checkpoint are kept).")


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise as_write_failed(path, error) from None


def _acquire(run_dir: Path, path: Path, wait: bool, on_wait: Callable[[str], None] | None) -> int:
    """An fd holding an exclusive flock on ``path`` (the file still linked at ``path``)."""
    deadline = time.monotonic() + RETRY_S
    while True:
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() < deadline:
                os.close(fd)
                time.sleep(0.1)
                continue
            if not wait:
                os.close(fd)
                raise RunLocked(_locked_message(run_dir, _holder(path))) from None
            if on_wait:
                on_wait(_locked_message(run_dir, _holder(path)).split(";")[0] + "; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file on release: lock the new one


def _write_holder(fd: int, purpose: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


@contextlib.contextmanager
def hold_run_lock(
    run_dir: str | os.PathLike,
    *,
    wait: bool = False,
    purpose: str = "run",
    on_wait: Callable[[str], None] | None = None,
    main_rank_only: bool = True,
) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the ``with`` block (creating the folder); see the module docstring.

    Raises ``RunLocked`` when a live process holds it and ``wait`` is false. A run directory
    that holds nothing but the lock when released (the run failed before writing) is removed.
    """
    if main_rank_only:
        from harness.training.distributed import env_rank

        if env_rank() != 0:
            yield
            return
    run_dir = Path(run_dir)
    existed = run_dir.is_dir()
    make_dirs(run_dir)
    path = run_dir.resolve() / LOCK_NAME
    key = str(path)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = _acquire(run_dir, path, wait, on_wait)
    _held[key] = 1
    try:
        try:
            _write_holder(fd, purpose)
        except OSError:
            pass  # a full disk: the lock itself still holds
        for folder in (run_dir, run_dir / "tokenizer"):
            remove_stale_temp_files(folder)
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            if not existed and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
                path.unlink()
                run_dir.rmdir()
        os.close(fd)


def is_held(run_dir: str | os.PathLike) -> bool:
    """Whether a live process (this one included) holds ``run_dir``'s lock."""
    path = Path(run_dir) / LOCK_NAME
    if str(path.resolve()) in _held:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock if it was taken
    return False


def take_over_stale(run_dir: str | os.PathLike) -> str | None:
    """Rewrite a ``running`` record left by a dead process as ``interrupted``; returns a one-line note.

    Call while holding the lock (then nobody alive is running it). None when there was nothing to do.
    """
    from harness.runs.records import load_record, write_record

    try:
        record = load_record(run_dir)
    except (OSError, ValueError):
        return None
    if record.get("status") != "running":
        return None
    steps = record.get("steps", 0)
    record.update(status="interrupted",
                  error=f"the process running it stopped without finishing (killed?) after step {steps} or later; "
                        f"resumable from its last checkpoint")
    write_record(run_dir, record)
    return (f"{Path(run_dir).name}: the process that was running it died (record said running); "
            f"taking it over from its last checkpoint")


@contextlib.contextmanager
def claim_run(
    run_dir: str | os.PathLike,
    *,
    purpose: str = "run",
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """The one way a run directory is taken: its lock (``hold_run_lock``) for the ``with`` block, and for
    ``purpose="run"`` (training) a record that a dead process left ``running`` taken over first
    (``take_over_stale``; the note goes to ``on_wait``, default stderr). Re-entrant within a process."""
    import sys

    from harness.training.distributed import env_rank

    say = on_wait or (lambda note: print(note, file=sys.stderr))
    with hold_run_lock(run_dir, wait=wait, purpose=purpose, on_wait=say):
        if purpose == "run" and env_rank() == 0:
            note = take_over_stale(run_dir)
            if note:
                say(note)
        yield

