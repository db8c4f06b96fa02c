"""Token shards: ``harness data prepare`` equals a one-shot encode, resumes after SIGKILL with the
same bytes, splits by content hash (stable, no overlap), fails cleanly, and is what training reads."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import io as harness_io
from harness.cli import main as cli_main
from harness.data import get_batch, prepare_data, unigram_cross_entropy
from harness.data import shard_prepare
from harness.data.encoding import WordCache, encode_documents
from harness.data.shard_prepare import ShardOptions, prepare_shards
from harness.data.shards import ShardedTokens
from harness.data.split import is_validation, split_threshold
from harness.data.text import paragraph_documents, paragraph_stream, read_text_documents
from harness.io import WriteFailed
from harness.data.prepare import load_prepared

WORDS = ["the", "a", "harness", "token", "shard", "river", "stone", "light", "über", "naïve", "東京", "🙂", "to", "of"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setattr(shard_prepare, "CHUNK_BYTES", 2000)  # many chunks, so workers interleave


def _corpus(tmp_path: Path, n_docs: int = 300, seed: int = 0, duplicates: int = 5) -> Path:
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 120))) for _ in range(n_docs)]
    docs += docs[:duplicates]  # identical documents must land on the same side of the split
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


def _options(**changes) -> ShardOptions:
    return ShardOptions(**{"vocab_size": 300, "shard_tokens": 1000, "workers": 1, **changes})


def _split_docs(tokens: np.ndarray, eot: int) -> list[np.ndarray]:
    ends = np.flatnonzero(tokens == eot)
    return np.split(tokens, ends + 1)[:-1]


def _shard_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.bin"))}


@pytest.mark.parametrize("workers", [1, 3])
def test_shards_equal_a_one_shot_encode(tmp_path, workers):
    corpus = _corpus(tmp_path)
    folder = prepare_shards(str(corpus), _options(workers=workers), out=tmp_path / "out")
    data = load_prepared(folder)
    docs = read_text_documents(corpus)
    threshold = split_threshold(0.1)
    for split, wanted in (("train", False), ("val", True)):
        chosen = [d for d in docs if is_validation(d.encode("utf-8"), threshold) == wanted]
        expected = [t for d in chosen for t in data.tokenizer.encode(d) + [data.tokenizer.eot_id]]  # one doc at a time
        tokens = data.train_tokens if split == "train" else data.val_tokens
        np.testing.assert_array_equal(np.asarray(tokens), expected)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and len(manifest["shards"]["train"]) > 3
    assert all(s["tokens"] == 1000 for s in manifest["shards"]["train"][:-1])  # fixed-size shards, a shorter last one
    assert manifest["tokenizer"]["sample"]["documents"] == manifest["documents"]["train"]  # below the cap: all train docs


def test_the_split_is_stable_across_workers_and_never_overlaps(tmp_path):
    corpus = _corpus(tmp_path, duplicates=40)
    one = load_prepared(prepare_shards(str(corpus), _options(workers=1), out=tmp_path / "w1"))
    three = load_prepared(prepare_shards(str(corpus), _options(workers=3, shard_tokens=777), out=tmp_path / "w3"))
    np.testing.assert_array_equal(np.asarray(one.val_tokens), np.asarray(three.val_tokens))
    np.testing.assert_array_equal(np.asarray(one.train_tokens), np.asarray(three.train_tokens))
    eot = one.tokenizer.eot_id
    train = {one.tokenizer.decode(d[:-1].tolist()) for d in _split_docs(np.asarray(one.train_tokens), eot)}
    val = {one.tokenizer.decode(d[:-1].tolist()) for d in _split_docs(np.asarray(one.val_tokens), eot)}
    assert val and train and not train & val  # duplicates included: no validation text is trained on
    assert train | val == set(read_text_documents(corpus))
    assert 0.05 < one.info["n_val_docs"] / (one.info["n_val_docs"] + one.info["n_train_docs"]) < 0.16


_KILL_SCRIPT = """
import os, signal, sys
from harness.data import shard_prepare, shard_writer
shard_prepare.CHUNK_BYTES = 2000
writes = 0
original = shard_writer.ShardStream._write
def write_then_die(self, tokens):
    global writes
    writes += 1
    if writes == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # mid-preparation, a shard half written
    original(self, tokens)
