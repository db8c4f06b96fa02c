"""Memory and throughput of ``harness data prepare`` on generated synthetic text (nothing committed).

    python benchmarks/data_prepare.py memory --sizes 100,1000      # peak RSS of the process tree, BPE training included
    python benchmarks/data_prepare.py throughput --size 100        # MB/s: 1 worker, 2 workers, a plain tokenizers loop

The corpus is pseudo-English in ``.jsonl`` (one document per line, 50-2,000 words from a
Zipf-distributed vocabulary of 30,000 made-up words), generated deterministically into
``--workdir`` (default a temporary folder, deleted afterwards).

- ``memory``: runs ``python -m harness data prepare CORPUS --workers 2`` (BPE 4,096 trained on
  its default sample, then shards) for each size and samples the RSS of the process and its
  workers every 0.1 s (from /proc), summed: the peak is the figure (PSS beside it, which counts
  pages the forked workers share with the main process once).
- ``throughput``: trains the 4,096-token BPE once (not timed), then times the preparation with
  that tokenizer (``--tokenizer FOLDER``) at 1 and 2 workers, and beside them a plain
  single-process loop of ``tokenizers`` ``encode`` over the same documents (read from the same
  file). MB are 10^6 bytes of the UTF-8 text. The 1-minute load average is printed before and
  after each measurement: throughput on a loaded machine is not the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's harness, also when another one is installed


def generate_corpus(path: Path, megabytes: float, seed: int = 0) -> Path:
    """Deterministic pseudo-English ``.jsonl`` of about ``megabytes`` MB."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    lengths = rng.integers(2, 10, size=30_000)
    vocab = np.array(["".join(rng.choice(letters, size=n)) for n in lengths])
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    target, written = int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8") as file:
        while written < target:
            words = vocab[rng.choice(len(vocab), size=int(rng.integers(50, 2000)), p=weights)]
            line = json.dumps({"text": " ".join(words) + "."}) + "\n"
            file.write(line)
            written += len(line)
    return path


def _tree_memory(pid: int) -> tuple[int, int]:
    """Summed RSS and PSS (bytes) of ``pid`` and its descendants, read from /proc. RSS counts pages a
    forked worker shares with its parent once per process (an upper bound); PSS splits them fairly."""
    rss = pss = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return rss, pss


def run_prepare(corpus: Path, out: Path, *extra: str) -> dict:
    """Run ``harness data prepare`` in a subprocess: wall seconds and peak tree RSS."""
    command = [sys.executable, "-m", "harness", "data", "prepare", str(corpus), "--out", str(out), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}  # one worker = one core
    started, peak_rss, peak_pss = time.perf_counter(), 0, 0
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        rss, pss = _tree_memory(process.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    stdout, stderr = process.communicate()
    if process.returncode:
        raise RuntimeError(f"harness data prepare failed: {stderr.strip()}")
    return {"seconds": seconds, "peak_rss_bytes": peak_rss, "peak_pss_bytes": peak_pss,
            "output": stdout.strip().splitlines()[0]}


def load() -> float:
    return os.getloadavg()[0]


def measure_memory(workdir: Path, sizes: list[float]) -> list[dict]:
    rows = []
    for size in sizes:
        corpus = generate_corpus(workdir / f"corpus-{size:g}MB.jsonl", size)
        before = load()
        result = run_prepare(corpus, workdir / f"out-{size:g}", "--workers", "2")
        rows.append({"corpus_mb": corpus.stat().st_size / 1e6, **result, "load_before": before, "load_after": load()})
        print(f"{rows[-1]['corpus_mb']:,.0f} MB of text: peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB summed over "
              f"the process and its workers (PSS {result['peak_pss_bytes'] / 1e9:.2f} GB), "
              f"{result['seconds']:,.0f} s with BPE training; "
              f"1-min load {before:.2f} -> {rows[-1]['load_after']:.2f}", flush=True)
        shutil.rmtree(workdir / f"out-{size:g}")
    return rows


def measure_throughput(workdir: Path, size: float) -> dict:
    from harness.data.tokenizer_choice import train_on_sample
    from harness.data.text import iter_text_documents

    corpus = generate_corpus(workdir / f"corpus-{size:g}MB.jsonl", size)
    megabytes = sum(len(d.encode("utf-8")) for d in iter_text_documents(corpus)) / 1e6
    tokenizer, _ = train_on_sample(iter_text_documents(corpus), 4096, 100_000_000, 0.1)
    tokenizer_dir = tokenizer.save(workdir / "bpe4096")
    results = {"text_mb": megabytes}
    for workers in (1, 2):
        before = load()
        run = run_prepare(corpus, workdir / f"out-w{workers}", "--tokenizer", str(tokenizer_dir), "--workers", str(workers))
        results[f"workers_{workers}"] = {"mb_per_s": megabytes / run["seconds"], "seconds": run["seconds"],
                                         "load_before": before, "load_after": load()}
        shutil.rmtree(workdir / f"out-w{workers}")
    before, started = load(), time.perf_counter()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    for doc in iter_text_documents(corpus):
        tokenizer.encode(doc)
    seconds = time.perf_counter() - started
    results["plain_tokenizers_loop"] = {"mb_per_s": megabytes / seconds, "seconds": seconds,
                                        "load_before": before, "load_after": load()}
    results["speedup_2_over_1"] = results["workers_2"]["mb_per_s"] / results["workers_1"]["mb_per_s"]
    for name in ("workers_1", "workers_2", "plain_tokenizers_loop"):
        r = results[name]
        print(f"{name}: {r['mb_per_s']:.2f} MB/s of text ({r['seconds']:.1f} s; 1-min load {r['load_before']:.2f} -> "
              f"{r['load_after']:.2f})")
    print(f"2 workers / 1 worker: {results['speedup_2_over_1']:.2f}x")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["memory", "throughput"])
    parser.add_argument("--sizes", default="100,1000", help="memory: corpus sizes in MB (default 100,1000)")
    parser.add_argument("--size", type=float, default=100, help="throughput: corpus size in MB (default 100)")
    parser.add_argument("--workdir", default=None, help="where corpora and shards go (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="harness-data-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; 1-min load {load():.2f}", flush=True)
    try:
        if args.what == "memory":
            figures = measure_memory(workdir, [float(s) for s in args.sizes.split(",")])
        else:
            figures = measure_throughput(workdir, args.size)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
