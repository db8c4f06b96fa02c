"""Numbers as text: the one formatting every report, table and figure label shares."""

from __future__ import annotations

import math

from harness.reporting.formatting import (fmt_count, fmt_interval, fmt_p, fmt_precise, fmt_range, fmt_sci, fmt_si,
                                markdown_figure, markdown_notes, markdown_table)
from harness.reporting.stats import t_interval


def test_markdown_table_escapes_pipes():
    table = markdown_table(["a", "b"], [["x|y", 1]])
    assert table.splitlines() == ["| a | b |", "|:---|---:|", "| x\\|y | 1 |"]


def test_counts_and_si_prefixes_differ_only_at_a_billion():
    assert [fmt_count(v) for v in (999, 1234, 1234567, 2.5e9, 3e12)] == ["999", "1.23k", "1.23M", "2.5B", "3T"]
    assert [fmt_si(v) for v in (1234, 2.5e9)] == ["1.23k", "2.5G"]
    assert fmt_count(None) == fmt_count(math.nan) == fmt_count(math.inf) == "—"


def test_scientific_and_p_values():
    assert [fmt_sci(v) for v in (0.0123, 123.4, 1e-5, 2.5e11)] == ["0.0123", "123", "1.00e-05", "2.50e+11"]
    assert fmt_sci(None) == "—"
    assert [fmt_p(p) for p in (0.0123, 5e-5, math.nan)] == ["0.012", "< 1e-4", "—"]


def test_precise_keeps_exact_counts_exact():
    assert fmt_precise(None) == "-"
    assert fmt_precise(123456789) == "123,456,789"
    assert fmt_precise(1234567.0) == "1,234,567"
    assert fmt_precise(3.14159265) == "3.14159"
    assert fmt_precise(0.000123456) == "1.235e-04"
    assert fmt_precise(0.0) == "0"


def test_intervals_and_ranges_over_seeds():
    two = t_interval([3.0, 3.2])
    assert fmt_interval(two, 2) == f"3.10 ± {two.half_width:.2f}"
    assert fmt_interval(t_interval([2.5]), 3) == "2.500"
    assert fmt_interval(t_interval([2.5]), 1, one_seed=" (1 seed)") == "2.5 (1 seed)"
    assert fmt_interval(t_interval([])) == "—"
    assert fmt_range([10.0, math.nan, 20.0], 0) == "15 (10–20)"
    assert fmt_range([7.25], 1) == "7.2"
    assert fmt_range([]) == "—"


def test_notes_and_figures_blocks():
    assert markdown_notes([]) == []
    assert markdown_notes(["a"]) == ["> **Notes**", ">", "> - a", ""]
    assert markdown_figure("Loss", "figures", "loss") == [
        "**Loss** ([SVG](figures/loss.svg))", "", "![Loss](figures/loss.png)", ""]
