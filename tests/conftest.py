"""Shared test settings: offline hubs, shared data location, and a fresh results folder per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _shared_path(relative: str) -> Path:
    """``relative`` under ``HARNESS_DATA_DIR`` (default ../shared/data); missing, it skips the
    test locally and fails it in CI (``CI=true``)."""
    from harness.paths import data_dir

    path = data_dir() / relative
    if not path.exists():
        message = f"shared data {path.resolve()} not found (set HARNESS_DATA_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_file():
    """``shared_file("lm_eval/piqa_validation.jsonl")``: a path under the shared data (see ``_shared_path``)."""
    return _shared_path


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder (its ``corpora/`` must exist; see ``_shared_path``)."""
    return _shared_path("corpora").parent


@pytest.fixture
def results_tmp(tmp_path, monkeypatch) -> Path:
    """Point HARNESS_RESULTS_DIR and HARNESS_REPORTS_DIR at a temporary folder."""
    results = tmp_path / "results"
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(tmp_path / "reports"))
    return results



from report_fill_ins import fill_ins  # noqa: E402  (tests/ is on sys.path, as for conftest)


@pytest.fixture
def assert_no_fill_ins():
    """``check(text)``: fail naming the lines of a report that print None / n/a / nan for a missing value."""
    def check(text: str) -> None:
        found = fill_ins(text)
        assert not found, "report prints a missing value as None/n/a/nan:\n" + "\n".join(found[:10])
    return check
