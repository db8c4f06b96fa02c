"""Shared test settings: offline hubs, shared data location, and a fresh results folder per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def shared_data() -> Path:
    """``HARNESS_DATA_DIR`` (default ../shared/data); missing data skips locally and fails in CI."""
    from harness.paths import data_dir

    path = data_dir()
    if not (path / "corpora").is_dir():
        message = f"shared data not found at {path.resolve()} (set HARNESS_DATA_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def results_tmp(tmp_path, monkeypatch) -> Path:
    """Point HARNESS_RESULTS_DIR and HARNESS_REPORTS_DIR at a temporary folder."""
    results = tmp_path / "results"
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(tmp_path / "reports"))
    return results
