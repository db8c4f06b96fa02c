"""Export a run as a Hugging Face checkpoint directory that transformers loads.

The family follows the model's structure: post-LN dense (gpt1) → OpenAIGPTLMHeadModel,
pre-LN dense (gpt2) → GPT2LMHeadModel, pre-LN with banded layers (gpt3) → GPTNeoForCausalLM
(global/local layers, window_size = the band). Weights go to model.safetensors (fp32),
the tokenizer to tokenizer.json + tokenizer_config.json. What none of these families can
hold (MoE, an image prefix, a GPT-3 query bias, ...) is refused with one sentence.

Example:
  python -m harness export results/tiny-gpt2 --format hf --out /tmp/tiny-gpt2-hf
  python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('/tmp/tiny-gpt2-hf')"
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run directory (results/<run_id>) or run id")
    parser.add_argument("--format", choices=("hf",), default="hf", help="output format (hf: transformers directory)")
    parser.add_argument("--out", required=True, help="directory to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--verify", action="store_true", help="reload with transformers and compare logits (needs transformers)")


def main(args: argparse.Namespace) -> int:
    from harness.hf import export_run

    export = export_run(args.run, args.out, force=args.force)
    print(f"exported {args.run} as {export.hf_class} (model_type {export.model_type})")
    for note in export.notes:
        print(f"note: {note}")
    if args.verify:
        from harness.hf.parity import logit_difference

        print(f"max |Δ logit| after from_pretrained: {logit_difference(export.path, args.run):.3g} (fp32, random tokens)")
    print(f"→ {export.path}")
    return 0
