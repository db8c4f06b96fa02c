"""Progress that suits where the output goes: a bar on a terminal, a periodic line in a log.

    bar = progress_bar(total=200, initial=0, show=None, desc="training gpt2-nano-…")
    bar.update(1); bar.set_postfix(loss="4.123", tok_s="5400"); bar.close()

``show``: None decides by stderr (a tqdm bar when it is a terminal, else ``LineProgress``:
one line every ``HARNESS_PROGRESS_INTERVAL_S`` seconds, default 30, and a last line at the end
when any was printed); True forces the bar; False prints nothing.

``quiet_third_party(verbose)``: while lm-eval runs, its progress bars and warnings (and those
of 🤗 datasets) are held back unless ``verbose`` (None: verbose only on a terminal).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from typing import Any, Iterator, TextIO

DEFAULT_INTERVAL_S = 30.0
# how the trainers' postfix fields read in a line, with their units
POSTFIX_LABELS = {"loss": "train loss {} nats/token", "tok_s": "{} tokens/s"}
QUIETED_LOGGERS = ("lm_eval", "lm-eval", "datasets", "transformers", "evaluate")


def progress_interval_s() -> float:
    """Seconds between progress lines off a terminal (``HARNESS_PROGRESS_INTERVAL_S``, default 30)."""
    raw = os.environ.get("HARNESS_PROGRESS_INTERVAL_S")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        raise ValueError(f"HARNESS_PROGRESS_INTERVAL_S must be a number of seconds, got {raw!r}.") from None


class LineProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` as a plain line every ``interval_s`` seconds."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "step",
                 stream: TextIO | None = None, interval_s: float | None = None) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = progress_interval_s() if interval_s is None else interval_s
        self.started = self.last_print = time.monotonic()
        self.postfix: dict[str, Any] = {}
        self.printed = self.due = False
        self.printed_at_n: int | None = None

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; a line is due after ``interval_s`` and printed by the ``set_postfix`` that
        usually follows (so it carries the step's numbers), else by the next ``update`` or ``close``."""
        if self.due:
            self._print()
        self.n += n
        self.due = time.monotonic() - self.last_print >= self.interval_s

    def set_postfix(self, **fields: Any) -> None:
        self.postfix = fields
        if self.due:
            self._print()

    def close(self) -> None:
        if self.due or (self.printed and self.printed_at_n != self.n):
            self._print()

    def line(self) -> str:
        """``training X: step 40 of 200 (20 %), train loss 4.123 nats/token, 5400 tokens/s, 35 s elapsed``."""
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        extras = "".join(f", {POSTFIX_LABELS.get(key, '{} ' + key).format(value)}" for key, value in self.postfix.items())
        prefix = f"{self.desc}: " if self.desc else ""
        elapsed = time.monotonic() - self.started
        return f"{prefix}{self.unit} {self.n} of {self.total}{share}{extras}, {elapsed:.0f} s elapsed"

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_print, self.printed, self.printed_at_n, self.due = time.monotonic(), True, self.n, False


def progress_bar(total: int, initial: int = 0, *, show: bool | None = None, desc: str = "", unit: str = "step"):
    """A tqdm bar (terminal, or ``show=True``), ``LineProgress`` (not a terminal), or a silent bar (``show=False``)."""
    from tqdm.auto import tqdm

    if show is None and not sys.stderr.isatty():
        return LineProgress(total, initial, desc=desc, unit=unit)
    return tqdm(total=total, initial=initial, disable=not (show if show is not None else True), unit=unit,
                desc=desc or None, dynamic_ncols=True)


@contextlib.contextmanager
def quiet_third_party(verbose: bool | None = None, note: str | None = None) -> Iterator[None]:
    """Hold lm-eval's and 🤗 datasets' progress bars and warnings back unless ``verbose`` (see module
    doc); ``note``: one line printed to stderr instead when they are held back."""
    if verbose or (verbose is None and sys.stderr.isatty()):
        yield
        return
    if note:
        print(note, file=sys.stderr, flush=True)
    loggers = [logging.getLogger(name) for name in QUIETED_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _tqdm_disabled():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _tqdm_disabled() -> Iterator[None]:
    """Every tqdm bar created meanwhile is disabled (lm-eval and 🤗 datasets subclass ``tqdm.std.tqdm``;
    tqdm reads its ``TQDM_DISABLE`` variable only at import, so the class is patched, then restored)."""
    from tqdm import std

    original = std.tqdm.__init__

    def disabled_init(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = disabled_init
    try:
        yield
    finally:
        std.tqdm.__init__ = original
