"""The evaluation layer: the lm-eval model's numbers, generation, probes, tasks, runs and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from architectures import build
from harness.evaluation import HarnessLM, default_tasks, evaluate, evaluate_run
from harness.evaluation.tasks import parse_task_names
from harness.runs.records import load_record, write_record
from harness.runs.run_dir import load_run_model

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")


class ByteTokenizer:
    """Stand-in tokenizer: id = byte value, end-of-text 256; decodes one character per byte."""

    name = "bytes"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("latin-1")


def instance(kind: str, args: tuple):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def nano(arch: str = "gpt2", vocab_size: int = 257, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(arch, size="nano", vocab_size=vocab_size).eval()


def random_tokens(n: int, seed: int, high: int = 256) -> list[int]:
    return torch.randint(0, high, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def reference_nll(model, sequence: list[int], first_scored: int) -> tuple[float, int]:
    """Summed NLL of sequence[first_scored:], each token given at most `context` previous tokens,
    in disjoint chunks of `context` predictions, computed by the model's own loss (targets)."""
    L = model.config.context
    total, n_scored = 0.0, 0
    start = first_scored
    while start < len(sequence):
        end = min(start + L, len(sequence))
        lo = max(0, end - 1 - L)
        x = torch.tensor([sequence[lo : end - 1]])
        y = torch.tensor([sequence[lo + 1 : end]])
        y[0, : start - (lo + 1)] = -100
        with torch.no_grad():
            loss = model(x, targets=y).lm_loss
        total += float(loss) * (end - start)
        n_scored += end - start
        start = end
    return total, n_scored


# ---- loglikelihood --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_loglikelihood_equals_forward_log_probs(arch):
    model = nano(arch)
    lm = HarnessLM(model, ByteTokenizer(), batch_size=4)
    L = model.config.context
    cases = [
        (random_tokens(10, 1), random_tokens(3, 2)),  # short
        (random_tokens(L - 2, 3), random_tokens(6, 4)),  # crosses the context limit by 4
        (random_tokens(3 * L, 5), random_tokens(L, 6)),  # long context, continuation fills the context
        ([lm.eot_token_id], random_tokens(1, 7)),
    ]
    shared = random_tokens(40, 11)  # choices of one question: the context runs once, through the cache
    cases += [(shared, random_tokens(n, 12 + n)) for n in (1, 3, 7)]
    cases += [(shared + [5] * 20, random_tokens(n, 12 + n)) for n in (2, 6)]  # shared, one crosses the limit
    results = lm._loglikelihood_tokens([(None, c, t) for c, t in cases], disable_tqdm=True)
    for (context, continuation), (logprob, _) in zip(cases, results):
        full = (context + continuation)[-(L + 1) :]
        with torch.no_grad():
            logits = model(torch.tensor([full[:-1]])).logits[0]
        log_probs = torch.log_softmax(logits.double(), dim=-1)[-len(continuation) :]
        expected = float(log_probs.gather(-1, torch.tensor(continuation)[:, None]).sum())
        assert logprob == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_loglikelihood_continuation_longer_than_context():
    model = nano("gpt3")
    lm = HarnessLM(model, ByteTokenizer(), batch_size=3)
    L = model.config.context
    context, continuation = random_tokens(20, 8), random_tokens(2 * L + 5, 9)
    (logprob, _), = lm._loglikelihood_tokens([(None, context, continuation)], disable_tqdm=True)
    nll, n = reference_nll(model, [context[-1]] + continuation, first_scored=1)
    assert n == len(continuation)
    assert -logprob == pytest.approx(nll, rel=1e-4)


def test_is_greedy():
    model = nano("gpt2")
    lm = HarnessLM(model, ByteTokenizer())
    L = model.config.context
    context = random_tokens(L - 3, 10)  # the greedy continuation crosses the context limit
    sequence = list(context)
    with torch.no_grad():
        for _ in range(6):
            sequence.append(int(model(torch.tensor([sequence[-L:]])).logits[0, -1].argmax()))
    greedy = sequence[len(context) :]
    wrong = greedy[:-1] + [(greedy[-1] + 1) % 256]
    results = lm._loglikelihood_tokens([(None, context, greedy), (None, context, wrong)], disable_tqdm=True)
    assert [g for _, g in results] == [True, False]
    assert results[0][0] > results[1][0]
    assert lm._loglikelihood_tokens([(None, context, [])], disable_tqdm=True) == [(0.0, True)]


