"""Train one architecture at a FLOP budget, validate, evaluate, and write its record.

    python -m harness run --arch gpt3                       # micro size, synthetic data, default budget
    python -m harness run --arch gpt2 --data ../shared/data/corpora/tinyshakespeare.txt --budget 3e13
    torchrun --nproc_per_node=2 -m harness run --arch gpt2  # data parallel (gloo on CPU, NCCL on CUDA)
    torchrun --nproc_per_node=2 -m harness run --arch gpt2 --parallel fsdp2   # sharded (FSDP2)

Outputs go to results/<run_id>/ (config.json, metrics.jsonl, record.json, checkpoint.pt,
tokenizer/). The same spec and seed give the same run id: a finished run is reused
(--force retrains); an interrupted one (Ctrl-C, SIGTERM, a killed process): running the same
command again continues it from its last checkpoint (no --resume needed). It ends with a
summary: status, training, loss, excess loss or bits per byte beside the unigram baseline,
the evaluation (n = documents scored) and where the record is.
Budgets are training FLOPs (2 per multiply-add, training = 3 x forward).

The run directory is locked (results/<run_id>/run.lock) while this runs: the same command
started again meanwhile exits with code 2 naming this process's PID, or waits (--wait).
Exit codes: 0 done, 1 failed (the record says why), 2 bad input or run in use, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from architectures.config import parse_overrides
from harness.cli import add_set_argument
from harness.paths import results_dir


def add_run_arguments(parser: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """Arguments shared by ``run`` and ``compare`` (``sweep``: compare's form, without --arch and
    --seed, and --budget a comma-separated list)."""
    if not sweep:
        parser.add_argument("--arch", default="gpt3", help="architecture (see `harness list`; default gpt3)")
        parser.add_argument("--seed", type=int, default=0, help="seed for init, data order and dropout (default 0)")
    parser.add_argument("--size", default="micro", help="size preset (default micro; nano for seconds-long tests)")
    parser.add_argument(
        "--data",
        default="synthetic",
        help="synthetic (default, built in), a .txt/.jsonl file or directory, hf:NAME[:CONFIG][@SPLIT], "
             "or a folder `harness data prepare` wrote",
    )
    if sweep:
        parser.add_argument("--budget", metavar="FLOPS[,FLOPS...]",
                            help="training budget(s) in FLOPs (2 per multiply-add), e.g. 3e13 or 1e12,3e12 for an "
                                 "isoFLOP sweep at several budgets (default: the size's default budget)")
    else:
        parser.add_argument("--budget", type=float, help="training budget in FLOPs (2 per multiply-add), e.g. 3e13")
        parser.add_argument("--tokens", type=int, help="train this many tokens instead of a FLOP budget "
                                                        "(a token-matched control; whole steps, never more)")
    parser.add_argument("--attention-flops", choices=("causal", "full"), default="causal",
                        help="how the budget counts attention: causal (default) = the score entries each layer's mask "
                             "admits, dense and banded alike; full = PaLM's count (dense at all T keys per query)")
    parser.add_argument("--vocab-size", type=int, help="BPE vocabulary for text data (default 4096)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: per size, same for every arch)")
    parser.add_argument("--batch-tokens", type=int, help="tokens per optimizer step (gradient accumulation fills it)")
    parser.add_argument("--micro-batch", type=int, help="sequences per forward pass")
    parser.add_argument("--seq-len", type=int, help="training sequence length (default: the context)")
    add_set_argument(parser)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), help="default: chosen per device (see `harness bench`)")
    parser.add_argument("--no-compile", action="store_true", help="do not torch.compile on CUDA")
    parser.add_argument("--parallel", choices=("single", "ddp", "fsdp2"),
                        help="how the model spreads over torchrun's processes: ddp (full replicas) or fsdp2 (parameters, "
                             "gradients and AdamW state sharded; sharded checkpoints); default single, ddp under torchrun")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute each block's activations in the backward pass (less memory, ~1/3 more compute)")
    parser.add_argument("--train-probes", metavar="D[,D...]",
                        help="synthetic data: recall distances (tokens) whose lm-eval probe items (the first 100 of "
                             "harness_recall_<d>) are scored at every validation point, e.g. 16,64 "
                             "(metrics.jsonl: probe/recall_<d>/acc)")
    parser.add_argument("--tasks", help="evaluation tasks after training (comma-separated; default per data kind)")
    parser.add_argument("--eval-limit", type=int, help="evaluate at most N documents per task")
    parser.add_argument("--task-data", help="folder with local copies of standard task data (offline)")
    parser.add_argument("--no-eval", action="store_true", help="skip lm-eval evaluation after training")
    parser.add_argument("--verbose", action="store_true",
                        help="show lm-eval's progress bars and warnings even when the output is not a terminal")
    parser.add_argument("--force", action="store_true",
                        help="retrain even if a finished run with this id exists; allow plans of over 1e7 steps")
    parser.add_argument("--wait", action="store_true",
                        help="if another process is running the same run, wait for it instead of exiting (code 2)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="also continue from a checkpoint whose record is missing (an interrupted run with its "
                             "record continues without it: running the same command again continues it)")
    parser.add_argument("--checkpoint-interval", type=int, help="checkpoint every N steps (default: 4 per run)")
    parser.add_argument("--eval-interval", type=int,
                        help="quick validation every N steps (default: 10 points per run, and the last step)")


def recipe_from_args(args: argparse.Namespace):
    """The recipe fields the command line sets (the rest: defaults, resolved per run)."""
    from harness.runs.spec import Recipe

    return Recipe(lr=args.lr, batch_tokens=args.batch_tokens, micro_batch_size=args.micro_batch, seq_len=args.seq_len)


def eval_options_from_args(args: argparse.Namespace, *, redo_done: bool):
    """``--tasks``, ``--eval-limit``, ``--task-data``, ``--no-eval`` as ``EvalOptions`` (checked now, not after training)."""
    from harness.runs.pipeline import EvalOptions

    return EvalOptions(tasks=tuple(args.tasks.split(",")) if args.tasks else None, limit=args.eval_limit,
                       task_data=args.task_data, enabled=not args.no_eval, redo_done=redo_done,
                       verbose=True if args.verbose else None)


def parse_train_probes(text: str | None) -> tuple[int, ...]:
    """``--train-probes 16,64`` → ``(16, 64)``; absent → ``()`` (no probes during training)."""
    try:
        return tuple(int(word) for word in (text or "").split(",") if word.strip())
    except ValueError:
        raise ValueError(f"--train-probes takes comma-separated recall distances in tokens, e.g. 16,64; "
                         f"got {text!r}.") from None


def spec_from_args(args: argparse.Namespace):
    """The command line as a resolved ``RunSpec`` (a bad value is one ``ValueError`` sentence)."""
    from harness.runs.spec import RunSpec

    return RunSpec(
        arch=args.arch,
        size=args.size,
        data=args.data,
        vocab_size=args.vocab_size,
        seed=args.seed,
        budget_flops=args.budget,
        attention_flops=args.attention_flops,
        train_tokens=args.tokens,
        train_probes=parse_train_probes(args.train_probes),
        recipe=recipe_from_args(args),
        overrides=parse_overrides(args.set),
        checkpoint_interval=args.checkpoint_interval,
        eval_interval=args.eval_interval,
        device=args.device,
        dtype=args.dtype,
        compile=False if args.no_compile else None,
        parallel=args.parallel,
        activation_checkpointing=args.activation_checkpointing,
    )


def warning_lines(record: dict) -> list[str]:
    """The record's ``warnings`` (e.g. a final loss above the unigram baseline), one line each."""
    return [f"warning: {warning}" for warning in record.get("warnings") or []]


