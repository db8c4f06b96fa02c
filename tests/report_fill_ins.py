"""What the report tests look for: a missing value printed as None, n/a or nan."""

from __future__ import annotations

import re

FILL_INS = re.compile(r"\b(None|n/a|N/A|nan|NaN)\b")


def fill_ins(text: str) -> list[str]:
    """Lines of a generated report where a missing value was pasted in as None, n/a or nan."""
    return [line for line in text.splitlines() if FILL_INS.search(line)]