def test_loglikelihood_from_strings_uses_lm_eval_encoding():
    lm = HarnessLM(nano(), ByteTokenizer())
    requests = [instance("loglikelihood", ("The cat sat on the ", "mat")), instance("loglikelihood", ("", "hello"))]
    by_string = lm.loglikelihood(requests, disable_tqdm=True)
    by_tokens = lm._loglikelihood_tokens(
        [(None, list(b"The cat sat on the"), list(b" mat")), (None, [256], list(b"hello"))], disable_tqdm=True
    )
    assert [greedy for _, greedy in by_string] == [greedy for _, greedy in by_tokens]
    assert [logprob for logprob, _ in by_string] == pytest.approx([logprob for logprob, _ in by_tokens])


# ---- rolling ----------------------------------------------------------------------------------------
def test_loglikelihood_rolling_equals_model_nll_and_batching_changes_nothing():
    model = nano("gpt3")
    L = model.config.context
    docs = [bytes(random_tokens(n, 20 + n)).decode("latin-1") for n in (7, L - 1, L, L + 1, int(3.5 * L), 2 * L)]
    docs = ["".join(c if ord(c) < 128 else "x" for c in d) for d in docs]  # one byte per character
    requests = [instance("loglikelihood_rolling", (d,)) for d in docs]
    one = HarnessLM(model, ByteTokenizer(), batch_size=1).loglikelihood_rolling(requests, disable_tqdm=True)
    eight = HarnessLM(model, ByteTokenizer(), batch_size=8).loglikelihood_rolling(requests, disable_tqdm=True)
    for doc, a, b in zip(docs, one, eight):
        nll, n = reference_nll(model, [256] + list(doc.encode()), first_scored=1)
        assert n == len(doc)
        assert -a == pytest.approx(nll, rel=1e-4)
        assert a == pytest.approx(b, rel=1e-5, abs=1e-4)


def test_loglikelihood_batching_and_padding_change_nothing():
    model = nano("gpt4")
    cases = [(random_tokens(5 + 7 * i, 30 + i), random_tokens(1 + i % 4, 40 + i)) for i in range(10)]
    cases += [(random_tokens(20, 60), random_tokens(1 + i % 3, 70 + i)) for i in range(11)]  # shared contexts
    requests = [(None, c, t) for c, t in cases]
    one = HarnessLM(model, ByteTokenizer(), batch_size=1)._loglikelihood_tokens(requests, disable_tqdm=True)
    eight = HarnessLM(model, ByteTokenizer(), batch_size=8)._loglikelihood_tokens(requests, disable_tqdm=True)
    assert [g for _, g in one] == [g for _, g in eight]
    assert [lp for lp, _ in one] == pytest.approx([lp for lp, _ in eight], rel=1e-5, abs=1e-4)


# ---- generation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_generation_equals_recomputation(arch):
    model = nano(arch, seed=3)
    lm = HarnessLM(model, ByteTokenizer())
    prompts = [random_tokens(5, 50), random_tokens(5, 51)]
    # 45 new tokens run past the 32-token band of gpt3/gpt4
    cached = lm.greedy_generate(prompts, 45, use_cache=True)
    recomputed = lm.greedy_generate(prompts, 45, use_cache=False)
    assert cached == recomputed
    assert all(len(row) == 45 for row in cached)  # no eot in this random model's greedy path
    longest = lm.greedy_generate(prompts, 200)  # capped by the context: 64 - 5 + 1 new tokens
    assert longest[0][:45] == cached[0] and len(longest[0]) == 60


