"""Prepare a corpus for training: stream it into token shards + a manifest, in parallel, resumably.

    python -m harness data prepare ../shared/data/corpora/tinyshakespeare.txt
    python -m harness data prepare corpus/ --vocab-size 8192 --workers 8 --out data/corpus-bpe8k
    python -m harness data prepare "hf:roneneldan/TinyStories?max_chars=none" --tokenizer tiktoken:gpt2
    python -m harness run --arch gpt2 --data data/corpus-bpe8k      # train from the prepared folder

The folder (default .cache/harness/data/shards-<key>/, the cache `run` reads for the same
spec) holds tokenizer/, <split>-NNNNNN.bin shards (uint16 when the vocabulary fits, else
uint32) and manifest.json. Killed, the same command resumes at the first missing shard and
writes the same bytes. --tokenizer: bpe (trained on a bounded sample of the training
documents, stated in the manifest), tiktoken:gpt2, or a tokenizer folder / run directory
(e.g. an imported checkpoint's).
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    prepare = sub.add_parser("prepare", help="stream a data spec into token shards + manifest.json")
    prepare.add_argument("spec", help="a .txt/.jsonl file or folder, or hf:NAME[:CONFIG][@SPLIT][?max_chars=none]")
    prepare.add_argument("--tokenizer", default=None, help="bpe (default), tiktoken:gpt2, or a tokenizer folder / run directory")
    prepare.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary to train (default 4096)")
    prepare.add_argument("--workers", type=int, default=None, help="tokenizing processes (default: the CPU cores)")
    prepare.add_argument("--shard-tokens", type=int, default=None, help="tokens per shard (default 100,000,000)")
    prepare.add_argument("--sample-bytes", type=int, default=None,
                         help="UTF-8 bytes of training documents the BPE is trained on (default 100,000,000)")
    prepare.add_argument("--val-fraction", type=float, default=0.1, help="fraction of documents held out (default 0.1)")
    prepare.add_argument("--out", default=None, help="output folder (default: the cache folder `run --data SPEC` reads)")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from harness.data.shard_prepare import DEFAULT_SAMPLE_BYTES, DEFAULT_SHARD_TOKENS, ShardOptions, prepare_shards
    from harness.data.shards import load_manifest
    from harness.data.sources import open_source
    from harness.data.spec import parse_spec

    options = ShardOptions(tokenizer=args.tokenizer, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                           shard_tokens=args.shard_tokens or DEFAULT_SHARD_TOKENS,
                           sample_bytes=args.sample_bytes or DEFAULT_SAMPLE_BYTES, workers=args.workers)
    started = time.perf_counter()
    total_bytes = open_source(parse_spec(args.spec)).total_bytes  # of the local files; None for a hub stream
    with _ProgressBar(disabled=args.no_progress, total_bytes=total_bytes) as bar:
        folder = prepare_shards(args.spec, options, out=args.out, progress=bar.update)
    seconds = time.perf_counter() - started
    manifest = load_manifest(folder)
    tokens, docs, n_bytes = manifest["tokens"], manifest["documents"], manifest["bytes"]
    print(f"{args.spec}: {docs['train']:,} train / {docs['val']:,} validation documents, "
          f"{tokens['train']:,} / {tokens['val']:,} tokens ({manifest['dtype']}), "
          f"{len(manifest['shards']['train'])} + {len(manifest['shards']['val'])} shards, "
          f"tokenizer {manifest['tokenizer']['name']} ({manifest['tokenizer']['vocab_size']:,} tokens)")
    if bar.bytes:
        print(f"prepared {bar.bytes / 1e6:,.1f} MB in {seconds:,.1f} s ({bar.bytes / 1e6 / seconds:,.2f} MB/s of text, "
              f"{bar.tokens / seconds:,.0f} tokens/s, tokenizer training included)")
    print(f"→ {folder}")
    return 0


class _ProgressBar:
    """tqdm in MB of text read, with the tokens written and tokens/s beside it."""

    def __init__(self, disabled: bool, total_bytes: int | None):
        self.disabled, self.total_bytes, self.bytes, self.tokens, self.bar = disabled, total_bytes, 0, 0, None
        self.started = time.perf_counter()

    def __enter__(self) -> "_ProgressBar":
        if not self.disabled:
            from tqdm import tqdm

            total = self.total_bytes / 1e6 if self.total_bytes else None
            self.bar = tqdm(total=total, unit="MB", dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:,.1f}/{total:,.1f} MB [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
                            if total else "{n:,.1f} MB [{elapsed}, {rate_fmt}{postfix}]")
        return self

    def update(self, n_bytes: int, n_tokens: int) -> None:
        self.bytes += n_bytes
        self.tokens += n_tokens
        if self.bar is not None:
            self.bar.update(n_bytes / 1e6)
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens:,} tokens, {self.tokens / elapsed:,.0f} tokens/s", refresh=False)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
