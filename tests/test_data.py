"""Data layer: synthetic generator and its entropy floors, probes, tokenizers, text and
Hugging Face sources, prepare_data caching, batches, baselines."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from harness.data import (
    SEGMENT_NAMES,
    SyntheticConfig,
    SyntheticGenerator,
    SyntheticTokenizer,
    get_batch,
    get_tokenizer,
    load_tokenizer,
    prepare_data,
    train_bpe,
    unigram_cross_entropy,
)
from harness.data import tokenizer as tokenizer_module
from harness.data.hf import iter_hf_documents, parse_hf_target
from harness.data.split import is_validation, split_threshold
from harness.data.synthetic_config import (
    COPY_TOKEN,
    DEF_TOKEN,
    EOT,
    FACT_TOKEN,
    MARKOV_TOKEN,
    QUERY_TOKEN,
    SPAN_TOKEN,
)
from harness.data.synthetic_generator import binary_entropy, entropy
from harness.data.text import read_text_documents

SMALL_SYNTHETIC = "synthetic?n_train=20000&n_val=5000"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Nothing a test prepares lands in the checkout's cache."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def gen():
    return SyntheticGenerator()


# --------------------------------------------------------------------------- synthetic corpus
def test_generate_is_deterministic_and_prefix_stable(gen):
    tokens, segments, floors = gen.generate(5000, seed=1)
    again = gen.generate(5000, seed=1)
    for a, b in zip((tokens, segments, floors), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(tokens, gen.generate(5000, seed=2)[0])
    np.testing.assert_array_equal(gen.generate(3000, seed=1)[0], tokens[:3000])
    assert tokens.dtype == np.uint16 and segments.dtype == np.int8 and floors.dtype == np.float32
    assert tokens.max() < gen.vocab_size == 512
    assert set(np.unique(segments)) == set(range(len(SEGMENT_NAMES)))
    assert (tokens == EOT).sum() > 3  # several documents


def test_markov_only_floors_by_hand():
    """Only markov blocks: floors follow from the chain's probabilities alone."""
    config = SyntheticConfig(
        weight_recall_def=0, weight_recall_query=0, weight_copy=0, weight_facts=0,
        weight_markov=1, weight_end=1, markov_mean_len=4,
    )
    g = SyntheticGenerator(config)
    tokens, segments, floors = g.generate(3000, seed=0)
    q, base = 0.25, config.markov_base
    assert (segments == 0).all()
    assert math.isclose(entropy([0.5, 0.25, 0.25]), 1.5 * math.log(2))
    for i, token in enumerate(tokens.tolist()):
        previous = int(tokens[i - 1]) if i else EOT
        if previous == EOT:  # a document starts: its first block must be markov
            expected = 0.0
        elif previous == MARKOV_TOKEN:  # the walk's uniform start state
            expected = math.log(config.n_markov)
        else:  # after state s: successor (1 - q) or boundary {markov, end} (q)
            s = previous - base
            row_entropy = -(g.markov_probs[s] * np.log(g.markov_probs[s])).sum()
            expected = binary_entropy(q) + (1 - q) * row_entropy + q * math.log(2)
        assert floors[i] == pytest.approx(expected, abs=1e-5), i