shard_writer.ShardStream._write = write_then_die
options = shard_prepare.ShardOptions(vocab_size=300, shard_tokens=1000, workers=int(sys.argv[4]))
shard_prepare.prepare_shards(sys.argv[1], options, out=sys.argv[2])
"""


@pytest.mark.parametrize("kill_at, workers", [(9, 1), (25, 2)])
def test_sigkill_mid_preparation_then_rerun_gives_the_same_bytes(tmp_path, monkeypatch, kill_at, workers):
    corpus = _corpus(tmp_path)
    whole = prepare_shards(str(corpus), _options(), out=tmp_path / "whole")
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(corpus), str(killed), str(kill_at), str(workers)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not (killed / "manifest.json").exists()
    before = _shard_hashes(killed)
    assert before and any(p.name.endswith(".tmp") for p in killed.iterdir())  # died inside a shard
    encoded = []
    monkeypatch.setattr(shard_prepare, "encode_documents", 
                        lambda encode, eot, docs, dtype: encoded.append(len(docs)) or encode_documents(encode, eot, docs, dtype))
    prepare_shards(str(corpus), _options(), out=killed)
    assert (killed / "manifest.json").read_bytes() == (whole / "manifest.json").read_bytes()
    assert _shard_hashes(killed) == _shard_hashes(whole)
    assert {n: h for n, h in _shard_hashes(killed).items() if n in before} == before  # finished shards kept
    assert sum(encoded) < len(read_text_documents(corpus))  # resumed, not redone
    assert not any(p.name.endswith(".tmp") for p in killed.iterdir()) and not (killed / "progress.json").exists()


def test_a_corrupt_or_missing_shard_is_one_sentence_naming_it(tmp_path):
    folder = prepare_shards(str(_corpus(tmp_path)), _options(), out=tmp_path / "out")
    shard = folder / "train-000002.bin"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"^shard .*train-000002.bin is corrupt: its sha256 differs") as raised:
        prepare_data(str(folder))
    assert str(raised.value).count(". ") == 0
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(ValueError, match=r"train-000002.bin is corrupt: .* bytes where the manifest lists"):
        prepare_data(str(folder))
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"shard .*train-000002.bin listed in the manifest is missing"):
        prepare_data(str(folder))
    assert cli_main(["run", "--arch", "gpt2", "--size", "nano", "--data", str(folder)]) == 2


def test_a_failed_write_leaves_no_partial_shard(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path)
    opened = []
    real_open = harness_io._open_file

    class FillsUp:
        """A shard file on a disk that fills up halfway through its second write."""

        def __init__(self, file):
            self.file, self.writes = file, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 2:
                self.file.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

    def full_disk(path, mode, buffering=-1):
        file = real_open(path, mode, buffering)
        if str(path).endswith(".bin.tmp"):
            opened.append(path)
            if len(opened) == 3:
                return FillsUp(file)
        return file

    monkeypatch.setattr(harness_io, "_open_file", full_disk)
    with pytest.raises(WriteFailed, match=r"cannot write .*-00000\d.bin: no space left on device"):
        prepare_shards(str(corpus), _options(), out=tmp_path / "out")
    names = [p.name for p in (tmp_path / "out").iterdir()]
    assert not any(n.endswith(".tmp") for n in names) and "manifest.json" not in names
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert sorted(n for n in names if n.endswith(".bin")) == sorted(e["file"] for s in ("train", "val") for e in progress[s])
    monkeypatch.setattr(harness_io, "_open_file", real_open)
    done = prepare_shards(str(corpus), _options(), out=tmp_path / "out")  # the same command finishes it
    assert _shard_hashes(done) == _shard_hashes(prepare_shards(str(corpus), _options(), out=tmp_path / "whole"))


def test_small_corpora_go_through_the_same_cached_preparation(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path)
    data = prepare_data(str(corpus), vocab_size=300, cache_dir=tmp_path / "cache", workers=1)
    manifest = json.loads((data.cache_path / "manifest.json").read_text())
    assert data.describe()["manifest_sha256"] == hashlib.sha256((data.cache_path / "manifest.json").read_bytes()).hexdigest()
    assert manifest["tokens"]["train"] == len(data.train_tokens)
    via_hf = prepare_data(f"hf:json?data_files={corpus}&max_chars=none", vocab_size=300, cache_dir=tmp_path / "cache")
    assert via_hf.content_hash == data.content_hash  # the hf stream, uncapped, is the same documents
    capped = prepare_data(f"hf:json?data_files={corpus}&max_chars=20000", vocab_size=300, cache_dir=tmp_path / "cache")
    assert capped.info["n_train_docs"] + capped.info["n_val_docs"] < data.info["n_train_docs"] + data.info["n_val_docs"]

    def no_preparation(*args, **kwargs):
        raise AssertionError("prepared again instead of reading the cache")

    monkeypatch.setattr(shard_prepare._Preparation, "run", no_preparation)
    again = prepare_data(str(corpus), vocab_size=300, cache_dir=tmp_path / "cache", workers=3)  # workers: not in the key
    np.testing.assert_array_equal(np.asarray(again.train_tokens), np.asarray(data.train_tokens))
    from_folder = prepare_data(str(data.cache_path))
    assert from_folder.describe()["val_sha256"] == data.describe()["val_sha256"]
    assert prepare_data(str(data.cache_path), max_train_tokens=50).train_tokens.shape == (50,)


def test_batches_over_shards_equal_batches_over_one_array():
    rng = np.random.default_rng(0)
    whole = rng.integers(0, 500, size=10_000).astype(np.uint16)
    sharded = ShardedTokens(np.split(whole, [1000, 1001, 4000, 9990]))
    assert len(sharded) == len(whole) and sharded[-1] == whole[-1] and sharded[999:1003].tolist() == whole[999:1003].tolist()
    for step in range(20):
        x, y = get_batch(sharded, step, 8, 64, seed=1, rank=1, world_size=2)
        x0, y0 = get_batch(whole, step, 8, 64, seed=1, rank=1, world_size=2)
        assert torch.equal(x, x0) and torch.equal(y, y0)
    val = whole[:300]
    assert unigram_cross_entropy(sharded, val, 500) == pytest.approx(unigram_cross_entropy(whole, val, 500), rel=1e-12)
    np.testing.assert_array_equal(np.asarray(sharded.head(1500)), whole[:1500])


def test_the_word_cache_encodes_exactly_as_tokenizers(tmp_path):
    from harness.data.tokenizer import SyntheticTokenizer, train_bpe

    texts = read_text_documents(_corpus(tmp_path)) + ["It's 12 o'clock;  they'll see\n\n\tthe  sea...  ", "x\u00a0y \u3000z"]
    tokenizer = train_bpe(texts, 400, cache_dir=tmp_path)
    assert WordCache.applies_to(tokenizer)
    cached = WordCache(tokenizer)
    rng = random.Random(0)
    ascii_chars = [chr(c) for c in range(128)]
    for ch in ascii_chars:  # every ASCII character in the contexts GPT-2's pattern cares about
        text = f"a{ch}b {ch}{ch}1 x {ch}\n\n {ch}'ll{ch} {ch}'S"
        assert cached.encode(text) == tokenizer.encode(text), repr(ch)
    for _ in range(2000):
        text = "".join(rng.choice(ascii_chars) if rng.random() < 0.5 else rng.choice(" \n\t ab's9.") for _ in range(40))
        assert cached.encode(text) == tokenizer.encode(text), repr(text)
    for text in ("caf\u00e9  \u0558x", "\u00a0a \u3000b 🙂", "ab\u0301c"):  # non-ASCII: encoded whole
        assert cached.encode(text) == tokenizer.encode(text)
    assert not WordCache.applies_to(SyntheticTokenizer(512))  # other tokenizers encode whole documents


def _paragraph_reference(text: str, doc_chars: int) -> list[str]:
    """The whole-text paragraph cutter the streaming reader replaces."""
    docs, start = [], 0
    for gap in re.finditer(r"\r?\n(?:[ \t]*\r?\n)+", text):
        if gap.start() - start >= doc_chars:
            docs.append(text[start : gap.start()])
            start = gap.end()
    docs.append(text[start:])
    return [doc.strip() for doc in docs if doc.strip()]


def test_paragraph_documents_do_not_depend_on_read_blocks():
    rng = random.Random(3)
    pieces = ["word ", "line\n", "\n", " \t\n", "\r\n", "  ", "para.\n\n", "x"]
    for trial in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 300)))
        doc_chars = rng.choice([1, 10, 40])
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        blocks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        expected = _paragraph_reference(text, doc_chars)
        assert paragraph_documents(text, doc_chars) == expected
        assert list(paragraph_stream(blocks, doc_chars)) == expected, (text, blocks)


def test_cli_prepares_and_a_nano_run_trains_from_the_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path / "results"))
    corpus = _corpus(tmp_path, n_docs=600)
    out = tmp_path / "prepared"
    argv = ["data", "prepare", str(corpus), "--vocab-size", "300", "--workers", "2", "--shard-tokens", "5000",
            "--out", str(out), "--no-progress"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "train /" in printed and "shards" in printed and str(out) in printed
    assert cli_main(["run", "--arch", "gpt2", "--size", "nano", "--data", str(out), "--budget", "2e9",
                     "--no-eval"]) == 0
    record = json.loads(next((tmp_path / "results").glob("*/record.json")).read_text())
    assert record["data"]["manifest_sha256"] == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    assert cli_main(["data", "prepare", str(tmp_path / "nope.txt")]) == 2


def test_a_prepared_folder_takes_a_run_tokenizer_and_refuses_another(tmp_path):
    from harness.data.downstream import prepare_downstream
    from harness.data.tokenizer import train_bpe

    corpus = _corpus(tmp_path)
    parent = train_bpe(["a parent's own text about ships and the sea. " * 40], 300, cache_dir=tmp_path)
    parent_dir = parent.save(tmp_path / "parent-run" / "tokenizer").parent
    folder = prepare_shards(str(corpus), _options(tokenizer=str(parent_dir)), out=tmp_path / "with-parent")
    assert json.loads((folder / "manifest.json").read_text())["tokenizer"]["sample"] is None  # no training
    data = prepare_downstream(str(folder), parent, seq_len=16)
    assert data.data.tokenizer is parent and len(data.data.train_tokens) > 0
    other = train_bpe(["something else entirely, about mountains. " * 40], 300, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="were encoded with .*, not "):
        prepare_downstream(str(folder), other, seq_len=16)


def test_a_vocabulary_above_65536_tokens_gets_uint32_shards(tmp_path):
    from harness.data.tokenizer import SyntheticTokenizer

    rng = random.Random(1)
    docs = [" ".join(f"w{rng.randrange(1, 70_000)}" for _ in range(50)) for _ in range(200)]
    corpus = tmp_path / "words.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tokenizer = SyntheticTokenizer(70_000)
    data = load_prepared(prepare_shards(str(corpus), ShardOptions(tokenizer=tokenizer, shard_tokens=999, workers=2),
                                        out=tmp_path / "out"))
    manifest = json.loads((data.cache_path / "manifest.json").read_text())
    assert manifest["dtype"] == "uint32" and data.train_tokens.dtype == np.dtype("<u4")
    threshold = split_threshold(0.1)
    expected = [t for d in docs if not is_validation(d.encode(), threshold) for t in tokenizer.encode(d) + [0]]
    assert np.asarray(data.train_tokens).tolist() == expected and max(expected) >= 2**16