def main(args: argparse.Namespace) -> int:
    from harness.training.distributed import is_main_process
    from harness.io import WriteFailed
    from harness.runs.pipeline import run
    from harness.reporting.run_summary import run_summary
    from harness.runs.records import load_record
    from harness.runs.lock import RunLocked
    from harness.runs.run_dir import resume_rule
    from harness.training.trainer import TrainingFailed

    try:
        # a re-run with --tasks evaluates a reused run again (e.g. at another --eval-limit)
        eval_options = eval_options_from_args(args, redo_done=True)
        outcome = run(spec_from_args(args), eval_options, results_dir(), resume=args.resume, force=args.force,
                      wait=args.wait)
    except TrainingFailed as failure:
        # under torchrun: rank 0 reports; another rank only when its own error ended the run
        if is_main_process() or failure.raised_here:
            print(f"error: {failure}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError, RunLocked, WriteFailed):
        if is_main_process():
            raise  # bad input, a busy run or a failed write: one sentence, printed once (by rank 0)
        return 2
    interrupted = outcome.status == "interrupted"
    if not is_main_process():  # under torchrun only rank 0 evaluates and prints
        return 130 if interrupted else 0
    if outcome.reused:
        print(f"{outcome.run_dir} already holds this finished run; reusing it (--force retrains).", file=sys.stderr)
    if interrupted:
        print(f"interrupted after step {outcome.record.get('steps')}: checkpoint saved in {outcome.run_dir}; "
              f"{resume_rule()}.")
        return 130
    record = load_record(outcome.run_dir)
    print(run_summary(record, outcome.run_dir, outcome.evaluation_error))
    for line in warning_lines(record):
        print(line)
    return 0