def oracle(g: SyntheticGenerator, tokens) -> tuple[list[float], list[float]]:
    """Each token's floor and surprisal, re-derived from the tokens alone (the true model)."""
    c, q = g.config, g.stop_prob
    weights = {MARKOV_TOKEN: c.weight_markov, DEF_TOKEN: c.weight_recall_def, QUERY_TOKEN: c.weight_recall_query,
               SPAN_TOKEN: c.weight_copy, FACT_TOKEN: c.weight_facts, EOT: c.weight_end}
    value_of, n_blocks, state = {}, 0, ("boundary",)

    def boundary() -> dict[int, float]:
        w = dict(weights)
        w[DEF_TOKEN] *= len(value_of) + c.recall_pairs <= c.n_keys
        w[QUERY_TOKEN] *= bool(value_of)
        w[EOT] *= n_blocks > 0
        return {t: v / sum(w.values()) for t, v in w.items() if v > 0}

    def uniform(ids) -> dict[int, float]:
        ids = list(ids)
        return {i: 1 / len(ids) for i in ids}

    floors, surprisals = [], []
    for token in map(int, tokens):
        kind = state[0]
        if kind == "boundary":
            dist = boundary()
        elif kind == "walk":
            s = state[1]
            dist = {t: q * p for t, p in boundary().items()}
            dist.update({c.markov_base + n: (1 - q) * p for n, p in zip(g.markov_next[s], g.markov_probs[s])})
        elif kind == "walk_start":
            dist = uniform(range(c.markov_base, c.markov_base + c.n_markov))
        elif kind == "def_key" and c.bound_pairs:
            dist = uniform(c.pair_token(k, v) for k in range(c.n_keys) if k not in value_of for v in range(c.n_values))
        elif kind == "def_key":
            dist = uniform(c.key_base + k for k in range(c.n_keys) if k not in value_of)
        elif kind == "def_value":
            dist = uniform(range(c.value_base, c.value_base + c.n_values))
        elif kind == "query_key":
            dist = uniform(c.key_base + k for k in value_of)
        elif kind == "query_value":
            dist = {c.value_base + value_of[state[1]]: 1.0}
        elif kind == "span":
            m = len(state[1])
            h = 0.0 if m < c.copy_min_len else 1 / (c.copy_max_len - m + 1)
            dist = {t: (1 - h) / c.n_markov for t in range(c.markov_base, c.markov_base + c.n_markov)}
            dist[COPY_TOKEN] = h
        elif kind == "copy":
            dist = {state[1][state[2]]: 1.0}
        elif kind == "subject":
            dist = {c.subject_base + s: p for s, p in enumerate(g.subject_probs)}
        else:  # object
            dist = {c.object_base + int(g.fact_objects[state[1]]): 1.0}
        floors.append(entropy(list(dist.values())))
        surprisals.append(-math.log(dist.get(token, 0.0)) if dist.get(token, 0.0) > 0 else math.inf)

        # Advance the state with the token seen.
        if kind in ("boundary", "walk") and not c.markov_base <= token < c.key_base:
            n_blocks += 1
            if token == EOT:
                value_of, n_blocks = {}, 0
            state = {EOT: ("boundary",), MARKOV_TOKEN: ("walk_start",), DEF_TOKEN: ("def_key", c.recall_pairs),
                     QUERY_TOKEN: ("query_key",), SPAN_TOKEN: ("span", []), FACT_TOKEN: ("subject", c.facts_per_block)}[token]
        elif kind in ("walk", "walk_start"):
            state = ("walk", token - c.markov_base)
        elif kind == "def_key" and c.bound_pairs:
            key, value = divmod(token - c.pair_base, c.n_values)
            value_of[key] = value
            state = ("def_key", state[1] - 1) if state[1] > 1 else ("boundary",)
        elif kind == "def_key":
            state = ("def_value", token - c.key_base, state[1])
        elif kind == "def_value":
            value_of[state[1]] = token - c.value_base
            state = ("def_key", state[2] - 1) if state[2] > 1 else ("boundary",)
        elif kind == "query_key":
            state = ("query_value", token - c.key_base)
        elif kind == "query_value":
            state = ("boundary",)
        elif kind == "span":
            state = ("copy", state[1], 0) if token == COPY_TOKEN else ("span", state[1] + [token])
        elif kind == "copy":
            state = ("copy", state[1], state[2] + 1) if state[2] + 1 < len(state[1]) else ("boundary",)
        elif kind == "subject":
            state = ("object", token - c.subject_base, state[1])
        else:
            state = ("subject", state[2] - 1) if state[2] > 1 else ("boundary",)
    return floors, surprisals


BOUND = SyntheticConfig(n_keys=16, n_values=16, recall_pairs=4, bound_pairs=True, weight_recall_query=0.6)


