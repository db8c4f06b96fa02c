"""Fine-tune a run (trained or imported) on downstream data at a FLOP budget: fully, with LoRA, or its top N blocks.

    python -m harness finetune --run results/<run_id> --data task:facts --method lora --budget 5e10
    python -m harness finetune --run results/<run_id> --data ../shared/data/corpora/us_speeches --method full
    python -m harness finetune --run results/<run_id> --data pairs.jsonl --method lora --rank 4 --alpha 8
    python -m harness finetune --run results/<run_id> --data task:facts --method top:1

--data: any data spec the harness reads (text file or folder, hf:..., synthetic?...), tokenized
with the parent run's tokenizer; a .jsonl of {"prompt", "completion"} records (loss on the
completion and its closing end-of-text only); or a generated task with a known answer:
task:facts (a new subject→object table), task:recall, task:reverse_recall (see
harness/data/pairs.py).

--budget: fine-tuning FLOPs (2 per multiply-add). Full fine-tune = 3 × forward per token;
LoRA = frozen forward + backward through activations only + 3 × adapter FLOPs; top:N = forward +
the frozen tied head's input gradient + 2 × the top N blocks' forward (the record's
train_flops_per_token_parts gives the parts). top:N trains the top N blocks and the final
LayerNorm; the embeddings and the head tied to them stay frozen. LoRA (peft) adapts attention qkv/proj, the MLP
fc/proj and the MoE expert stacks (rank r per expert); default rank max(1, d_model // 32),
alpha 2 × rank.

Writes results/<ft-run-id>/ (a normal run directory: record.json with parent_run, metrics.jsonl,
checkpoint.pt holding the plain — for LoRA merged — weights, tokenizer/, adapter/ for LoRA).
Running the same command again continues an interrupted run from its last checkpoint (no --resume
needed) and reuses a finished one; under `torchrun --nproc_per_node=N -m harness finetune --parent ...`
the steps are data-parallel (DDP).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", "--parent", dest="run", required=True,
                        help="parent run directory (results/<run_id>) or run id (--parent: the same; use it under "
                             "torchrun, whose own --run-path swallows --run)")
    parser.add_argument("--data", required=True, help="downstream data spec, prompt/completion .jsonl, or task:NAME")
    parser.add_argument("--method", default="lora",
                        help="full, lora, or top:N (train only the top N blocks and the final norm); default lora")
    parser.add_argument("--rank", type=int, help="LoRA rank (default max(1, d_model // 32))")
    parser.add_argument("--alpha", type=float, help="LoRA alpha; scale = alpha / rank (default 2 x rank)")
    parser.add_argument("--budget", type=float, help="fine-tuning FLOPs (default: nano 2e10, micro 2e12)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the size's pre-training lr, x3 for LoRA)")
    parser.add_argument("--batch-tokens", type=int, help="tokens per optimizer step")
    parser.add_argument("--micro-batch", type=int, help="sequences per forward pass")
    parser.add_argument("--seq-len", type=int, help="sequence length (default: the parent's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the adapter init, batch order and dropout")
    parser.add_argument("--checkpoint-interval", type=int, help="checkpoint every N steps (default: 4 per run)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0,
                        help="also checkpoint at least this often, in minutes of wall time (default 10)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), help="default: chosen per device")
    parser.add_argument("--force", action="store_true", help="fine-tune again even if a finished run exists")


def spec_from_args(args: argparse.Namespace):
    from harness.training.finetune import FinetuneSpec
    from harness.runs.spec import Recipe

    recipe = Recipe(lr=args.lr, batch_tokens=args.batch_tokens, micro_batch_size=args.micro_batch, seq_len=args.seq_len)
    return FinetuneSpec(parent=args.run, data=args.data, method=args.method, rank=args.rank, alpha=args.alpha,
                        seed=args.seed, budget_flops=args.budget, recipe=recipe,
                        checkpoint_interval=args.checkpoint_interval, checkpoint_minutes=args.checkpoint_minutes,
                        device=args.device, dtype=args.dtype)


def main(args: argparse.Namespace) -> int:
    from harness.data.pairs import check_task_name
    from harness.training.finetune import finetune

    check_task_name(args.data)  # a misspelt task is named before any default (budget, lr) is looked up
    result = finetune(spec_from_args(args), force=args.force)
    r = result.record
    what = "reused" if result.reused else r["status"]
    print(f"{what}: {result.run_dir} ({r['finetune']['method']} of {r['parent_run']}; "
          f"{r['trainable_params']:,} of {r['total_params']:,} parameters trainable = {100 * r['fraction_trainable']:.2f} %; "
          f"{r['flops_used']:.3g} of {r['budget_flops']:.3g} FLOPs in {r['steps']} steps)")
    for name in ("val_loss", "val_accuracy", "val_bpb", "excess_loss"):
        if f"{name}_before" in r and f"{name}_after" in r:
            print(f"  {name}: {r[f'{name}_before']:.4f} before → {r[f'{name}_after']:.4f} after")
    return 0 if r["status"] == "ok" else 130