def test_generate_until_stop_sequences_and_max_gen_toks():
    model = nano("gpt2", seed=4)
    lm = HarnessLM(model, ByteTokenizer(), batch_size=4)
    context = "abcdefghij"
    full = lm.tok_decode(lm.greedy_generate([list(context.encode())], 20)[0])
    stop = full[7:9]
    requests = [
        instance("generate_until", (context, {"until": [stop], "max_gen_toks": 20})),
        instance("generate_until", (context, {"until": [], "max_gen_toks": 5})),
        instance("generate_until", ("0123456789", {"until": [], "max_gen_toks": 5})),  # same length: one batch
        instance("generate_until", ("xyz", {"until": [], "max_gen_toks": 5})),
    ]
    out = lm.generate_until(requests, disable_tqdm=True)
    assert out[0] == full.split(stop)[0]
    assert out[1] == full[:5]
    assert len(out[2]) == 5 and len(out[3]) == 5


# ---- probes -------------------------------------------------------------------------------------
def synthetic_run(tmp_path: Path, arch: str = "gpt3", config=None, model=None) -> Path:
    """A run directory as `harness run` writes one, for a nano model on synthetic data."""
    from harness.data import SyntheticConfig, SyntheticTokenizer

    config = config or SyntheticConfig()
    model = model or nano(arch, vocab_size=config.vocab_size)
    run_dir = tmp_path / f"run-{arch}"
    run_dir.mkdir()
    torch.save({"model": model.state_dict(), "config": model.config.to_dict(), "step": 0}, run_dir / "checkpoint.pt")
    SyntheticTokenizer(config.vocab_size).save(run_dir / "tokenizer")
    data = {"kind": "synthetic", "synthetic_config": config.to_dict()}
    write_record(run_dir, {"status": "ok", "run_id": run_dir.name, "arch": arch, "size": "nano", "data": data})
    return run_dir