@pytest.mark.parametrize("config", [None, BOUND], ids=["key-value", "bound-pairs"])
def test_floors_match_an_independent_oracle(gen, config):
    """The floors equal the entropy of the true next-token distribution, token by token."""
    gen = SyntheticGenerator(config) if config else gen
    tokens, _, floors = gen.generate(30000, seed=7)
    expected, surprisals = oracle(gen, tokens)
    np.testing.assert_allclose(floors, expected, atol=1e-5)
    assert np.isfinite(surprisals).all()  # every token is possible under the true process
    # The floor is the expected surprisal of the true model.
    assert abs(np.mean(surprisals) - floors.mean()) < 0.05


def test_recall_values_and_copies_have_zero_floor(gen):
    tokens, segments, floors = gen.generate(20000, seed=3)
    queries = np.flatnonzero(tokens[:-2] == QUERY_TOKEN)
    assert len(queries) > 10
    assert (floors[queries + 2] == 0).all() and (segments[queries + 2] == 1).all()
    assert (floors[queries + 1] > 0).all()  # which key is asked is not predictable
    copies = np.flatnonzero(tokens == COPY_TOKEN)
    assert len(copies) > 5
    for at in copies[:-1].tolist():
        start = int(np.flatnonzero(tokens[:at] == SPAN_TOKEN)[-1])
        n = at - start - 1
        np.testing.assert_array_equal(tokens[at + 1 : at + 1 + n], tokens[start + 1 : at])
        assert (floors[at + 1 : at + 1 + n] == 0).all() and (segments[start : at + 1 + n] == 2).all()


# --------------------------------------------------------------------------- probes
@pytest.mark.parametrize("distance", [1, 3, 17, 64, 300])
def test_recall_probe_answer_and_distance(gen, distance):
    c = gen.config
    probes = gen.recall_probe(8, distance, seed=0)
    assert probes == gen.recall_probe(8, distance, seed=0)
    for context, target in probes:
        assert context[0] == EOT and context[-2] == QUERY_TOKEN
        key = context[-1]
        definition = context.index(DEF_TOKEN)
        pairs = context[definition + 1 : definition + 1 + 2 * c.recall_pairs]
        value_at = definition + 1 + pairs[::2].index(key) * 2 + 1
        assert target == [context[value_at]]
        assert len(context) - 1 - value_at - 1 == distance


@pytest.mark.parametrize("distance", [1, 3, 16, 64])
def test_bound_pair_recall_probe_answer_and_distance(distance):
    """With bound_pairs the definition is one token per pair; the distance counts from that token."""
    c = BOUND
    for context, target in SyntheticGenerator(c).recall_probe(8, distance, seed=0):
        key = context[-1] - c.key_base
        definition = context.index(DEF_TOKEN)
        pairs = [divmod(t - c.pair_base, c.n_values) for t in context[definition + 1 : definition + 1 + c.recall_pairs]]
        at = [k for k, _ in pairs].index(key)
        assert target == [c.value_base + pairs[at][1]]
        assert len(context) - 1 - (definition + 1 + at) - 1 == distance


def test_recall_probe_rejects_impossible_distance(gen):
    for distance in (0, 2):
        with pytest.raises(ValueError, match="distance"):
            gen.recall_probe(1, distance, seed=0)


def test_copy_and_fact_probes(gen):
    c = gen.config
    for span_len in (1, 8, 40):
        for context, target in gen.copy_probe(5, span_len, seed=1):
            assert context[-1] == COPY_TOKEN and len(target) == span_len
            start = len(context) - 1 - span_len
            assert context[start - 1] == SPAN_TOKEN and context[start:-1] == target
    probes = gen.fact_probe(50, seed=2)
    assert probes == gen.fact_probe(50, seed=2)
    for context, target in probes:
        subject = context[-1] - c.subject_base
        assert 0 <= subject < c.n_subjects and FACT_TOKEN in context
        assert target == [c.object_base + int(gen.fact_objects[subject])]
    # The table is global: another generator with the same table seed knows the same facts.
    np.testing.assert_array_equal(SyntheticGenerator(SyntheticConfig()).fact_objects, gen.fact_objects)


