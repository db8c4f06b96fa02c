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


def test_a_study_writing_its_reports_folder_leaves_the_checkout_clean_and_code_changes_do_not(tmp_path):
    """While a study trains it registers its plan and lands run data in reports/: its later runs must not
    be marked dirty for that; a changed source file (tracked, outside reports/ and results/) still is."""
    import subprocess

    from harness.runs.records import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for path in ("harness/code.py", "reports/study/data/plan.json", "studies/study.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = git_commit(tmp_path / "harness")
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "reports/study/data/plan.json").write_text("amended\n")
    assert git_commit(tmp_path / "harness") == clean  # the study's own output
    (tmp_path / "studies/study.yaml").write_text("changed\n")
    assert git_commit(tmp_path / "harness") == clean + "-dirty"  # an input changed
    (tmp_path / "studies/study.yaml").write_text("v1\n")
    (tmp_path / "harness/code.py").write_text("changed\n")
    assert git_commit(tmp_path / "harness") == clean + "-dirty"
