"""The serving-cost section of reports (harness/reporting/serving.py) from records that hold
`harness bench --inference --record` figures, and the --record path itself."""

from __future__ import annotations

import json

import pytest
import torch

from architectures import build
from harness.cli import main as cli_main
from harness.reporting.report import build_report
from harness.runs.records import load_record, write_record
from harness.serving.inference_bench import record_serving
from test_report import _table_rows
from test_results import make_run

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")


def fake_result(batch: int, decode: float, kv: float) -> dict:
    return {"batch_size": batch, "decode_tokens_per_s": decode, "prefill_tokens_per_s": 10 * decode,
            "kv_bytes_per_token_at_context": kv, "device": "cpu", "dtype": "fp32"}


def test_report_has_a_serving_section_per_architecture(results_tmp):
    ids = []
    for i, arch in enumerate(ARCHS):
        for seed in range(2):
            run = make_run(results_tmp, arch, seed, 3.0 + i / 10 + seed / 100)
            ids.append(run.name)
            if arch != "gpt1":  # gpt1 never benchmarked
                record_serving(str(run), fake_result(1, 100.0 * (i + 1) + seed, 1000.0 * (i + 1)))
                record_serving(str(run), fake_result(8, 500.0 * (i + 1), 1000.0 * (i + 1)))
    report = build_report(ids, name="serving")
    text = report.path.read_text()
    assert "## Serving cost" in text
    rows = {row[0]: row for row in _table_rows(text, "| arch | runs | val loss")}
    assert set(rows) == {"gpt2", "gpt3", "gpt4"}
    assert rows["gpt3"][3:] == ["300", "1,500", "3,005", "3,000"]  # medians over the two seeds
    assert "No serving figures for gpt1" in text
    assert (report.directory / "figures" / "serving_cost.png").stat().st_size > 1000
    assert len((report.directory / "serving.csv").read_text().splitlines()) == 1 + 6


def test_no_section_without_serving_figures(results_tmp):
    ids = [make_run(results_tmp, arch, 0, 3.0).name for arch in ("gpt2", "gpt3")]
    assert "## Serving cost" not in build_report(ids).path.read_text()


def test_bench_inference_record_writes_the_runs_record(tmp_path, capsys):
    from harness.data import SyntheticTokenizer

    torch.manual_seed(1)
    model = build("gpt3", "nano", vocab_size=300).eval()
    run_dir = tmp_path / "run-gpt3"
    run_dir.mkdir()
    torch.save({"model": model.state_dict(), "config": model.config.to_dict(), "step": 0}, run_dir / "checkpoint.pt")
    SyntheticTokenizer(300).save(run_dir / "tokenizer")
    write_record(run_dir, {"status": "ok", "run_id": run_dir.name, "arch": "gpt3", "size": "nano"})
    argv = ["bench", "--inference", "--run", str(run_dir), "--prompt-tokens", "8", "--new-tokens", "4", "--dtype", "fp32",
            "--device", "cpu", "--steps", "1", "--warmup", "0", "--format", "json", "--batch-size", "2", "--record"]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    serving = load_record(run_dir)["serving"]["b2"]
    assert serving["decode_tokens_per_s"] == result["decode_tokens_per_s"]
    # gpt3 nano: context 64, one dense layer (64 positions) and one banded (32): (64 + 32) / 64 of a dense layer's
    dense_layer = 2 * model.config.d_model * 4
    assert serving["kv_bytes_per_token_at_context"] == pytest.approx(dense_layer * (64 + 32) / 64)
    assert cli_main(["bench", "--inference", "--arch", "gpt2", "--size", "nano", "--record"]) == 2


def test_study_report_has_a_serving_section_per_setting(tmp_path):
    from harness.reporting.study_report import build_study_report
    from harness.sweeps.study import StudySpec, StudySweep, write_study_file
    from test_findings import write_run

    results, reports = tmp_path / "results", tmp_path / "reports"
    ids = []
    for seed in range(2):
        for i, arch in enumerate(ARCHS):
            write_run(results, f"{arch}-s{seed}", arch, seed, 2e-3, loss=2.0 + 0.01 * seed, recall48=0.5, facts=0.4)
            record_serving(str(results / f"{arch}-s{seed}"), fake_result(1, 100.0 * (i + 1), 512.0))
            ids.append(f"{arch}-s{seed}")
    spec = StudySpec("fab", [StudySweep("syn", "synthetic", "--archs gpt1")])
    write_study_file(reports / "fab", spec, {"syn": {"role": "synthetic", "command": "c1", "run_ids": ids}})
    report = build_study_report("fab", results_dir=results, reports_dir=reports)
    text = report.path.read_text()
    assert "## Serving cost (`syn`)" in text
    rows = {row[0]: row for row in _table_rows(text.split("## Serving cost")[1], "| arch | runs | val loss")}
    assert list(rows) == list(ARCHS) and rows["gpt4"][3] == "400"
    assert (report.directory / "figures" / "serving_cost_syn.png").exists()
    assert (report.directory / "serving_syn.csv").exists()


def test_adaptation_section_shows_bleu_before_and_after(tmp_path):
    from harness.reporting.adaptation import adaptation_section

    results, out = tmp_path / "results", tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    run_ids = []
    for seed in range(2):
        parent = results / f"gpt2-s{seed}"
        parent.mkdir(parents=True)
        evaluation = {"harness_translate": {"bleu": {"value": 1.0 + seed}, "chrf": {"value": 10.0}}}
        (parent / "record.json").write_text(json.dumps({"schema_version": 1, "run_id": parent.name, "status": "ok",
                                                          "evaluation": evaluation}))
        child = results / f"ft-s{seed}"
        child.mkdir()
        record = {"schema_version": 1, "run_id": child.name, "status": "ok", "arch": "gpt2", "seed": seed, "parent_run": parent.name,
                  "finetune": {"method": "full", "rank": None}, "trainable_params": 100, "total_params": 100,
                  "fraction_trainable": 1.0, "flops_used": 1e9, "budget_flops": 1e9, "train_flops_per_token": 1e6,
                  "tokens": 1000, "steps": 10, "val_loss_before": 3.0, "val_loss_after": 2.0,
                  "evaluation": {"harness_translate": {"bleu": {"value": 20.0 + 2 * seed}, "chrf": {"value": 40.0}}}}
        (child / "record.json").write_text(json.dumps(record))
        run_ids.append(child.name)
    text = adaptation_section({"finetune": {"run_ids": run_ids, "data": "task:translate"}}, results, out, ["gpt2"])
    header = next(line for line in text.splitlines() if line.startswith("| arch"))
    row = next(line for line in text.splitlines() if line.startswith("| gpt2"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["BLEU before"].startswith("1.5000 ± ") and cells["BLEU after"].startswith("21.0000 ± ")
    assert cells["chrF before"] == "10.0000 ± 0.0000" and cells["chrF after"] == "40.0000 ± 0.0000"
