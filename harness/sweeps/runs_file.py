"""``reports/<name>/runs.json``: which runs a report covers and the command that made them.

Written by a sweep (``harness.sweeps.compare``) or a study, read by the reports; this module holds
the file's name, the rule for report names, and the defaults a runs file falls back on, so
a report reads its inputs without importing the sweep runner.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.io import read_json, write_json_atomic

RUNS_NAME = "runs.json"
DEFAULT_ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")
REFERENCE_ARCH = "gpt2"  # the architecture the others are tested against unless a sweep names another
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def validate_name(name: str) -> str:
    """A report name is one folder name under reports/; returns it, or raises ``ValueError``."""
    if not NAME_PATTERN.match(name or "") or ".." in name:
        raise ValueError(
            f"report name {name!r} must be a folder name of letters, digits, '.', '_', '+' or '-' (no '/')."
        )
    return name


def write_runs_file(report_dir: str | Path, payload: dict[str, Any]) -> Path:
    """``reports/<name>/runs.json`` (atomic); ``payload`` from ``harness.sweeps.compare.runs_payload``."""
    return write_json_atomic(Path(report_dir) / RUNS_NAME, payload)


def read_runs_file(report_dir: str | Path) -> dict[str, Any]:
    """The runs file in ``report_dir``; a malformed one is one ``ValueError`` sentence."""
    path = Path(report_dir) / RUNS_NAME
    try:
        payload = read_json(path)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-run the compare command that made it.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("run_ids"), list):
        raise ValueError(f"{path} has no run_ids list; re-run the compare command that made it.")
    return payload
