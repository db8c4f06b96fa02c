"""Numbers as text, the one way every report, table and figure label writes them.

- ``fmt_count``: counts with a suffix (k, M, B, T): 1234567 → ``1.23M``.
- ``fmt_si``: the same with SI prefixes (k, M, G, T), for FLOPs on figure axes.
- ``fmt_sci``: 3 significant figures, e-notation outside [1e-3, 1e4).
- ``fmt_p``: a p-value, ``< 1e-4`` below that.
- ``fmt_precise``: exact integers with thousands separators, else 6 significant figures.
- ``fmt_interval``: a ``harness.reporting.stats.Interval`` as ``mean ± 95 % half-width``.
- ``fmt_range``: mean over seeds with the (min–max) range.
- ``markdown_table``, ``markdown_notes``, ``markdown_figure``: report building blocks.

Missing values (None, nan, inf) read ``—`` (an em dash) unless a function says otherwise.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from harness.reporting.stats import Interval

COUNT_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))
SI_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _scaled(value: float, suffixes: Sequence[tuple[float, str]], digits: int = 3) -> str:
    for limit, suffix in suffixes:
        if abs(value) >= limit:
            return f"{value / limit:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def fmt_count(value: Any) -> str:
    """1234567 → ``1.23M`` (k, M, B, T)."""
    return "—" if _missing(value) else _scaled(float(value), COUNT_SUFFIXES)


def fmt_si(value: float) -> str:
    """2.5e9 → ``2.5G`` (k, M, G, T): FLOPs and rates on figure axes."""
    return _scaled(value, SI_SUFFIXES)


def fmt_sci(value: Any, digits: int = 3) -> str:
    """``digits`` significant figures in [1e-3, 1e4), else e-notation with ``digits - 1`` decimals."""
    if _missing(value):
        return "—"
    value = float(value)
    return f"{value:.{digits}g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.{digits - 1}e}"


def fmt_p(p: float) -> str:
    """A p-value with 2 significant figures; ``< 1e-4`` below 1e-4."""
    if not math.isfinite(p):
        return "—"
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


def fmt_precise(value: float | None, digits: int = 6) -> str:
    """Integers (and integral floats ≥ 1000) with thousands separators, else ``digits`` significant
    figures (e-notation below 1e-3); None → ``-``. For baselines where exact counts matter."""
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.{min(digits, 3)}e}"


def fmt_interval(interval: Interval, digits: int = 3, one_seed: str = "") -> str:
    """``mean ± half-width`` with ``digits`` decimals; the mean alone (then ``one_seed``) without an interval."""
    if interval.n == 0 or not math.isfinite(interval.mean):
        return "—"
    if interval.n < 2 or not math.isfinite(interval.half_width):
        return f"{interval.mean:.{digits}f}{one_seed}"
    return f"{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}"


def fmt_range(values: Sequence[float], digits: int = 3) -> str:
    """Mean with the (min–max) range, ``digits`` decimals, nan dropped: for throughput, MFU and wall time."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if len(array) == 0:
        return "—"
    if len(array) == 1:
        return f"{array[0]:.{digits}f}"
    return f"{array.mean():.{digits}f} ({array.min():.{digits}f}–{array.max():.{digits}f})"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; ``align`` per column: ``l`` or ``r`` (default: first l, rest r)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    for row in rows:
        lines.append("| " + " | ".join(escape(cell) for cell in row) + " |")
    return "\n".join(lines)


def markdown_notes(notes: Sequence[str]) -> list[str]:
    """A ``> **Notes**`` block quote, one bullet per note, and a blank line (no lines without notes)."""
    if not notes:
        return []
    return ["> **Notes**", ">"] + [f"> - {note}" for note in notes] + [""]


def markdown_figure(caption: str, figures_dir: str, key: str) -> list[str]:
    """A figure's bold caption with a link to its SVG, then the PNG inline."""
    return [f"**{caption}** ([SVG]({figures_dir}/{key}.svg))", "", f"![{caption}]({figures_dir}/{key}.png)", ""]
