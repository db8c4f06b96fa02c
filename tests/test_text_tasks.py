"""Generated text-to-text tasks (harness/data/text_tasks.py) and their lm-eval tasks
(harness_translate: bleu, chrf; harness_summarize: rouge1/2/L): held-out pairs, and metrics
through lm-eval equal to sacrebleu's and rouge-score's own results on known predictions."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from harness.data.pairs import encode_pairs, load_pairs
from harness.data.synthetic_config import SyntheticConfig
from harness.data.text_tasks import reorder_locally, translation_table
from harness.data.tokenizer import SyntheticTokenizer
from harness.evaluation import HarnessLM
from harness.evaluation.run import evaluate
from harness.evaluation.text_tasks import text_task_docs

from architectures import build


def words(text: str) -> list[int]:
    return [int(w[1:]) for w in text.split()]


@pytest.mark.parametrize("task", ["translate", "summarize"])
def test_validation_pairs_are_held_out_and_deterministic(task):
    train, val, info = load_pairs(f"task:{task}?n_train=3000&n_val=300")
    assert len(train) == 3000 and 0 < len(val) <= 300 and info["n_val_examples"] == len(val)
    assert not {p for p, _ in val} & {p for p, _ in train}
    assert load_pairs(f"task:{task}?n_train=3000&n_val=300") == (train, val, info)
    other_seed, _, _ = load_pairs(f"task:{task}?n_train=3000&n_val=300&seed=1")
    assert other_seed != train
    encode_pairs(train[:50], SyntheticTokenizer(SyntheticConfig().vocab_size), seq_len=64)  # fits as fine-tuning data


def test_translation_is_a_fixed_mapping_with_local_reordering():
    config = SyntheticConfig()
    table = translation_table(config)
    assert len(set(table.tolist())) == config.n_keys  # one-to-one
    assert all(config.value_base <= t < config.value_base + config.n_values for t in table)
    for prompt, completion in load_pairs("task:translate?n_train=200&n_val=10")[0]:
        source = [w - config.key_base for w in words(prompt)[1:-1]]
        assert words(completion) == reorder_locally([int(table[s]) for s in source])
    assert reorder_locally([1, 2, 3, 4, 5]) == [2, 1, 4, 3, 5]


def test_summaries_are_the_salient_words_in_order():
    config = SyntheticConfig()
    low, high = config.subject_base, config.subject_base + config.n_subjects
    for prompt, completion in load_pairs("task:summarize?n_train=200&n_val=10")[0]:
        assert words(completion) == [w for w in words(prompt) if low <= w < high]


class KnownOutputs(HarnessLM):
    """Generates a fixed text per context (the metrics' inputs are then known)."""

    def __init__(self, outputs: dict[str, str]):
        torch_model = build("gpt2", "nano", vocab_size=SyntheticConfig().vocab_size)
        super().__init__(torch_model, SyntheticTokenizer(SyntheticConfig().vocab_size), batch_size=8)
        self.outputs = outputs

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return [self.outputs[request.args[0]] for request in requests]


def partly_right(target: str, task: str, i: int) -> str:
    """A translation in source order (unigrams right, bigrams mostly wrong) or a summary missing a word."""
    ids = target.split()
    if task == "translate":
        return " ".join(reorder_locally(ids)[: len(ids) - i % 2])
    return " ".join(ids[: -1] if i % 3 else ids)


def test_lm_eval_bleu_and_chrf_equal_sacrebleus_own(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    docs = text_task_docs("harness_translate")[:40]
    predictions = [partly_right(d["target"], "translate", i) for i, d in enumerate(docs)]
    lm = KnownOutputs({d["context"]: p for d, p in zip(docs, predictions)})
    results = evaluate(lm, tasks="harness_translate", limit=40, bootstrap_iters=0)["results"]["harness_translate"]
    references = [d["target"] for d in docs]
    bleu = sacrebleu.corpus_bleu(predictions, [references]).score
    chrf = sacrebleu.corpus_chrf(predictions, [references]).score
    assert results["bleu,none"] == pytest.approx(bleu, abs=1e-9)
    assert results["chrf,none"] == pytest.approx(chrf, abs=1e-9)
    assert 0 < bleu < 100 and 0 < chrf < 100  # partial credit


def test_lm_eval_rouge_equals_rouge_scores_own(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    docs = text_task_docs("harness_summarize")[:30]
    predictions = [partly_right(d["target"], "summarize", i) for i, d in enumerate(docs)]
    lm = KnownOutputs({d["context"]: p for d, p in zip(docs, predictions)})
    results = evaluate(lm, tasks="harness_summarize", limit=30, bootstrap_iters=0)["results"]["harness_summarize"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(d["target"], p) for d, p in zip(docs, predictions)]
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = sum(s[name].fmeasure for s in scores) / len(scores)
        assert results[f"{name},none"] == pytest.approx(expected, abs=1e-12)
        assert 0.5 < expected < 1


def test_lm_eval_wmt16_from_local_task_data_is_scored_by_lm_evals_metrics(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    rows = [("ein kleines Haus", "a small house"), ("der Hund schläft", "the dog sleeps"),
            ("wir sehen den Fluss", "we see the river")]
    (tmp_path / "wmt16_de-en_test.jsonl").write_text(
        "".join(json.dumps({"translation": {"de": de, "en": en}}) + "\n" for de, en in rows))
    predictions = ["a small home", "the dog sleeps", "we see a river"]
    outputs = {f"German phrase: {de}\nEnglish phrase:": p for (de, _), p in zip(rows, predictions)}
    results = evaluate(KnownOutputs(outputs), tasks="wmt16-de-en", task_data=tmp_path, bootstrap_iters=0)
    scores = results["results"]["wmt16-de-en"]
    references = [en for _, en in rows]
    assert scores["bleu,none"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score, abs=1e-9)
    assert scores["chrf,none"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score, abs=1e-9)


def test_eval_writes_bleu_chrf_and_rouge_with_the_lm_eval_version_into_the_record(tmp_path, monkeypatch):
    import json
    from importlib.metadata import version

    import torch

    from harness.cli import main as cli_main
    from harness.runs.records import load_record, write_record

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    config = SyntheticConfig()
    torch.manual_seed(0)
    model = build("gpt2", "nano", vocab_size=config.vocab_size)
    run_dir = tmp_path / "run-gpt2"
    run_dir.mkdir()
    torch.save({"model": model.state_dict(), "config": model.config.to_dict(), "step": 0}, run_dir / "checkpoint.pt")
    SyntheticTokenizer(config.vocab_size).save(run_dir / "tokenizer")
    data = {"kind": "synthetic", "synthetic_config": config.to_dict()}
    write_record(run_dir, {"status": "ok", "run_id": run_dir.name, "arch": "gpt2", "size": "nano", "data": data})
    code = cli_main(["eval", "--run", str(run_dir), "--tasks", "harness_translate,harness_summarize", "--limit", "4"])
    assert code == 0
    record = load_record(run_dir)
    assert set(record["evaluation"]["harness_translate"]) == {"bleu", "chrf"}
    assert set(record["evaluation"]["harness_summarize"]) == {"rouge1", "rouge2", "rougeL"}
    assert record["lm_eval_version"] == version("lm_eval")
    (output,) = (run_dir / "lm_eval_results").glob("*harness_translate*.json")  # one file per eval call
    assert json.loads(output.read_text())["results"]["harness_translate"]


def test_adaptation_on_a_generated_text_task_scores_bleu_before_and_after(tmp_path, monkeypatch):
    from harness.evaluation.text_tasks import text_task_for_data
    from harness.runs.records import load_record
    from harness.runs.spec import RunSpec
    from harness.sweeps.adaptation import AdaptationOptions, run_adaptation
    from harness.training.trainer import train

    assert text_task_for_data("task:translate?n_train=5") == "harness_translate"
    assert text_task_for_data("task:summarize") == "harness_summarize"
    assert text_task_for_data("task:facts") is None and text_task_for_data("data.jsonl") is None
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    parent = train(RunSpec(arch="gpt2", size="nano", data="synthetic?n_train=50000&n_val=5000", budget_flops=3e9),
                   tmp_path, progress=False).run_dir
    options = AdaptationOptions(data="task:translate?n_train=300&n_val=20", methods=["full"], budget_flops=3e9)
    outcome = run_adaptation([parent.name], options, tmp_path, log=lambda message: None)
    child = load_record(tmp_path / outcome.run_ids[0])
    assert set(child["evaluation"]["harness_translate"]) == {"bleu", "chrf"}
    assert set(load_record(parent)["evaluation"]["harness_translate"]) == {"bleu", "chrf"}