@pytest.fixture
def cache_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_probes_fail_for_a_model_trained_only_on_markov_text(cache_tmp):
    """Recall beyond the band is at chance for a model that never saw a recall block."""
    from harness.data import SyntheticConfig, SyntheticGenerator, SyntheticTokenizer

    probe_generator = SyntheticGenerator()
    markov_only = SyntheticGenerator(
        SyntheticConfig(weight_recall_def=0, weight_recall_query=0, weight_copy=0, weight_facts=0)
    )
    assert markov_only.vocab_size == probe_generator.vocab_size  # same vocabulary and markov chain
    tokens = torch.from_numpy(markov_only.generate(40_000, seed=1)[0].astype("int64"))
    model = nano("gpt3", vocab_size=probe_generator.vocab_size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = torch.Generator().manual_seed(0)
    T = model.config.context
    for _ in range(60):
        starts = torch.randint(0, len(tokens) - T - 1, (16,), generator=rng)
        batch = torch.stack([tokens[s : s + T + 1] for s in starts.tolist()])
        loss = model(batch[:, :-1], targets=batch[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.7 * math.log(probe_generator.vocab_size)  # it learned the markov text

    tokenizer = SyntheticTokenizer(probe_generator.vocab_size)
    results = evaluate(model, tokenizer, "harness_recall_48", limit=100, generator=probe_generator)
    accuracy = results["results"]["harness_recall_48"]["acc,none"]
    chance = 1 / probe_generator.config.n_values
    assert accuracy <= chance + 0.05


def test_probe_data_is_what_the_task_says(cache_tmp):
    from harness.data import SyntheticGenerator, SyntheticTokenizer
    from harness.evaluation.probes import RECALL_DISTANCES, probe_task_names, write_probe_files

    generator = SyntheticGenerator()
    tokenizer = SyntheticTokenizer(generator.vocab_size)
    files = write_probe_files(probe_task_names(), generator, tokenizer)
    assert min(RECALL_DISTANCES) < 32 < max(RECALL_DISTANCES[1:])  # inside and beyond the presets' band
    for distance in RECALL_DISTANCES:
        docs = [json.loads(line) for line in files[f"harness_recall_{distance}"].read_text().splitlines()]
        assert len(docs) >= 100
        for doc in docs[:20]:
            context, (value,) = tokenizer.encode(doc["context"]), tokenizer.encode(doc["target"])
            key = context[-1]
            definition = context.index(key)  # keys are distinct within a document
            assert context[definition + 1] == value
            assert len(context) - 1 - (definition + 1) - 1 == distance
    for line in files["harness_copy"].read_text().splitlines()[:20]:
        doc = json.loads(line)
        context, target = tokenizer.encode(doc["context"]), tokenizer.encode(doc["target"])
        assert context[-len(target) - 1 : -1] == target  # the span, then the COPY marker
    heldout = [json.loads(line) for line in files["harness_heldout"].read_text().splitlines()]
    assert all(tokenizer.encode(doc["text"])[-1] == tokenizer.eot_id for doc in heldout)
    assert sum(doc["n_tokens"] for doc in heldout) > 8000


def test_eval_command_on_a_synthetic_run_writes_results_and_record(tmp_path, cache_tmp):
    from harness.cli import main

    run_dir = synthetic_run(tmp_path)
    assert main(["eval", "--run", str(run_dir), "--limit", "3", "--batch-size", "4"]) == 0
    (results_file,) = (run_dir / "lm_eval_results").glob("*_0shot_limit3_harness_*.json")
    results = json.loads(results_file.read_text())
    evaluation = load_record(run_dir)["evaluation"]
    assert sorted(evaluation) == sorted(default_tasks("synthetic")) == sorted(results["results"])
    for task, metrics in evaluation.items():
        for entry in metrics.values():
            assert set(entry) == {"value", "stderr", "n", "version"} and entry["n"] == 3
    assert 0 <= evaluation["harness_recall_128"]["acc"]["value"] <= 1
    assert evaluation["harness_copy"]["exact_match"]["stderr"] is not None
    assert evaluation["harness_heldout"]["nll_per_token"]["value"] > evaluation["harness_heldout"]["excess_nll_per_token"]["value"]
    # probe data is cached and deterministic
    files = sorted((cache_tmp / "probes").glob("*/*.jsonl"))
    assert len(files) == 7
    before = [f.read_text() for f in files]
    evaluate_run(run_dir, tasks="harness_facts", limit=4)
    assert [f.read_text() for f in files] == before
    assert load_record(run_dir)["evaluation"]["harness_facts"]["acc"]["n"] == 4  # merged, others kept
    assert "harness_copy" in load_record(run_dir)["evaluation"]
    assert load_record(run_dir)["evaluation_kept_aside"]["harness_facts"]["3"]["acc"]["n"] == 3
    assert len(list((run_dir / "lm_eval_results").glob("*.json"))) == 2  # lm-eval's files accumulate


def test_a_limited_eval_never_replaces_a_full_one(tmp_path, cache_tmp, capsys):
    """A full evaluation, then `--limit 5`: the record keeps the full result and the limited one beside it."""
    run_dir = synthetic_run(tmp_path)
    full = evaluate_run(run_dir, tasks="harness_facts")["harness_facts"]["acc"]
    assert full["n"] > 5
    limited = evaluate_run(run_dir, tasks="harness_facts", limit=5)["harness_facts"]["acc"]
    assert limited["n"] == 5
    note = capsys.readouterr().err
    assert "n = 5 result is smaller than the n = " in note and "kept aside" in note
    record = load_record(run_dir)
    assert record["evaluation"]["harness_facts"]["acc"] == full
    assert record["evaluation_kept_aside"]["harness_facts"]["5"]["acc"] == limited
    files = sorted(path.name for path in (run_dir / "lm_eval_results").glob("*.json"))
    assert len(files) == 2 and "_0shot_all_" in files[0] and "_0shot_limit5_" in files[1]
    # a larger n later takes the record's place, and the full one is not lost either way
    evaluate_run(run_dir, tasks="harness_facts", limit=6)
    record = load_record(run_dir)
    assert record["evaluation"]["harness_facts"]["acc"] == full
    assert set(record["evaluation_kept_aside"]["harness_facts"]) == {"5", "6"}


def test_harness_model_is_registered_with_lm_eval(tmp_path):
    from lm_eval.api.registry import get_model

    run_dir = synthetic_run(tmp_path, arch="gpt4")
    lm = get_model("harness").create_from_arg_string(f"run_dir={run_dir}", {"batch_size": 2})
    assert isinstance(lm, HarnessLM) and lm.batch_size == 2 and lm.max_length == 64
    model, tokenizer, record = load_run_model(run_dir)
    assert record["arch"] == "gpt4" and tokenizer.vocab_size == model.config.vocab_size


def test_misspelt_model_args_are_refused_and_lm_eval_own_args_accepted():
    from lm_eval.api.registry import get_model

    model = nano()
    with pytest.raises(ValueError, match=r"unknown HarnessLM argument\(s\) batchsize; accepted: model, tokenizer, run_dir, batch_size"):
        HarnessLM(model, ByteTokenizer(), batchsize=4)
    # what simple_evaluate adds to every model's arguments, and --trust_remote_code
    lm = get_model("harness").create_from_arg_obj(
        {"model": model, "tokenizer": ByteTokenizer(), "trust_remote_code": True},
        {"batch_size": 2, "max_batch_size": 8, "device": "cpu"},
    )
    assert lm.batch_size == 2


# ---- standard tasks ------------------------------------------------------------------------------
@pytest.fixture
def lm_eval_data(shared_file) -> Path:
    return shared_file("lm_eval/piqa_validation.jsonl").parent


def text_run(tmp_path: Path) -> Path:
    from harness.data import train_bpe

    text = (Path(__file__).read_text() + " The quick brown fox jumps over the lazy dog.\n") * 3
    tokenizer = train_bpe([text], vocab_size=300, cache_dir=tmp_path / "tokenizers")
    model = nano("gpt2", vocab_size=tokenizer.vocab_size)
    run_dir = tmp_path / "text-run"
    run_dir.mkdir()
    torch.save({"model": model.state_dict(), "config": model.config.to_dict()}, run_dir / "checkpoint.pt")
    tokenizer.save(run_dir / "tokenizer")
    write_record(run_dir, {"status": "ok", "run_id": "text-run", "data": {"kind": "text"}})
    return run_dir


def test_standard_tasks_load_offline_from_local_data(tmp_path, lm_eval_data, capsys):
    from harness.cli import main

    run_dir = text_run(tmp_path)
    tasks = "piqa,arc_easy,lambada_openai,wikitext"
    code = main(["eval", "--run", str(run_dir), "--tasks", tasks, "--limit", "5", "--task-data", str(lm_eval_data)])
    assert code == 0
    evaluation = load_record(run_dir)["evaluation"]
    assert sorted(evaluation) == sorted(tasks.split(","))
    for task in ("piqa", "arc_easy", "lambada_openai"):
        assert evaluation[task]["acc"]["n"] == 5 and evaluation[task]["acc"]["stderr"] is not None
    assert evaluation["lambada_openai"]["perplexity"]["stderr"] is not None
    assert evaluation["wikitext"]["bits_per_byte"]["value"] > 0  # lm-eval computes no stderr here
    assert evaluation["wikitext"]["word_perplexity"]["version"] == 2.0
    assert "piqa" in capsys.readouterr().out


def test_wikitext_bits_per_byte_agree_with_the_harness_own_count(tmp_path, lm_eval_data):
    """lm-eval's wikitext bits/byte = the model's own summed token NLL / (ln 2 · UTF-8 bytes)
    over the same documents, each scored as [end-of-text] + tokens in disjoint context-length
    chunks — the way the trainer computes val_bpb.

    lm-eval scores the detokenized page but divides by the bytes of the *raw* page (its
    convention, for comparability with published numbers); the harness's own count over the
    detokenized bytes is therefore higher by the raw/detokenized byte ratio."""
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    model, tokenizer, _ = load_run_model(text_run(tmp_path))
    n_docs = 3
    results = evaluate(model, tokenizer, ["wikitext"], limit=n_docs, task_data=lm_eval_data)
    lm_eval_bpb = results["results"]["wikitext"]["bits_per_byte,none"]

    lines = (lm_eval_data / "wikitext2_document_level_test.jsonl").read_text().splitlines()[:n_docs]
    total_nll, raw_bytes, scored_bytes = 0.0, 0, 0
    for line in lines:
        doc = json.loads(line)
        text = wikitext_detokenizer(doc)
        nll, _ = reference_nll(model, [tokenizer.eot_id] + tokenizer.encode(text), first_scored=1)
        total_nll += nll
        raw_bytes += len(doc["page"].encode("utf-8"))
        scored_bytes += len(text.encode("utf-8"))
    assert lm_eval_bpb == pytest.approx(total_nll / (math.log(2) * raw_bytes), rel=1e-4)
    assert raw_bytes > scored_bytes  # detokenizing removes spaces: per scored byte the figure is higher


# ---- bad input -----------------------------------------------------------------------------------
def one_sentence(error: BaseException) -> str:
    message = str(error.args[0])
    assert "\n" not in message and message.endswith((".", "?")), message
    return message


def test_unknown_task_lists_close_matches():
    with pytest.raises(ValueError) as error:
        evaluate(nano(), ByteTokenizer(), "piqaa,harness_recal_16")
    assert "piqa" in one_sentence(error.value)
    with pytest.raises(ValueError) as error:
        evaluate(nano(), ByteTokenizer(), "hellaswg")
    suggestions = str(error.value).split("did you mean ")[1].rstrip("?").split(", ")
    assert "hellaswag" in suggestions and len(suggestions) == len(set(suggestions))  # each named once
    with pytest.raises(ValueError) as error:
        evaluate(nano(), ByteTokenizer(), "harness_recal_16")
    assert "harness_recall_16" in one_sentence(error.value)
    with pytest.raises(ValueError):
        parse_task_names(" , ")


def test_task_without_offline_data_says_how_to_supply_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(ValueError) as error:
        evaluate(nano(), ByteTokenizer(), "piqa", limit=2)
    assert "--task-data" in one_sentence(error.value)
    with pytest.raises(FileNotFoundError) as error:
        evaluate(nano(), ByteTokenizer(), "piqa", limit=2, task_data=tmp_path)
    assert "piqa_validation.jsonl" in one_sentence(error.value)


def test_run_without_checkpoint_and_bad_limit(tmp_path, capsys):
    from harness.cli import main

    run_dir = tmp_path / "empty-run"
    run_dir.mkdir()
    write_record(run_dir, {"status": "ok", "run_id": "empty-run"})
    with pytest.raises(FileNotFoundError) as error:
        evaluate_run(run_dir)
    assert "checkpoint.pt" in one_sentence(error.value)
    assert main(["eval", "--run", str(run_dir)]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        evaluate_run(tmp_path / "no-such-run")
    for limit in (0, -3):
        with pytest.raises(ValueError) as error:
            evaluate_run(run_dir, limit=limit)
        assert "limit" in one_sentence(error.value)
    assert main(["eval", "--run", str(run_dir), "--limit", "0"]) == 2
    assert "limit" in capsys.readouterr().err


def test_probes_need_a_synthetic_run_and_text_tasks_a_text_run(tmp_path):
    from harness.evaluation.probes import generator_for_record

    with pytest.raises(ValueError) as error:
        evaluate_run(synthetic_run(tmp_path), tasks="harness_copy,piqa")
    assert "synthetic" in one_sentence(error.value)

    with pytest.raises(ValueError) as error:
        generator_for_record({"data": {"kind": "text"}})
    assert "synthetic" in one_sentence(error.value)
    with pytest.raises(ValueError) as error:
        evaluate(nano(), ByteTokenizer(), "harness_copy")
    assert "generator" in one_sentence(error.value)


def test_merging_keeps_the_larger_n_and_sets_the_other_aside():
    from harness.evaluation.kept import merge_evaluations

    def result(n, value=0.5):
        return {"acc": {"value": value, "stderr": 0.1, "n": n, "version": 1}}

    full, limited, again = result(200, 0.8), result(5, 0.2), result(200, 0.81)
    merged = merge_evaluations({"facts": full, "copy": result(50)}, None, {"facts": limited})
    assert merged.evaluation == {"facts": full, "copy": result(50)} and merged.kept_aside == {"facts": {"5": limited}}
    assert len(merged.notes) == 1 and "smaller than the n = 200" in merged.notes[0]
    merged = merge_evaluations(merged.evaluation, merged.kept_aside, {"facts": again})  # equal n: the newer
    assert merged.evaluation["facts"] == again and merged.kept_aside == {"facts": {"5": limited}} and not merged.notes
    merged = merge_evaluations({"facts": limited}, None, {"facts": full})  # larger later: takes the place
    assert merged.evaluation["facts"] == full and merged.kept_aside == {"facts": {"5": limited}}
    assert "replaces the n = 5 one" in merged.notes[0]
