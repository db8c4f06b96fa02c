"""Import a Hugging Face checkpoint (GPT-2, OpenAI GPT, GPT-Neo) as a harness run directory.

SOURCE is a folder written by save_pretrained (config.json, model.safetensors or
pytorch_model.bin, tokenizer.json ...) or a hub name hf:NAME[@REVISION] (e.g. hf:gpt2),
read from the local Hugging Face cache; with HF_HUB_OFFLINE=1 nothing is downloaded.

The run directory holds checkpoint.pt, config.json, tokenizer/ and record.json (status ok,
"imported" with the source, hub commit, sha256 of the weights and the transformers config;
no training FLOPs), so `eval`, `report` and `export` take it like a trained run. What cannot
map exactly (e.g. GPT-2's scale_attn_by_inverse_layer_idx, an untied head) is refused.

Examples:
  python tools/make_tiny_hf_model.py --kind gpt2 --out /tmp/tiny-gpt2
  python -m harness import /tmp/tiny-gpt2 --out results/tiny-gpt2 --verify
  python -m harness import hf:gpt2 --out results/gpt2-hf
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="save_pretrained folder, or hf:NAME[@REVISION] from the local HF cache")
    parser.add_argument("--out", required=True, help="run directory to write, e.g. results/gpt2-hf")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--verify", action="store_true",
                        help="compare logits with transformers on random tokens afterwards (needs transformers)")


def main(args: argparse.Namespace) -> int:
    from harness.hf import import_checkpoint
    from harness.runs.records import load_record

    run_dir = import_checkpoint(args.source, args.out, force=args.force)
    record = load_record(run_dir)
    print(f"imported {args.source} as {record['arch']} ({record['imported']['mapped_as']}): "
          f"{record['params']:,} parameters, context {record['seq_len']}, tokenizer {record['data']['tokenizer']} "
          f"({record['data']['vocab_size']} tokens)")
    if args.verify:
        from harness.hf.parity import logit_difference
        from harness.hf.source import resolve_checkpoint

        directory = resolve_checkpoint(args.source).directory
        print(f"max |Δ logit| against transformers: {logit_difference(directory, run_dir):.3g} (fp32, random tokens)")
    print(f"→ {run_dir}")
    return 0
