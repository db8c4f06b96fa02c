"""The matched wall-clock view: `study --bench` step times, interpolation at T*, the report section and figure."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import run_cli as _cli  # noqa: E402  (tests/ is on sys.path)

TINY = """name: tinywall
sweeps:
  - name: syn
    role: synthetic
    archs: [gpt2, gpt3]
    size: nano
    budget: 2.0e+10
    seeds: 2
    eval: false
  - name: accum
    role: lr
    archs: [gpt2]
    size: nano
    budget: 2.0e+10
    recipe: {micro_batch_size: 8}
    eval: false
"""




def _load(one: float):
    return lambda: {"loadavg_1m": one, "loadavg_5m": one, "loadavg_15m": one, "cpu_count": 2, "torch_threads": 1}


def test_bench_writes_step_times_for_every_sweep_and_arch(results_tmp, tmp_path, monkeypatch):
    import harness.sweeps.step_times as step_times

    monkeypatch.setattr(step_times, "machine_load", _load(0.1))
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY)
    code, out, err = _cli(["study", str(study), "--bench", "--bench-steps", "3", "--bench-warmup", "1", "--threads", "1"])
    assert code == 0, err
    path = results_tmp.parent / "reports" / "tinywall" / "data" / "step_times.json"
    assert out.strip() == str(path)
    data = json.loads(path.read_text())
    assert data["steps"] == 3 and data["warmup"] == 1 and data["threads"] == 1 and not data["forced_while_busy"]
    assert data["load_before"]["loadavg_1m"] == 0.1 and data["load_after"]["loadavg_1m"] == 0.1
    assert data["machine"]["cpu_count"] and data["machine"]["torch_version"]
    assert sorted(data["sweeps"]) == ["accum", "syn"] and sorted(data["sweeps"]["syn"]) == ["gpt2", "gpt3"]
    for arch, entry in data["sweeps"]["syn"].items():
        assert len(entry["step_s"]) == 3 and entry["s_per_step_median"] == sorted(entry["step_s"])[1]
        assert entry["s_per_step_median"] > 0 and entry["threads"] == 1
        # nano's recipe: 1024 tokens per step of 64-token sequences, micro-batch 16; synthetic vocabulary 512
        assert entry["tokens_per_step"] == 1024 and entry["seq_len"] == 64 and entry["grad_accum"] == 1
        assert entry["size"] == "nano" and entry["vocab_size"] == 512
        assert entry["example_run_id"].startswith(f"{arch}-nano-")
    accum = data["sweeps"]["accum"]["gpt2"]  # the recipe's micro-batch of 8 sequences: 2 micro-steps per step
    assert accum["micro_batch_size"] == 8 and accum["grad_accum"] == 2 and accum["tokens_per_step"] == 1024
    assert not results_tmp.exists()  # nothing trained


def test_bench_times_a_tuned_study_before_its_rates_are_chosen(results_tmp, tmp_path, monkeypatch):
    """A study with a tune: block has no comparison plans before tuning; --bench times its sweeps anyway."""
    import harness.sweeps.step_times as step_times

    monkeypatch.setattr(step_times, "machine_load", _load(0.1))
    study = tmp_path / "tuned.yaml"
    study.write_text(TINY.replace("name: tinywall", "name: tunedwall") +
                     "tune: {sweeps: [syn], lrs: [1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3, 1.6e-2], first_seed: 100}\n")
    code, out, err = _cli(["study", str(study), "--bench", "--bench-steps", "2", "--bench-warmup", "1", "--threads", "1"])
    assert code == 0, err
    data = json.loads(Path(out.strip()).read_text())
    assert sorted(data["sweeps"]["syn"]) == ["gpt2", "gpt3"] and not results_tmp.exists()


def test_bench_is_refused_on_a_busy_machine_without_force(results_tmp, tmp_path, monkeypatch):
    import harness.sweeps.step_times as step_times

    monkeypatch.setattr(step_times, "machine_load", _load(5.0))
    monkeypatch.setattr(step_times, "time_model", lambda *a: pytest.fail("timed on a busy machine"))
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY)
    code, _, err = _cli(["study", str(study), "--bench"])
    assert code == 2
    assert "1-minute load average is 5.00 on 2 cores" in err and "--force" in err and err.count(". ") == 0
    assert not (results_tmp.parent / "reports" / "tinywall" / "data" / "step_times.json").exists()
    warning = step_times.check_idle(_load(5.0)(), force=True)
    assert warning.startswith("WARNING") and step_times.check_idle(_load(0.9)(), force=False) is None


def test_loss_at_step_interpolates_between_validation_points():
    from harness.reporting.wallclock import loss_at_step

    assert loss_at_step([10, 30, 60], [3.0, 2.0, 1.4], 40) == pytest.approx(1.8)  # 2.0 − 0.6 · 10/30
    assert loss_at_step([60, 10, 30], [1.4, 3.0, 2.0], 30) == pytest.approx(2.0)  # unsorted input, exact point
    assert math.isnan(loss_at_step([10, 30], [3.0, 2.0], 31)) and math.isnan(loss_at_step([10, 30], [3.0, 2.0], 5))


def test_t_star_is_the_shortest_total_and_each_arch_is_read_there():
    from harness.reporting.study_tables import Setting
    from harness.reporting.wallclock import setting_view

    curves = [("a0", 10, 3.0), ("a0", 50, 2.0), ("a0", 100, 1.5),  # a: 0.4 s/step × 100 steps = 40 s
              ("b0", 10, 3.0), ("b0", 30, 2.0), ("b0", 60, 1.4)]   # b: 1.0 s/step × 60 steps = 60 s
    frame = pd.DataFrame([{"run_id": r, "step": s, "metric": "val_loss", "value": v} for r, s, v in curves])
    runs = pd.DataFrame([{"run_id": "a0", "arch": "a", "seed": 0}, {"run_id": "b0", "arch": "b", "seed": 0}])
    setting = Setting("syn", "synthetic", "", runs, frame, [])
    view = setting_view(setting, {"a": {"s_per_step_median": 0.4}, "b": {"s_per_step_median": 1.0}})
    assert view.attrs["t_star"] == pytest.approx(40.0)
    by_arch = view.set_index("arch")
    assert by_arch.loc["a", "total_s"] == pytest.approx(40.0) and by_arch.loc["b", "total_s"] == pytest.approx(60.0)
    assert by_arch.loc["a", "loss_at_t_star"] == pytest.approx(1.5)  # a's last point
    assert by_arch.loc["b", "loss_at_t_star"] == pytest.approx(1.8)  # b at step 40, between 30 and 60


def _fabricated_study(tmp_path):
    from harness.sweeps.study import StudySpec, StudySweep, write_study_file
    from test_findings import write_run

    results, reports = tmp_path / "results", tmp_path / "reports"
    ids = []
    for seed in range(3):
        # val_loss = loss + 1/step at steps 1..10
        write_run(results, f"gpt2-s{seed}", "gpt2", seed, 2e-3, loss=2.0 + 0.01 * seed, recall48=0.5, facts=0.4)
        write_run(results, f"gpt3-s{seed}", "gpt3", seed, 2e-3, loss=2.0 + 0.02 * seed, recall48=0.5, facts=0.4)
        ids += [f"gpt2-s{seed}", f"gpt3-s{seed}"]
    spec = StudySpec("fab", [StudySweep("syn", "synthetic", None)])
    write_study_file(reports / "fab", spec, {"syn": {"role": "synthetic", "command": "c1", "run_ids": ids}})
    return results, reports


def _step_times(s_per_step: dict[str, float]) -> dict:
    load = {"loadavg_1m": 0.05, "cpu_count": 2}
    return {"steps": 20, "warmup": 3, "threads": 1, "forced_while_busy": False, "load_before": load,
            "load_after": load, "machine": {"device_name": "test CPU (1 threads)", "cpu_count": 2},
            "sweeps": {"syn": {a: {"s_per_step_median": s, "step_s": [s], "tokens_per_step": 1024}
                               for a, s in s_per_step.items()}}}


def _table_row(text: str, arch: str) -> list[str]:
    section = text.split("## Matched wall-clock view")[1].split("\n## ")[0]
    return next([c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
                if line.startswith(f"| {arch} |"))


def test_report_has_the_wallclock_view_only_with_step_times(tmp_path):
    from harness.reporting.study_report import build_study_report

    results, reports = _fabricated_study(tmp_path)
    text = build_study_report("fab", results_dir=results, reports_dir=reports).path.read_text()
    assert "Matched wall-clock view" not in text and not (reports / "fab" / "figures" / "wallclock.png").exists()

    (reports / "fab" / "data" / "step_times.json").write_text(json.dumps(_step_times({"gpt2": 0.2, "gpt3": 0.1})))
    report = build_study_report("fab", results_dir=results, reports_dir=reports)
    text = report.path.read_text()
    assert "## Matched wall-clock view" in text and "not the runs' own wall time" in text
    # totals: gpt2 10 steps × 0.2 s = 2 s, gpt3 10 × 0.1 s = 1 s → T* = 1 s: gpt2 at step 5, gpt3 at step 10
    assert "### `syn`: T* = 1.0 s" in text
    gpt2, gpt3 = _table_row(text, "gpt2"), _table_row(text, "gpt3")
    assert gpt2[1:4] == ["0.2", "1024", "2.0"] and gpt3[1:4] == ["0.1", "1024", "1.0"]
    assert gpt2[4].startswith(f"{np.mean([2.2, 2.21, 2.22]):.4f} ±") and gpt2[5] == "reference"
    # per seed (2.0 + 0.02 i + 0.1) − (2.0 + 0.01 i + 0.2) = −0.1 + 0.01 i: mean −0.09
    assert gpt3[5].startswith("-0.0900 [") and "(3 seed pairs)" in gpt3[5]
    figure = reports / "fab" / "figures" / "wallclock.png"
    assert figure in report.figures and "(figures/wallclock.svg)" in text

    before = {p.name: p.read_bytes() for p in (report.path, figure, figure.with_suffix(".svg"))}
    shutil.rmtree(results)
    build_study_report("fab", results_dir=results, reports_dir=reports)  # from data/ alone
    assert {p.name: p.read_bytes() for p in (report.path, figure, figure.with_suffix(".svg"))} == before
