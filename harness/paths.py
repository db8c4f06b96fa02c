"""Where the harness reads shared data and writes results, reports and caches.

Each location is one environment variable with a default relative to the working
directory, so the same commands work in a checkout, in CI and on a cluster.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def data_dir() -> Path:
    """Offline corpora and evaluation sets (``HARNESS_DATA_DIR``, default ``../shared/data``)."""
    return Path(os.environ.get("HARNESS_DATA_DIR", "../shared/data"))


def results_dir() -> Path:
    """Run records and checkpoints (``HARNESS_RESULTS_DIR``, default ``results``)."""
    return Path(os.environ.get("HARNESS_RESULTS_DIR", "results"))


def reports_dir() -> Path:
    """Generated reports (``HARNESS_REPORTS_DIR``, default ``reports``)."""
    return Path(os.environ.get("HARNESS_REPORTS_DIR", "reports"))


def cache_dir() -> Path:
    """Tokenizers, token arrays and measured device ceilings (``HARNESS_CACHE_DIR``, default ``.cache/harness``)."""
    return Path(os.environ.get("HARNESS_CACHE_DIR", ".cache/harness"))


@contextlib.contextmanager
def temporary_environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a ``with`` block, then restore them."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
