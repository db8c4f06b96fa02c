"""Results as data: records → runs frame, metrics.jsonl → long curves, the `results` command."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from harness.reporting.results import RecordSkipped, eval_columns, flatten_record, load_curves, load_records, load_results
from cli_run import run_cli as _cli  # noqa: E402  (tests/ is on sys.path)

SEGMENTS = ("markov", "recall", "copy", "facts")


def make_run(
    root: Path,
    arch: str = "gpt2",
    seed: int = 0,
    loss: float = 3.0,
    *,
    budget: float = 1e10,
    d_model: int = 64,
    size: str = "nano",
    data: str = "synthetic",
    evaluation: dict | None = None,
    status: str = "ok",
    n_steps: int = 10,
    wall_s: float = 5.0,
    overrides: dict | None = None,
) -> Path:
    """A run folder with a plausible record.json, config.json and metrics.jsonl (no training)."""
    from architectures import get
    from harness.flops import forward_flops_per_token

    overrides = dict(overrides or {})
    if d_model != 64:
        overrides.setdefault("d_model", d_model)
    config = get(arch).config(size, vocab_size=512, **overrides)
    fwd = forward_flops_per_token(config, config.context)
    train = 3 * fwd
    tokens_per_step = 1024
    params = 12 * config.n_layer * config.d_model**2 + 512 * config.d_model
    tag = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    run_id = f"{arch}-{size}-{tag or 'base'}-{int(budget):x}-{data[:4]}-s{seed}"
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    synthetic = data == "synthetic"
    record = {
        "schema_version": 1, "run_id": run_id, "status": status, "error": None if status == "ok" else "boom",
        "arch": arch, "size": size, "params": params, "non_embedding_params": params - 512 * config.d_model,
        "active_params": params, "seq_len": config.context, "forward_flops_per_token": fwd,
        "train_flops_per_token": train, "budget_flops": budget, "planned_steps": n_steps,
        "tokens_per_step": tokens_per_step, "flops_used": n_steps * tokens_per_step * train,
        "tokens": n_steps * tokens_per_step, "steps": n_steps, "seed": seed,
        "data": {"spec": data, "kind": "synthetic" if synthetic else "text", "n_train_tokens": 100000,
                 "n_val_tokens": 10000, "tokenizer": "synthetic512" if synthetic else "bpe", "vocab_size": 512,
                 "val_sha256": "abc" + data, "segment_names": list(SEGMENTS) if synthetic else None},
        "recipe": {"lr": 3e-3, "min_lr_ratio": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
                   "grad_clip": 1.0, "warmup_fraction": 0.05, "micro_batch_size": 16, "batch_tokens": 1024,
                   "seq_len": 64, "grad_accum": 1, "world_size": 1},
        "device": "x86_64", "dtype": "fp32", "device_settings": {"device": "cpu"}, "torch_version": "2.x",
        "git_commit": "deadbeef", "command": "python -m harness run", "wall_s": wall_s,
        "tokens_per_s": n_steps * tokens_per_step / wall_s, "peak_flops_per_s": 1e11,
        "mfu": n_steps * tokens_per_step / wall_s * train / 1e11, "last_metrics": {"step": n_steps},
    }
    if status == "ok":
        record["final_val_loss"] = loss
        record["val_tokens"] = 8192
        if synthetic:
            record["entropy_floor"] = 1.9
            record["excess_loss"] = loss - 1.9
            record["per_segment"] = {
                name: {"loss": loss + i * 0.1, "entropy_floor": 1.5, "excess_loss": loss - 1.5 + i * 0.1, "tokens": 100}
                for i, name in enumerate(SEGMENTS)
            }
        else:
            record["val_bpb"] = loss / math.log(2) / 4
    if evaluation is not None:
        record["evaluation"] = evaluation
    (run_dir / "record.json").write_text(json.dumps(record))
    spec = {"arch": arch, "size": size, "data": data, "seed": seed, "budget_flops": budget, "overrides": overrides}
    (run_dir / "config.json").write_text(json.dumps({"run": spec, "model": config.to_dict(), "run_id": run_id}))
    lines = []
    for step in range(1, n_steps + 1):
        line = {"step": step, "tokens": step * tokens_per_step, "flops": step * tokens_per_step * train,
                "wall_s": wall_s * step / n_steps, "train_loss": loss + 3.0 / step, "lr": 1e-3}
        if step % 5 == 0 or step == n_steps:
            line["val_loss"] = loss + 2.0 / step
        lines.append(json.dumps(line))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def probe_eval(value: float) -> dict:
    return {"harness_copy": {"token_acc": {"value": value, "stderr": 0.01, "n": 50, "version": 1.0}}}


def test_frame_has_one_row_per_run_with_flattened_columns(tmp_path):
    make_run(tmp_path, "gpt2", 0, 3.0, evaluation=probe_eval(0.5))
    make_run(tmp_path, "gpt3", 0, 2.9, evaluation=probe_eval(0.6))
    frame = load_results(tmp_path)
    assert len(frame) == 2
    assert list(frame.columns[:4]) == ["run_id", "status", "arch", "size"]
    row = frame.set_index("arch").loc["gpt3"]
    assert row["final_val_loss"] == pytest.approx(2.9)
    assert row["eval/harness_copy/token_acc"] == pytest.approx(0.6)
    assert row["eval/harness_copy/token_acc/stderr"] == pytest.approx(0.01)
    assert row["eval/harness_copy/token_acc/n"] == 50
    assert row["segment/copy/excess_loss"] == pytest.approx(2.9 - 1.5 + 0.2)
    assert row["recipe/lr"] == pytest.approx(3e-3)
    assert row["data/spec"] == "synthetic"
    assert row["model/d_model"] == 64
    assert row["variant"] == "nano"
    assert "last_metrics" not in frame.columns and "config" not in frame.columns
    assert eval_columns(frame) == [("eval/harness_copy/token_acc", "harness_copy", "token_acc")]


def test_overrides_name_the_variant(tmp_path):
    record = load_records(tmp_path / "none")
    assert record == []
    make_run(tmp_path, "gpt2", 0, 3.0, d_model=96)
    row = flatten_record(load_records(tmp_path)[0])
    assert row["overrides"] == "d_model=96"
    assert row["variant"] == "nano d_model=96"
    assert row["model/d_model"] == 96


def test_corrupt_record_is_skipped_with_a_warning_naming_it(tmp_path):
    make_run(tmp_path, "gpt2", 0, 3.0)
    bad = make_run(tmp_path, "gpt3", 0, 3.0)
    (bad / "record.json").write_text('{"schema_version": 1, "run_id": ')
    not_a_record = make_run(tmp_path, "gpt1", 0, 3.0)
    (not_a_record / "record.json").write_text("[1, 2]")
    with pytest.warns(RecordSkipped) as caught:
        frame = load_results(tmp_path)
    assert list(frame["arch"]) == ["gpt2"]
    messages = " ".join(str(w.message) for w in caught)
    assert str(bad / "record.json") in messages and str(not_a_record / "record.json") in messages


def test_status_filter_and_missing_run_id(tmp_path):
    make_run(tmp_path, "gpt2", 0, 3.0)
    make_run(tmp_path, "gpt3", 0, 3.0, status="failed")
    assert list(load_results(tmp_path, statuses=["ok"])["arch"]) == ["gpt2"]
    assert set(load_results(tmp_path)["status"]) == {"ok", "failed"}
    with pytest.raises(FileNotFoundError, match="no-such-run"):
        load_records(tmp_path, run_ids=["no-such-run"])


def test_curves_are_long_format_and_survive_a_truncated_line(tmp_path):
    run = make_run(tmp_path, "gpt2", 1, 3.0, n_steps=10)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 11, "tok')  # a crash mid-write
    frame = load_results(tmp_path)
    with pytest.warns(RecordSkipped, match="metrics.jsonl"):
        curves = load_curves(frame)
    assert list(curves.columns) == ["run_id", "arch", "variant", "seed", "step", "tokens", "flops", "wall_s", "metric", "value"]
    val = curves[curves["metric"] == "val_loss"]
    assert list(val["step"]) == [5, 10]
    assert set(curves["metric"]) == {"train_loss", "lr", "val_loss"}
    assert (curves["seed"] == 1).all() and (curves["arch"] == "gpt2").all()
    with pytest.warns(RecordSkipped):
        only = load_curves(frame, metrics=["val_loss"])
    assert set(only["metric"]) == {"val_loss"}




def test_results_command_formats(results_tmp):
    make_run(results_tmp, "gpt2", 0, 3.0, evaluation=probe_eval(0.5))
    bad = make_run(results_tmp, "gpt4", 0, 3.0)
    (bad / "record.json").write_text("not json")
    code, out, err = _cli(["results"])
    assert code == 0
    assert out.startswith("| run_id | arch | variant | seed | status | tokens | final_val_loss | excess_loss |")
    assert "eval/harness_copy/token_acc" in out and "| 0.5 (n=50) |" in out
    assert f"warning: skipping {bad / 'record.json'}" in err
    code, out, _ = _cli(["results", "--format", "csv"])
    csv = pd.read_csv(io.StringIO(out))
    assert code == 0 and len(csv) == 1 and "recipe/lr" in csv.columns
    code, out, _ = _cli(["results", "--format", "json", "--columns", "arch,final_val_loss"])
    assert code == 0 and json.loads(out) == [{"arch": "gpt2", "final_val_loss": 3.0}]
    code, out, _ = _cli(["results", "--curves", "--format", "csv"])
    assert code == 0 and "val_loss" in out
    code, _, err = _cli(["results", "--columns", "nope"])
    assert code == 2 and "unknown column" in err
    code, out, _ = _cli(["results", "--columns", "run_id,mfu"])
    assert code == 0 and out.startswith("| run_id | mfu % |")


def test_results_default_table_fits_160_characters_and_shows_n(results_tmp):
    """Many runs with many scores: the default table stays ≤ 160 wide; --all shows every column."""
    tasks = [f"harness_task_{i}" for i in range(12)]
    for seed in range(3):
        evaluation = {task: {"acc": {"value": 0.5 + seed / 10, "stderr": 0.01, "n": 200, "version": 1.0}}
                      for task in tasks}
        make_run(results_tmp, "gpt4", seed, 3.0, evaluation=evaluation, overrides={"d_model": 96})
    code, out, err = _cli(["results"])
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 160
    header = out.splitlines()[0]
    assert "eval/harness_task_0/acc" in header and "| 0.5 (n=200) |" in out
    assert "do not fit in 160 characters" in err and "--all" in err
    code, out, _ = _cli(["results", "--all"])
    assert code == 0 and "recipe/lr" in out.splitlines()[0] and "eval/harness_task_11/acc" in out.splitlines()[0]
    assert "| mfu % |" in out.splitlines()[0]
