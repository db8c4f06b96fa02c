"""Provenance of published numbers: machine load per run, and dirty checkouts warned about or refused."""

from __future__ import annotations

import os

import pytest

from harness.machine import is_contended


def test_contended_means_more_runnable_processes_than_cores():
    assert is_contended({"loadavg_5m": 3.0, "cpu_count": 2}) is True
    assert is_contended({"loadavg_5m": 2.2, "cpu_count": 2}) is False
    assert is_contended({"loadavg_5m": None, "cpu_count": 2}) is None and is_contended(None) is None


def test_every_run_records_the_machine_load_at_start_and_end(results_tmp):
    from harness.runs.spec import RunSpec
    from harness.training.trainer import train

    record = train(RunSpec(arch="gpt2", size="nano", budget_flops=1e10), results_tmp).record
    for moment in ("start", "end"):
        load = record["machine_load"][moment]
        assert load["cpu_count"] == os.cpu_count() and load["torch_threads"] >= 1
        assert load["loadavg_5m"] is None or load["loadavg_5m"] >= 0


@pytest.mark.parametrize("require_clean, ok, said", [(True, False, "error: the checkout has uncommitted changes"),
                                                     (False, True, "WARNING: the checkout has uncommitted changes")])
def test_a_dirty_checkout_is_refused_or_warned_about(monkeypatch, capsys, require_clean, ok, said):
    import harness.runs.records
    from harness.cli.compare import provenance_ok

    monkeypatch.setattr(harness.runs.records, "git_commit", lambda: "0123abc-dirty")
    assert provenance_ok(require_clean) is ok
    assert said in capsys.readouterr().err
    monkeypatch.setattr(harness.runs.records, "git_commit", lambda: "0123abc")
    assert provenance_ok(True) is True and capsys.readouterr().err == ""
