"""Reports regenerate byte for byte from the data kept beside them, without results/.

- every committed report with a ``data/`` folder, from a fresh copy of the repository's tracked files;
- a tiny study trained here: the plan is registered before training, a changed plan is refused
  without --amend and listed under "Deviations from the plan" with it, and once results/ is gone
  ``harness report`` rewrites every file of the report identically.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run_cli as _cli  # noqa: E402  (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
DATA_LIMIT_BYTES = 5 * 2**20


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _committed_reports_with_data() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "reports"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    return sorted({Path(p).parts[1] for p in listed if len(Path(p).parts) > 3 and Path(p).parts[2] == "data"})


@pytest.mark.parametrize("name", _committed_reports_with_data() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no committed report has a data/ folder yet"))])
def test_committed_report_regenerates_from_a_fresh_copy(tmp_path, name):
    copy = tmp_path / "repo"
    for relative in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split("\n"):
        if relative and (ROOT / relative).is_file():
            (copy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / relative, copy / relative)
    assert not (copy / "results" / "runs").exists()
    committed = _files(copy / "reports" / name)
    assert sum(len(v) for k, v in committed.items() if k.startswith("data/")) < DATA_LIMIT_BYTES
    env = {**os.environ, "PYTHONPATH": str(copy), "HARNESS_RESULTS_DIR": str(tmp_path / "no-results"),
           "HARNESS_REPORTS_DIR": str(copy / "reports")}
    done = subprocess.run([sys.executable, "-m", "harness", "report", name], cwd=copy, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    regenerated = _files(copy / "reports" / name)
    assert sorted(regenerated) == sorted(committed)
    changed = [path for path in committed if regenerated[path] != committed[path]]
    assert not changed, f"regenerated differently: {changed}"


STUDY = """name: tiny
sweeps:
  - name: syn
    role: synthetic
    archs: [gpt2, gpt3]
    size: nano
    budget: 2.0e+10
    seeds: 2
    eval: false
comparisons:
  - {key: excess/gpt3-vs-gpt2, topic: banded vs dense, setting: syn, metric: excess_loss,
     label: excess loss over the entropy floor, unit: nats/token, a: gpt3, b: gpt2, higher_is_better: false,
     expected: better, reason: more tokens per FLOP, citation: Child et al. 2019}
  - {key: recall/gpt3-vs-gpt2, topic: banded vs dense, setting: syn, metric: eval/harness_recall_48/acc,
     label: recall accuracy 48 tokens back, unit: accuracy, a: gpt3, b: gpt2, higher_is_better: true,
     expected: worse, reason: half the layers cannot attend that far}
"""
RECALL_SWEEP = """  - name: rec
    role: recall
    archs: [gpt2, gpt3]
    size: nano
    data: "synthetic?weight_recall_query=0.9&recall_pairs=4&n_train=200000"
    budget: 2.0e+10
    seeds: 2
    eval: false
"""
RECALL_COMPARISON = """  - {key: recall_loss/gpt3-vs-gpt2, topic: banded vs dense, setting: rec, metric: segment/recall/excess_loss,
     label: excess loss on recall tokens, unit: nats/token, a: gpt3, b: gpt2, higher_is_better: false,
     expected: worse, reason: half the layers cannot attend that far}
"""


@pytest.mark.slow
def test_a_study_is_preregistered_amended_and_regenerated_byte_for_byte(results_tmp, tmp_path, monkeypatch):
    import harness.training.heldout as heldout

    original = heldout.validation_metrics
    monkeypatch.setattr(heldout, "validation_metrics",
                        lambda *a, max_tokens=4096, **k: original(*a, max_tokens=min(max_tokens, 4096), **k))
    study = tmp_path / "tiny.yaml"
    study.write_text(STUDY)
    report_dir = results_tmp.parent / "reports" / "tiny"
    code, _, err = _cli(["study", str(study)])
    assert code == 0, err
    registered = json.loads((report_dir / "data" / "plan.json").read_text())
    assert registered["before_data"] is True and not registered["amendments"]
    assert (report_dir / "data" / "study.yaml").read_text() == STUDY
    assert len(list((report_dir / "data" / "runs").iterdir())) == 4
    for run in (report_dir / "data" / "runs").iterdir():  # ≥ 10 validation points per run
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert sum("val_loss" in line for line in lines) >= 10
    text = (report_dir / "report.md").read_text()
    assert "across the 2 planned confirmatory comparisons" in text and "recall accuracy 48 tokens back: untestable" in text

    study.write_text(STUDY.replace("expected: better", "expected: worse"))
    code, _, err = _cli(["study", str(study)])
    assert code == 2 and "changed after runs have data" in err
    # the amendment also adds a recall-centred sweep with a comparison written before its runs train
    amended = STUDY.replace("expected: better", "expected: worse").replace("comparisons:\n", RECALL_SWEEP + "comparisons:\n")
    study.write_text(amended + RECALL_COMPARISON)
    code, _, err = _cli(["study", str(study), "--amend", "flipped after seeing the data; a recall sweep"])
    assert code == 0, err
    text = (report_dir / "report.md").read_text()
    deviations = text.split("## Deviations from the plan")[1].split("\n## ")[0]
    assert '"flipped after seeing the data; a recall sweep"' in deviations and "changed `excess/gpt3-vs-gpt2`" in deviations
    assert "Settings with data then: `syn`, `synthetic`." in deviations
    assert "excess/gpt3-vs-gpt2 (amended)" not in text.split("**Exploratory**")[0]  # outside the family
    assert "across the 3 planned confirmatory comparisons" in text  # the recall comparison joined the family
    assert "## Recall setting (`rec`)" in text and "figures/loss_recall.png" in text

    before = _files(report_dir)
    assert sum(len(v) for k, v in before.items() if k.startswith("data/")) < DATA_LIMIT_BYTES
    shutil.rmtree(results_tmp)
    (report_dir / "report.md").unlink()
    shutil.rmtree(report_dir / "figures")
    code, out, err = _cli(["report", "tiny"])
    assert code == 0, err
    after = _files(report_dir)
    assert sorted(after) == sorted(before)
    assert [path for path in before if after[path] != before[path]] == []


def test_compact_curves_keep_every_validation_point_and_thin_the_steps():
    """A comparison run keeps ≤ MAX_CURVE_ROWS step lines plus every validation line; a tuning run
    (max_rows 0) keeps its validation lines only."""
    from harness.runs.compact import MAX_CURVE_ROWS, TUNING_CURVE_ROWS, thin_metrics

    lines = [{"step": s, "train_loss": 1.0 / s, "extra": "dropped"} for s in range(1, 1001)]
    lines[99]["val_loss"], lines[999]["val_loss"] = 2.0, 1.5
    kept = thin_metrics(lines)
    steps = [line["step"] for line in kept]
    assert {100, 1000} <= set(steps) and len(steps) <= MAX_CURVE_ROWS + 2 and steps == sorted(steps)
    assert all("extra" not in line for line in kept)
    tuning = thin_metrics(lines, TUNING_CURVE_ROWS)
    assert [line["step"] for line in tuning] == [100, 1000] and tuning[-1]["val_loss"] == 1.5
