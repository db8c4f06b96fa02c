"""Recall probes scored during training: in metrics.jsonl at every validation point, in the compact copy,
equal to lm-eval's harness_recall_<d> on the same weights, and out of the run id when not asked for."""

from __future__ import annotations

import json

import pytest

from harness.runs.spec import RunSpec


@pytest.fixture
def cache_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    """A nano gpt3 run on synthetic data with recall probes at distances 16 and 64 (8 steps, validation every 3)."""
    from harness.training.trainer import train

    spec = RunSpec(arch="gpt3", size="nano", budget_flops=3e10, eval_interval=3, train_probes=(16, 64), dtype="fp32",
                   device="cpu")
    return train(spec, tmp_path_factory.mktemp("results"), progress=False)


def test_run_ids_without_train_probes_are_unchanged():
    plain = RunSpec(arch="gpt2", size="nano", budget_flops=1e11)
    assert "train_probes" not in plain.identity()
    assert RunSpec(arch="gpt2", size="nano", budget_flops=1e11, train_probes=()).run_id() == plain.run_id()
    probed = RunSpec(arch="gpt2", size="nano", budget_flops=1e11, train_probes=(16, 64))
    assert probed.run_id() != plain.run_id() and probed.identity()["train_probes"] == (16, 64)
    assert RunSpec.from_dict(json.loads(json.dumps(probed.to_dict()))).run_id() == probed.run_id()


def test_train_probes_need_synthetic_data_and_valid_distances():
    with pytest.raises(ValueError, match="need synthetic data"):
        RunSpec(arch="gpt2", size="nano", data="some/corpus.txt", budget_flops=1e11, train_probes=(16,))
    with pytest.raises(ValueError, match="recall distances in tokens"):
        RunSpec(arch="gpt2", size="nano", budget_flops=1e11, train_probes=(2,))


def test_probes_land_at_every_validation_point_and_in_the_compact_copy(probed_run, tmp_path):
    from harness.runs.compact import write_compact

    lines = [json.loads(line) for line in (probed_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    validation = [line for line in lines if "val_loss" in line]
    assert len(validation) >= 2 and validation[-1]["step"] == lines[-1]["step"]
    for line in lines:
        has_probes = {"probe/recall_16/acc", "probe/recall_64/acc"} <= set(line)
        assert has_probes == ("val_loss" in line)
    for line in validation:
        assert all(0 <= line[f"probe/recall_{d}/acc"] <= 1 for d in (16, 64))
    final = probed_run.record["probe"]
    assert final["recall_16"]["acc"] == validation[-1]["probe/recall_16/acc"]  # the final values, same weights
    compact = write_compact(probed_run.run_dir, tmp_path / "compact")
    kept = [json.loads(line) for line in (compact / "metrics.jsonl").read_text().splitlines()]
    assert [line.get("probe/recall_64/acc") for line in kept if "val_loss" in line] == \
           [line["probe/recall_64/acc"] for line in validation]


def test_in_training_accuracy_equals_lm_eval_on_the_same_weights(probed_run, cache_tmp):
    from harness.evaluation import evaluate_run

    lines = [json.loads(line) for line in (probed_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    last = lines[-1]
    results = evaluate_run(probed_run.run_dir, tasks=["harness_recall_16", "harness_recall_64"], limit=100)
    for d in (16, 64):
        assert results[f"harness_recall_{d}"]["acc"]["value"] == pytest.approx(last[f"probe/recall_{d}/acc"], abs=1e-12)
        assert results[f"harness_recall_{d}"]["acc"]["n"] == 100


def test_every_item_and_greedy_token_is_lm_eval_s(probed_run, cache_tmp):
    """Item by item: the same context (left-truncated) and value as lm-eval's file, and lm-eval's scorer finds the
    token the in-training probe predicts greedy (so the accuracies agree however often the value is right)."""
    from harness.evaluation.lm import HarnessLM
    from harness.evaluation.probes import generator_for_record, write_probe_files
    from harness.evaluation.train_probes import TrainProbes

    lm = HarnessLM.from_run(str(probed_run.run_dir), packing=True)
    generator = generator_for_record(probed_run.record)
    probes = TrainProbes.build(generator, (16, 64), lm.max_length)
    files = write_probe_files(["harness_recall_16", "harness_recall_64"], generator, lm.tokenizer)
    predicted = probes.predictions(lm.model, lm._device)
    for d in (16, 64):
        docs = [json.loads(line) for line in files[f"harness_recall_{d}"].read_text().splitlines()][:100]
        expected = [(lm.tok_encode(doc["context"])[-lm.max_length:], lm.tok_encode(doc["target"])[0]) for doc in docs]
        assert probes.items[d] == expected
        windows = [(context, [token]) for (context, _), token in zip(expected, predicted[d])]
        assert all(greedy for _, greedy in lm.score_windows(windows))


def test_ragged_contexts_batched_by_length_predict_as_one_at_a_time():
    import torch

    from architectures import build_from_config, get
    from harness.data import SyntheticGenerator
    from harness.evaluation.train_probes import TrainProbes

    generator = SyntheticGenerator()
    torch.manual_seed(0)
    model = build_from_config(get("gpt3").config("mini", vocab_size=generator.vocab_size)).train()
    probes = TrainProbes.build(generator, (16,), model.config.context)
    contexts = [context for context, _ in probes.items[16]]
    assert len({len(c) for c in contexts}) > 1  # contexts of several lengths, none truncated at this context
    predicted = probes.predictions(model, "cpu")[16]
    assert model.training  # restored
    with torch.no_grad():
        model.eval()
        one_by_one = [int(model(torch.tensor([c])).logits[0, -1].argmax()) for c in contexts]
    assert predicted == one_by_one


def test_study_entry_and_command_line_take_train_probes():
    from harness.cli.run import parse_train_probes
    from harness.sweeps.compare import plan_sweep
    from harness.sweeps.entries import options_from_entry

    options = options_from_entry({"archs": ["gpt2"], "size": "nano", "budget": 1e11, "train_probes": [16, 64]})
    assert options.train_probes == (16, 64)
    assert all(spec.train_probes == (16, 64) for spec in plan_sweep(options).specs)
    assert parse_train_probes("16,64") == (16, 64) and parse_train_probes(None) == ()
    with pytest.raises(ValueError, match="recall distances"):
        options_from_entry({"archs": ["gpt2"], "size": "nano", "train_probes": ["x"]})
