"""The regression gate (harness/check/): it passes on an unchanged model, bites on a changed one.

The gate tests measure one architecture at a tiny budget against a baseline made inside
the test (seed 0 plus two spread seeds), so they take seconds; the committed baseline is
checked only for what is cheap and exact (counts and FLOPs, on the meta device).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import check
from harness.check import baseline as check_baseline
from harness.check import compare as check_compare
from harness.check import deterministic as check_deterministic
from harness.check import measure as check_measure
from harness.check import settings as check_settings
from harness.check import update as check_update
from harness.cli import main as cli_main

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "baselines" / "ci-cpu.json"
TINY = check.CheckSettings(
    archs=("gpt2",),
    budget_flops=3e10,  # 33 nano steps
    eval_limit=20,
    spread_seeds=(1, 2),
    tasks=("harness_facts", "harness_heldout"),
    text_data=None,  # the text run has tests of its own below
)


# ---- the committed baseline -----------------------------------------------------------------


def test_committed_baseline_matches_current_counts_and_flops():
    from harness.flops import plan_budget
    from harness.runs.spec import RunSpec

    baseline = check.load_baseline(COMMITTED)  # parses, right schema and torch major version
    settings = check.CheckSettings.from_dict(baseline["settings"])
    assert set(settings.archs) == {"gpt1", "gpt2", "gpt3", "gpt4"}
    assert settings.dtype == "fp32" and settings.device == "cpu"
    for arch in settings.archs:
        shape = baseline["shapes"][arch]
        now = check_measure.static_metrics(arch, settings.size, shape["vocab_size"], shape["seq_len"])
        spec = RunSpec(arch=arch, size=settings.size, seed=settings.seed, budget_flops=settings.budget_flops)
        plan = plan_budget(settings.budget_flops, now["train_flops_per_token"], spec.recipe.batch_tokens)
        now.update(planned_steps=plan.steps, tokens=plan.tokens)
        entries = baseline["metrics"][arch]
        spec = check_deterministic.short_spec(arch, settings)
        now["param_groups"] = check_deterministic.param_groups_digest(spec, shape["vocab_size"])
        now.update(check_deterministic.flops_by_component(spec, shape["vocab_size"]))
        for name, value in now.items():
            assert entries[name]["kind"] in ("exact", "digest")
            assert entries[name]["value"] == value, f"{arch} {name}: baseline {entries[name]['value']}, now {value}"
        for name in check_settings.DETERMINISTIC_KEYS[:4]:
            assert entries[name]["kind"] == "deterministic" and entries[name]["rtol"] == check_settings.DETERMINISTIC_RTOL
        for name, entry in entries.items():  # every gated quality metric has a measured tolerance
            if entry["kind"] == "quality":
                assert entry["tolerance"] >= entry["seed_std"] * check_settings.TOLERANCE_K - 1e-12
                assert len(entry["seed_values"]) == 1 + len(settings.spread_seeds)


# ---- the gate, on a baseline made here ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_baseline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("baseline") / "tiny.json"
    baseline, diff = check.update_baseline(path, TINY)
    assert diff.startswith("new baseline")
    assert baseline["produced"]["seeds"] == [0, 1, 2]
    assert check.load_baseline(path)["metrics"]["gpt2"]["final_val_loss"]["kind"] == "quality"
    return path


@pytest.mark.slow
def test_unchanged_model_passes_twice_with_identical_numbers(tiny_baseline):
    baseline = check.load_baseline(tiny_baseline)["metrics"]["gpt2"]
    for _ in range(2):
        result = check.run_check(tiny_baseline)
        assert result.passed, result.table()
        quality = {row.metric: row.now for row in result.rows if row.kind != "perf"}
        # deterministic (fp32, one thread, fixed seed): the same numbers as the baseline's seed 0
        assert quality == {name: entry["value"] for name, entry in baseline.items() if entry["kind"] != "perf"}


@pytest.mark.slow
def test_changed_init_scale_fails_naming_the_metric(tiny_baseline, capsys):
    code = cli_main(["check", "--baseline", str(tiny_baseline), "--set", "init_std=0.2"])
    out = capsys.readouterr().out
    assert code == 1
    failing = [line for line in out.splitlines() if "FAIL" in line and line.startswith("gpt2")]
    assert any("final_val_loss" in line and "worse" in line for line in failing), out
    assert "FAIL:" in out and "gpt2 final_val_loss" in out.splitlines()[-1]
    assert not any(name in line for line in failing for name in ("params", "flops_per_token"))


@pytest.mark.slow
def test_removed_layer_fails_on_exact_counts(tiny_baseline):
    result = check.run_check(tiny_baseline, overrides={"n_layer": 1})
    assert not result.passed
    failed = {row.metric for row in result.failures}
    assert {"params", "non_embedding_params", "forward_flops_per_token", "train_flops_per_token"} <= failed


def test_partial_run_is_an_error_not_a_pass(tiny_baseline, monkeypatch, capsys):
    import harness.training.trainer
    from harness.training.trainer import TrainingFailed

    def failing_train(*args, **kwargs):
        raise TrainingFailed("run gpt2-nano-x-s0 failed: training loss became nan at step 3")

    monkeypatch.setattr(harness.training.trainer, "train", failing_train)
    monkeypatch.setattr(check_measure, "reference_matmul_flops_per_s", lambda *a: 1e9)
    result = check.run_check(tiny_baseline)
    assert not result.passed and "gpt2" in result.errors
    assert "nan at step 3" in result.errors["gpt2"] and "--workdir" in result.errors["gpt2"]
    assert cli_main(["check", "--baseline", str(tiny_baseline)]) == 1
    assert "incomplete run: gpt2" in capsys.readouterr().out


# ---- bad baselines --------------------------------------------------------------------------


def _cli_error(capsys, *argv: str) -> str:
    assert cli_main(["check", *argv]) == 2
    return capsys.readouterr().err


def _committed() -> dict:
    return json.loads(COMMITTED.read_text())


def test_missing_baseline_says_how_to_create_one(tmp_path, capsys):
    err = _cli_error(capsys, "--baseline", str(tmp_path / "none.json"))
    assert "does not exist" in err and "--update" in err


def test_malformed_baseline(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    assert "not valid JSON" in _cli_error(capsys, "--baseline", str(tmp_path / "bad.json"))
    (tmp_path / "other.json").write_text('{"hello": 1}')
    assert "not a harness check baseline" in _cli_error(capsys, "--baseline", str(tmp_path / "other.json"))


def test_other_schema_version_is_refused(tmp_path, capsys):
    data = {**_committed(), "schema_version": 99}
    (tmp_path / "b.json").write_text(json.dumps(data))
    err = _cli_error(capsys, "--baseline", str(tmp_path / "b.json"))
    assert "schema version 99" in err and "--update" in err


def test_other_torch_major_version_is_refused(tmp_path, capsys):
    data = _committed()
    data["produced"]["torch_version"] = "1.13.1"
    (tmp_path / "b.json").write_text(json.dumps(data))
    err = _cli_error(capsys, "--baseline", str(tmp_path / "b.json"))
    assert "torch 1.13.1" in err and "major" in err


def test_baseline_missing_an_architecture(tmp_path, capsys):
    data = _committed()
    del data["metrics"]["gpt3"]
    (tmp_path / "b.json").write_text(json.dumps(data))
    assert "has no metrics for gpt3" in _cli_error(capsys, "--baseline", str(tmp_path / "b.json"))


def test_bad_arguments(capsys):
    assert "only applies with --update" in _cli_error(capsys, "--budget", "1e9")
    assert "unknown architecture" in _cli_error(capsys, "--archs", "gpt9")
    assert "drop --set" in _cli_error(capsys, "--update", "--set", "init_std=1")


# ---- comparison rules (no training) ---------------------------------------------------------


def test_compare_rules():
    quality = {"kind": "quality", "value": 3.0, "tolerance": 0.02, "better": "lower"}
    assert check_compare.compare_metric("a", "final_val_loss", quality, 3.015, False).verdict == "ok"
    worse = check_compare.compare_metric("a", "final_val_loss", quality, 3.05, False)
    assert worse.failed and worse.verdict.startswith("FAIL worse") and worse.direction is check.Direction.WORSE
    better = check_compare.compare_metric("a", "final_val_loss", quality, 2.9, False)
    assert better.failed and better.verdict.startswith("FAIL better") and better.direction is check.Direction.BETTER
    accuracy = {"kind": "quality", "value": 0.5, "tolerance": 0.02, "better": "higher"}
    assert check_compare.compare_metric("a", "harness_facts.acc", accuracy, 0.6, False).direction is check.Direction.BETTER
    assert check_compare.compare_metric("a", "final_val_loss", quality, float("nan"), False).failed
    assert check_compare.compare_metric("a", "final_val_loss", quality, None, False).verdict == "FAIL missing"
    assert not check_compare.compare_metric("a", "new_metric", None, 1.0, False).failed
    exact = {"kind": "exact", "value": 100}
    assert check_compare.compare_metric("a", "params", exact, 101, False).failed
    perf = {"kind": "perf", "value": 0.4, "tolerance": 0.5}
    assert check_compare.compare_metric("a", check_settings.PERF_KEY, perf, 0.25, False).verdict == "ok"
    slow = check_compare.compare_metric("a", check_settings.PERF_KEY, perf, 0.1, False)
    assert slow.warning and not slow.failed and slow.direction is check.Direction.WORSE
    assert check_compare.compare_metric("a", check_settings.PERF_KEY, perf, 0.1, True).failed


@pytest.mark.parametrize("direction, noted", [(check.Direction.BETTER, True), (check.Direction.WORSE, False)])
def test_cli_asks_for_an_update_only_when_a_metric_improved(monkeypatch, capsys, direction, noted):
    row = check.Row("gpt2", "final_val_loss", "quality", 3.0, 2.9, "±0.02", f"FAIL {direction.value} by 0.1",
                    failed=True, direction=direction)
    monkeypatch.setattr(check, "run_check", lambda *args, **kwargs: check.CheckResult([row], 1.0))
    assert cli_main(["check"]) == 1
    out = capsys.readouterr().out
    assert ("a metric improved beyond the seed spread" in out) == noted and "FAIL: " in out


def test_tolerance_is_k_std_or_floor():
    settings = check.CheckSettings(eval_limit=100, spread_seeds=(1, 2, 3))
    spread = check_baseline.metric_entry("final_val_loss", {0: 3.00, 1: 3.02, 2: 2.98, 3: 3.00}, settings)
    assert spread["tolerance"] == pytest.approx(3 * spread["seed_std"]) and spread["seed_std"] > 0
    flat = check_baseline.metric_entry("harness_copy.exact_match", {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, settings)
    assert flat["tolerance"] == pytest.approx(check_settings.FRACTION_FLOOR_DOCS / 100)
    perf = check_baseline.metric_entry(check_settings.PERF_KEY, {0: 0.3, 1: 0.5, 2: 0.2, 3: 0.4}, settings)
    assert perf["value"] == pytest.approx(0.35) and perf["tolerance"] == check_settings.PERF_TOLERANCE


def test_diff_names_what_moved():
    old = _committed()
    new = json.loads(json.dumps(old))
    new["metrics"]["gpt2"]["final_val_loss"]["value"] += 0.1
    new["settings"]["budget_flops"] = 4e11
    diff = check_update.baseline_diff(old, new)
    assert "gpt2 final_val_loss" in diff and "settings.budget_flops" in diff
    assert check_update.baseline_diff(old, old) == "no metric changed"
    assert json.loads(check_baseline.dumps_baseline(old)) == old


# ---- speed ratios (harness.speed_ratios) ------------------------------------------------------


def _with_speed(path: Path, tmp_path: Path, value: float) -> Path:
    data = json.loads(path.read_text())
    data["metrics"][check_settings.SPEED_GROUP] = {
        name: check_baseline.speed_entry([value]) for name in check_settings.SPEED_RATIOS}
    out = tmp_path / "with-speed.json"
    out.write_text(check_baseline.dumps_baseline(data))
    return out


def test_speed_ratios_are_judged_like_throughput(tiny_baseline, tmp_path, monkeypatch):
    path = _with_speed(tiny_baseline, tmp_path, 2.0)
    assert check.load_baseline(path)["metrics"]["speed"]["packed_eval_vs_one_per_forward"]["kind"] == "perf"
    halved = {name: [0.9] for name in check_settings.SPEED_RATIOS}  # below (1 - 0.5) x 2.0
    monkeypatch.setattr(check_compare, "measure_speed", lambda **kwargs: halved)
    result = check.run_check(path, speed=True)
    speed_rows = [row for row in result.rows if row.arch == check_settings.SPEED_GROUP]
    assert {row.metric for row in speed_rows} == set(check_settings.SPEED_RATIOS)
    assert all(row.warning and not row.failed for row in speed_rows) and result.passed
    strict = check_compare.compare(check.load_baseline(path), {"speed": {n: v[0] for n, v in halved.items()}},
                                   strict_perf=True)
    assert all(row.failed and row.direction is check.Direction.WORSE for row in strict)
    fine = check_compare.compare(check.load_baseline(path), {"speed": {n: 1.5 for n in halved}}, strict_perf=True)
    assert all(row.verdict == "ok" for row in fine)


def test_strict_perf_times_the_speed_ratios_and_a_plain_check_does_not(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(check, "run_check", lambda *args, **kwargs: calls.append(kwargs) or check.CheckResult([], 1.0))
    for argv in (["check"], ["check", "--speed"], ["check", "--strict-perf"]):
        assert cli_main(argv) == 0
    assert [(c["speed"], c["strict_perf"]) for c in calls] == [(False, False), (True, False), (True, True)]


def test_update_without_speed_keeps_the_baselines_speed_ratios(tmp_path, monkeypatch):
    fake = {"gpt2": {seed: {"final_val_loss": 3.0 + seed / 100, "_vocab_size": 64, "_seq_len": 16} for seed in (0, 1, 2)}}
    monkeypatch.setattr(check_update, "measure", lambda *args, **kwargs: fake)
    monkeypatch.setattr(check_update, "measure_speed", lambda *args: {n: [2.0, 3.0, 2.5] for n in check_settings.SPEED_RATIOS})
    path = tmp_path / "b.json"
    made, _ = check.update_baseline(path, TINY, speed=True)
    assert made["metrics"]["speed"]["banded_vs_dense_fp32"]["value"] == 2.5  # the median of the measurements
    monkeypatch.setattr(check_update, "measure_speed", lambda *args: pytest.fail("speed measured without speed=True"))
    again, diff = check.update_baseline(path, TINY)
    assert again["metrics"]["speed"] == made["metrics"]["speed"] and "speed" not in diff
    data = json.loads(path.read_text())
    del data["metrics"]["speed"]["banded_vs_dense_bf16"]["tolerance"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="speed metric banded_vs_dense_bf16 has no numeric tolerance"):
        check.load_baseline(path)


def test_speed_ratio_functions_run_on_small_shapes():
    """The timing plumbing on shapes small enough for a test (the ratios themselves are not asserted:
    timings belong to benchmarks)."""
    import torch

    from harness import speed_ratios

    assert speed_ratios.banded_core_speedup(torch.float32, repeats=1, T=256, window=32) > 0
    moe = speed_ratios.moe_per_active_flop(repeats=1, size="nano", batch_size=2, seq_len=32)
    assert set(moe["step_cpu_s"]) == {"gpt3", "gpt4"} and moe["speedup"] > 0
    assert speed_ratios.packed_eval_speedup(repeats=1, size="nano") > 0


# ---- deterministic metrics, resume and the text run ----------------------------------------------


def test_deterministic_and_digest_rules():
    entry = {"kind": "deterministic", "value": 5.0, "rtol": 1e-6}
    assert check_compare.compare_metric("a", "short_val_loss", entry, 5.0 + 4e-6, False).verdict == "ok"
    moved = check_compare.compare_metric("a", "short_val_loss", entry, 5.0 + 1e-5, False)
    assert moved.failed and moved.verdict == "FAIL changed" and moved.tolerance == "rel 1e-06"
    digest = {"kind": "digest", "value": "wd 0.1: 10 | wd 0: 16 #e003165cbca0"}
    assert not check_compare.compare_metric("a", "param_groups", digest, digest["value"], False).failed
    assert check_compare.compare_metric("a", "param_groups", digest, "wd 0.1: 26 #0123456789ab", False).failed
    table = check_compare.format_table([check_compare.compare_metric("a", "param_groups", digest, "x", False)])
    assert "wd 0.1: 10 | wd 0: 16 #e003165cbca0" in table and "FAIL changed" in table


def test_param_groups_digest_sees_weight_decay_on_biases(monkeypatch):
    from harness.training import optim

    spec = check_deterministic.short_spec("gpt2", TINY)
    before = check_deterministic.param_groups_digest(spec, 512)
    monkeypatch.setattr(optim, "decays", lambda module, leaf, parameter: True)
    after = check_deterministic.param_groups_digest(spec, 512)
    assert before.startswith("wd 0.1: 10 | wd 0: 18 #") and after.startswith("wd 0.1: 28 | wd 0: 0 #")


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one_and_a_lost_scheduler_fails(tmp_path, monkeypatch):
    from harness.runs import run_dir

    settings = check.CheckSettings(archs=("gpt1",), resume_arch="gpt1", text_data=None)
    with check_measure.workspace(tmp_path):
        straight = check_deterministic.deterministic_metrics("gpt1", settings, tmp_path / "short")
        pairs = check_deterministic.resume_pairs("gpt1", settings, tmp_path / "resume", straight)
        assert pairs and all(expected == now for expected, now in pairs.values()), pairs
        restore = run_dir.restore_training_state

        def forgets_scheduler(path, run_id, model, optimizer, scheduler, load_model=None):  # scheduler not loaded
            return restore(path, run_id, model, optimizer, SimpleNamespace(load_state_dict=lambda state: None),
                           load_model=load_model)

        monkeypatch.setattr(run_dir, "restore_training_state", forgets_scheduler)
        pairs = check_deterministic.resume_pairs("gpt1", settings, tmp_path / "resume-bug", straight)
    rows = [check_compare.equal_row("gpt1", name, *pair) for name, pair in pairs.items()]
    failed = {row.metric for row in rows if row.failed}
    assert {"resume.short_val_loss", "resume.train_loss_steps_differing"} <= failed


@pytest.mark.slow
def test_text_run_gates_the_split_and_the_tokenizer(tmp_path, monkeypatch, shared_file):
    from harness.check import text_run
    from harness.data import shard_prepare, tokenizer_choice

    shared_file("corpora/tinyshakespeare.txt")
    committed = check.load_baseline(COMMITTED)
    settings = check.CheckSettings.from_dict(committed["settings"])
    with check_measure.workspace(tmp_path / "a"):
        metrics = text_run.text_metrics(settings, tmp_path / "a" / "text")
    rows = check_compare.compare(committed, {"text": metrics})
    # the split, the tokenizer and the validation tokens do not depend on the machine
    assert not [row for row in rows if row.kind in ("exact", "digest") and row.failed]
    assert metrics["short_val_bpb"] > 0 and metrics["n_val_docs"] >= 1

    split = shard_prepare.is_validation  # a split rule that sends about twice as many documents to validation
    for module in (shard_prepare, tokenizer_choice):  # the shards and the BPE's training sample
        monkeypatch.setattr(module, "is_validation", lambda data, threshold: split(data, 2 * threshold))
    with check_measure.workspace(tmp_path / "b"):
        moved = text_run.text_metrics(settings, tmp_path / "b" / "text")
    failed = {row.metric for row in check_compare.compare(committed, {"text": moved}) if row.failed}
    assert {"n_train_docs", "n_val_docs", "tokenizer", "val_tokens", "short_val_bpb"} <= failed


@pytest.mark.parametrize("ci, passed", [("true", False), ("false", True)])
def test_missing_text_corpus_fails_only_in_ci(tmp_path, monkeypatch, ci, passed):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("CI", ci)
    result = check.run_check(COMMITTED, archs=["text"])
    assert result.passed is passed and not result.rows
    if passed:
        assert any("text run skipped" in note for note in result.notes)
    else:
        assert "CI=true" in result.errors["text"]