def test_synthetic_tokenizer_text_form(tmp_path):
    tok = SyntheticTokenizer(512)
    assert tok.decode([0, 17, 511]) == "w0 w17 w511"
    assert tok.encode(" w0  w17\nw511 ") == [0, 17, 511]
    for bad in ("w17 hello", "w512", "w017", "17"):
        with pytest.raises(ValueError, match=repr(bad.split()[-1])):
            tok.encode(bad)
    restored = load_tokenizer(tok.save(tmp_path / "tok"))
    assert (restored.name, restored.vocab_size, restored.eot_id) == (tok.name, 512, 0)


# --------------------------------------------------------------------------- prepare: synthetic
def test_prepare_synthetic_val_is_fixed_across_seeds(tmp_path):
    a = prepare_data(SMALL_SYNTHETIC, seed=1, cache_dir=tmp_path)
    b = prepare_data(SMALL_SYNTHETIC, seed=2, cache_dir=tmp_path)
    np.testing.assert_array_equal(a.val_tokens, b.val_tokens)
    assert not np.array_equal(a.train_tokens, b.train_tokens)
    assert isinstance(a.val_tokens, np.memmap) and len(a.train_tokens) == 20000 and len(a.val_tokens) == 5000
    assert a.kind == "synthetic" and a.segment_names == SEGMENT_NAMES
    assert len(a.val_segments) == len(a.val_entropy) == 5000
    again = prepare_data(SMALL_SYNTHETIC, seed=1, cache_dir=tmp_path)  # from the cache
    np.testing.assert_array_equal(again.train_tokens, a.train_tokens)
    record = json.loads(json.dumps(a.describe()))
    assert record["n_val_tokens"] == 5000 and record["vocab_size"] == 512 and record["tokenizer"] == "synthetic512"
    assert record["val_sha256"] == b.describe()["val_sha256"]
    assert 0 < record["val_floor_nats"]["all"] < math.log(512)
    short = prepare_data(SMALL_SYNTHETIC, seed=1, cache_dir=tmp_path, max_train_tokens=1000)
    np.testing.assert_array_equal(short.train_tokens, a.train_tokens[:1000])


def test_prepare_synthetic_options_and_errors(tmp_path):
    data = prepare_data("synthetic?n_train=3000&n_val=1000&recall_pairs=4", cache_dir=tmp_path)
    assert data.describe()["synthetic_config"]["recall_pairs"] == 4
    assert len(prepare_data("synthetic?n_train=2e3&n_val=1000", cache_dir=tmp_path).train_tokens) == 2000
    with pytest.raises(ValueError, match="unknown option"):
        prepare_data("synthetic?n_tokens=5", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="'n_train'.*expected an integer"):
        prepare_data("synthetic?n_train=lots", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"after '\?'"):
        prepare_data("synthetic:n_train=5", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        prepare_data(SMALL_SYNTHETIC, vocab_size=100, cache_dir=tmp_path)


def test_unigram_baseline_is_above_the_synthetic_floor(tmp_path):
    assert unigram_cross_entropy(np.array([0, 1, 2, 3]), np.array([0, 3]), 4) == pytest.approx(math.log(4))
    data = prepare_data(SMALL_SYNTHETIC, cache_dir=tmp_path)
    unigram = unigram_cross_entropy(data.train_tokens, data.val_tokens, data.tokenizer.vocab_size)
    assert unigram > float(np.mean(data.val_entropy)) + 1.0


# --------------------------------------------------------------------------- tokenizers and text
@pytest.fixture(scope="module")
def shakespeare(shared_file):
    return shared_file("corpora/tinyshakespeare.txt")


def test_bpe_round_trip_and_cache(shakespeare, tmp_path, monkeypatch):
    text = shakespeare.read_text(encoding="utf-8")
    docs = read_text_documents(shakespeare)
    tok = train_bpe(docs, vocab_size=1024, cache_dir=tmp_path)
    assert tok.vocab_size == 1024 and tok.eot_id == 0
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text) / 2
    assert tok.encode("<|endoftext|>") != [tok.eot_id]  # the text is text; EOT only between documents

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of using the cache")

    monkeypatch.setattr(tokenizer_module, "_train_bpe_uncached", no_training)
    cached = train_bpe(docs, vocab_size=1024, cache_dir=tmp_path)
    assert cached.name == tok.name and cached.encode(text[:5000]) == ids[: len(cached.encode(text[:5000]))]
    restored = load_tokenizer(tok.save(tmp_path / "saved"))
    assert restored.name == tok.name and restored.encode(text[:5000]) == cached.encode(text[:5000])


