"""FLOPs to a probe threshold (interpolated, censored), the study file's `probes:` block, and the report section."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from harness.sweeps.probe_measures import ProbeSettings, add_probe_measures, flops_to_threshold, threshold_column


def test_flops_to_threshold_interpolates_between_validation_points():
    flops, accuracy = [1e9, 2e9, 3e9, 4e9], [0.0, 0.1, 0.5, 0.9]
    assert flops_to_threshold(flops, accuracy, 0.3) == pytest.approx(2.5e9)  # halfway from 0.1 to 0.5
    assert flops_to_threshold(flops, accuracy, 0.5) == pytest.approx(3e9)  # reached exactly at a point
    assert flops_to_threshold(flops, [0.6, 0.7, 0.8, 0.9], 0.3) == pytest.approx(1e9)  # at the first point
    assert flops_to_threshold(flops, [0.0, 0.4, 0.2, 0.6], 0.3) == pytest.approx(1e9 + 0.75e9)  # the first crossing


def test_flops_to_threshold_is_nan_when_never_reached():
    assert math.isnan(flops_to_threshold([1e9, 2e9], [0.1, 0.29], 0.3))
    assert math.isnan(flops_to_threshold([], [], 0.3))


def _curves(values_by_run: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for run_id, values in values_by_run.items():
        for i, value in enumerate(values):
            rows.append({"run_id": run_id, "step": 10 * (i + 1), "flops": 1e9 * (i + 1), "metric": "probe/recall_16/acc",
                         "value": value})
    return pd.DataFrame(rows)


def test_add_probe_measures_gives_a_column_per_distance_with_censored_runs_as_nan():
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "arch": ["gpt2"] * 3, "seed": [0, 1, 2]})
    curves = _curves({"a": [0.0, 0.2, 0.4], "b": [0.0, 0.1, 0.2]})  # c logged no probe curve
    out = add_probe_measures(runs, curves, ProbeSettings((16,), 0.3))
    column = threshold_column(16, 0.3)
    assert column == "probe/recall_16/flops_to_0.3"
    assert out.loc[0, column] == pytest.approx(2.5e9)
    assert math.isnan(out.loc[1, column]) and math.isnan(out.loc[2, column])
    assert list(out["probe/recall_16/logged"]) == [1, 1, 0]


def test_probe_settings_are_checked():
    assert ProbeSettings.from_dict({"distances": [16, 64], "threshold": 0.3}) == ProbeSettings((16, 64), 0.3)
    with pytest.raises(ValueError, match="threshold in \\(0, 1\\]"):
        ProbeSettings.from_dict({"distances": [16], "threshold": 30})
    with pytest.raises(ValueError, match="must be a mapping"):
        ProbeSettings.from_dict({"distance": [16]})


def test_a_study_probes_block_needs_a_sweep_that_scores_the_distances():
    from harness.sweeps.study import StudySpec

    sweep = {"name": "syn", "role": "synthetic", "archs": ["gpt2"], "size": "nano", "budget": 1e10,
             "train_probes": [16]}
    spec = StudySpec.from_dict({"name": "s", "sweeps": [sweep], "probes": {"distances": [16], "threshold": 0.3}})
    assert spec.probes == ProbeSettings((16,), 0.3)
    with pytest.raises(ValueError, match="no sweep scores during training"):
        StudySpec.from_dict({"name": "s", "sweeps": [sweep], "probes": {"distances": [64], "threshold": 0.3}})


def test_threshold_table_counts_censored_seeds_and_the_figure_draws(tmp_path):
    from harness.reporting.figures import save_figure
    from harness.reporting.probe_section import probe_curves, threshold_table

    runs = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "arch": ["gpt2", "gpt2", "gpt2", "gpt3"], "seed": [0, 1, 2, 0]})
    curves = _curves({"a": [0.0, 0.2, 0.4], "b": [0.0, 0.3, 0.5], "c": [0.0, 0.1, 0.2], "d": [0.0, 0.0, 0.1]})
    settings = ProbeSettings((16,), 0.3)
    runs = add_probe_measures(runs, curves, settings)
    table = threshold_table(runs, ["gpt2", "gpt3"], settings)
    gpt2, gpt3 = table.splitlines()[2], table.splitlines()[3]
    assert "2 of 3" in gpt2 and "2.24e+09" in gpt2  # geometric mean of 2.5e9 and 2e9, with its interval
    assert "not reached" in gpt3 and "0 of 1" in gpt3
    paths = save_figure(probe_curves(runs, curves, ["gpt2", "gpt3"], settings, 1 / 64), tmp_path, "probe_curves")
    assert [p.name for p in paths] == ["probe_curves.png", "probe_curves.svg"]


STUDY = """name: tinyprobes
probes: {distances: [16], threshold: 0.02}
sweeps:
  - name: syn
    role: synthetic
    archs: [gpt2, gpt3]
    size: nano
    budget: 2.0e+10
    seeds: 2
    eval: false
    train_probes: [16]
comparisons:
  - {key: probe/gpt3-vs-gpt2, topic: banded vs dense, setting: syn, metric: probe/recall_16/flops_to_0.02,
     label: FLOPs to 2 % recall 16 back, unit: FLOPs, a: gpt3, b: gpt2, higher_is_better: false,
     expected: better, reason: more tokens per FLOP}
"""


@pytest.mark.slow
def test_a_study_report_has_the_probe_section_and_regenerates_byte_for_byte(results_tmp, tmp_path):
    from tests.test_study_data import _cli, _files

    study = tmp_path / "tinyprobes.yaml"
    study.write_text(STUDY)
    report_dir = results_tmp.parent / "reports" / "tinyprobes"
    code, _, err = _cli(["study", str(study)])
    assert code == 0, err
    assert json.loads((report_dir / "runs.json").read_text())["probes"] == {"distances": [16], "threshold": 0.02}
    text = (report_dir / "report.md").read_text()
    section = text.split("## Probes during training (`syn`)")[1].split("\n## ")[0]
    assert "recall 16: FLOPs to 0.02" in section and " of 2 |" in section and "figures/probe_curves.png" in section
    assert (report_dir / "figures" / "probe_curves.png").exists()
    assert "probe/recall_16/flops_to_0.02" in (report_dir / "syn.csv").read_text().splitlines()[0]
    before = _files(report_dir)
    shutil.rmtree(results_tmp)
    (report_dir / "report.md").unlink()
    shutil.rmtree(report_dir / "figures")
    code, _, err = _cli(["report", "tinyprobes"])
    assert code == 0, err
    after = _files(report_dir)
    assert sorted(after) == sorted(before) and [p for p in before if after[p] != before[p]] == []
