"""What every generated report reads like: no value pasted in as None / n/a / nan, tables that render."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from report_fill_ins import fill_ins

REPO = Path(__file__).resolve().parents[1]


def test_committed_reports_print_no_missing_value_as_none_or_na():
    reports = sorted((REPO / "reports").rglob("*.md"))
    assert reports, "the repository's committed reports are missing"
    found = {str(path.relative_to(REPO)): fill_ins(path.read_text()) for path in reports}
    assert not any(found.values()), {path: lines[:3] for path, lines in found.items() if lines}


def markdown_tables(text: str) -> list[list[str]]:
    """Each markdown table of ``text`` (outside code fences) as its lines."""
    tables, current, fenced = [], [], False
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            current.append(line.strip())
            continue
        if current:
            tables.append(current)
            current = []
    return tables


def cell_count(line: str) -> int:
    """Cells of one table line: pipes not escaped (``\\|``) and not inside `code`, minus the outer two."""
    line = re.sub(r"`[^`]*`", "code", line.replace("\\|", ""))
    return line.strip().strip("|").count("|") + 1


@pytest.mark.parametrize("path", [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))],
                         ids=lambda path: path.name)
def test_every_markdown_table_has_as_many_cells_in_each_row_as_in_its_header(path):
    tables = markdown_tables(path.read_text())
    assert tables or path.name != "README.md"
    for table in tables:
        assert len(table) >= 2 and re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", table[1]), f"no delimiter row: {table[:2]}"
        header = cell_count(table[0])
        wrong = [line for line in table[1:] if cell_count(line) != header]
        assert not wrong, f"{path.name}: header has {header} cells, these rows do not: {wrong}"


def test_the_table_check_catches_a_header_shorter_than_its_delimiter():
    table = markdown_tables("| a | b | c |\n| --- | --- | --- | --- |\n| 1 | 2 | 3 | 4 |\n")[0]
    assert cell_count(table[0]) == 3 and cell_count(table[1]) == 4