def test_prepare_text_split_and_val_bytes(shakespeare, tmp_path):
    data = prepare_data(str(shakespeare), vocab_size=1024, cache_dir=tmp_path)
    assert data.kind == "text" and (data.cache_path / "manifest.json").is_file()
    val = np.asarray(data.val_tokens)
    eot = data.tokenizer.eot_id
    assert val[-1] == eot and data.val_tokens[-1] == eot
    assert data.val_bytes == len(data.tokenizer.decode(val[val != eot].tolist()).encode("utf-8"))
    # validation is the documents whose content hash falls below 10 % (Tiny Shakespeare: 17 of 258 ~4 KB documents)
    docs = read_text_documents(shakespeare)
    threshold = split_threshold(0.1)
    val_docs = [d for d in docs if is_validation(d.encode("utf-8"), threshold)]
    train_docs = [d for d in docs if not is_validation(d.encode("utf-8"), threshold)]
    assert data.val_bytes == sum(len(d.encode("utf-8")) for d in val_docs)
    assert 0.04 < len(val) / (len(val) + len(data.train_tokens)) < 0.15
    # The BPE saw only the train documents (all of them: the corpus is below the sample cap).
    on_train_docs = train_bpe(train_docs, 1024, cache_dir=tmp_path / "tokenizers")
    assert data.tokenizer._tok.get_vocab() == on_train_docs._tok.get_vocab()
    assert data.tokenizer._tok.get_vocab() != train_bpe(docs, 1024, cache_dir=tmp_path / "tokenizers")._tok.get_vocab()
    record = json.loads(json.dumps(data.describe()))
    assert record["val_bytes"] == data.val_bytes and record["n_val_docs"] == len(val_docs)
    assert len(record["manifest_sha256"]) == 64
    other_seed = prepare_data(str(shakespeare), vocab_size=1024, seed=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(other_seed.val_tokens, data.val_tokens)


def test_tiktoken_needs_the_package():
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install tiktoken"):
            get_tokenizer("tiktoken:gpt2")
    else:
        pytest.skip("tiktoken is installed")


def _write(path, data):
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


@pytest.mark.parametrize(
    "name, content, error, message",
    [
        ("missing.txt", None, FileNotFoundError, "does not exist"),
        ("empty.txt", "", ValueError, "is empty"),
        ("blank.txt", "  \n\n \n", ValueError, "is empty"),
        ("binary.bin", b"\x7fELF\x00\x01\x02hello", ValueError, "binary"),
        ("latin1.txt", "caf\u00e9 au lait".encode("latin-1"), ValueError, "not UTF-8"),
        ("rows.jsonl", '{"content": "no text here"}\n', ValueError, r"rows.jsonl:1 has no string field 'text'"),
        ("broken.jsonl", '{"text": "ok"}\n{"text": \n', ValueError, r"broken.jsonl:2 is not valid JSON"),
        ("folder", "mkdir", ValueError, "holds no"),
        ("one.txt", "just one short paragraph", ValueError, "at least 2"),
    ],
)
def test_text_source_errors(tmp_path, name, content, error, message):
    path = tmp_path / name
    if content == "mkdir":
        path.mkdir()
    elif content is not None:
        _write(path, content)
    with pytest.raises(error, match=message) as raised:
        prepare_data(str(path), vocab_size=300, cache_dir=tmp_path / "cache")
    assert name in str(raised.value)


def test_text_folder_and_paragraph_documents(tmp_path):
    paragraphs = [f"Paragraph {i}.\nIt has two lines." for i in range(10)]
    _write(tmp_path / "b.txt", "\n\n\n".join(paragraphs))
    _write(tmp_path / "a.jsonl", "\n".join(json.dumps({"text": f"row {i}"}) for i in range(3)) + "\n\n")
    _write(tmp_path / "skip.csv", "ignored")
    docs = read_text_documents(tmp_path, doc_chars=60)
    assert docs[:3] == ["row 0", "row 1", "row 2"]  # sorted paths: a.jsonl first
    assert "\n\n\n".join(docs[3:]) == "\n\n\n".join(paragraphs)  # verbatim, cut between paragraphs
    assert all(len(d) >= 60 for d in docs[3:-1])
    assert read_text_documents(tmp_path, doc_chars=60, max_docs=4) == docs[:4]


# --------------------------------------------------------------------------- Hugging Face path
def _local_jsonl(tmp_path, n=40):
    rows = [{"text": f"Document number {i}: the quick brown fox jumps over the lazy dog {i * i}.", "id": i} for i in range(n)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hf_source_on_a_local_jsonl(tmp_path):
    path = _local_jsonl(tmp_path)
    via_hf = prepare_data(f"hf:json?data_files={path}", vocab_size=300, cache_dir=tmp_path / "cache")
    direct = prepare_data(str(path), vocab_size=300, cache_dir=tmp_path / "cache")
    assert via_hf.kind == "text" and via_hf.content_hash == direct.content_hash
    np.testing.assert_array_equal(via_hf.val_tokens, direct.val_tokens)
    limited = prepare_data(f"hf:json?data_files={path}&max_docs=30", vocab_size=300, cache_dir=tmp_path / "cache")
    assert limited.info["n_train_docs"] + limited.info["n_val_docs"] == 30


def test_hf_spec_parsing_and_missing_column(tmp_path):
    source = parse_hf_target("wikitext:wikitext-2-raw-v1@validation")
    assert (source.name, source.config, source.split) == ("wikitext", "wikitext-2-raw-v1", "validation")
    assert parse_hf_target("roneneldan/TinyStories").split == "train"
    path = _local_jsonl(tmp_path, n=3)
    with pytest.raises(ValueError, match="no column 'body'.*text"):
        list(iter_hf_documents(parse_hf_target("json"), text_field="body", data_files=str(path)))


# --------------------------------------------------------------------------- batches
def test_get_batch_is_pure_and_rank_invariant():
    tokens = np.arange(5000, dtype=np.uint16)
    x, y = get_batch(tokens, 5, 4, 16, seed=3)
    x2, y2 = get_batch(tokens, 5, 4, 16, seed=3)
    assert x.dtype == torch.long and x.shape == (4, 16)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(y, x + 1)
    assert not torch.equal(x, get_batch(tokens, 6, 4, 16, seed=3)[0])
    assert not torch.equal(x, get_batch(tokens, 5, 4, 16, seed=4)[0])
    whole = get_batch(tokens, 5, 8, 16, seed=3)[0]
    ranks = [get_batch(tokens, 5, 4, 16, seed=3, rank=r, world_size=2)[0] for r in range(2)]
    assert torch.equal(torch.cat(ranks), whole)
    micro = [get_batch(tokens, 5, 4, 16, seed=3, micro_step=m)[0] for m in range(2)]
    assert torch.equal(torch.cat(micro), whole)  # gradient accumulation sees the same rows
    with pytest.raises(ValueError, match="rank"):
        get_batch(tokens, 0, 4, 16, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="too few"):
        get_batch(tokens[:10], 0, 4, 16, seed=0)
