"""Train and evaluate several architectures at the same FLOP budget, then write a report.

    python -m harness compare --archs gpt1,gpt2,gpt3,gpt4 --size nano --budget 2e11 --seeds 2
    python -m harness compare --archs gpt2,gpt3 --size micro --budget 3e13 --seeds 3 \\
        --data ../shared/data/corpora/tinyshakespeare.txt --name shakespeare
    # isoFLOP (Chinchilla approach 2): several sizes per architecture at each budget
    python -m harness compare --archs gpt2,gpt4 --size nano --widths 32,64,96,128 --budget 1e12,3e12 --seeds 2

Every architecture trains at the same budget (training FLOPs, 2 per multiply-add), on the
same data in the same order, with the same tokenizer and recipe; seeds 0..N-1 each. Runs
already in results/ (same resolved config and seed → same run id) are reused and an
interrupted one resumes from its checkpoint, so re-running the command continues a sweep.
The run ids go to reports/<name>/runs.json, each run's compact data (record, config, thinned
curves) to reports/<name>/data/runs/ as it lands, and the report (report.md, figures/) is
written next to it from that data; `python -m harness report <name>` regenerates it byte for
byte, with or without results/.

Model variants: --sizes names presets (e.g. nano,micro); --widths overrides d_model
(n_layer and n_head stay at the preset's values, so each width must be divisible by
n_head: 4 for nano, 8 for micro; d_ff follows as 4·d_model). Both may be combined (every
size × every width). More than one variant makes an isoFLOP sweep: the report fits loss
against log(active params) per architecture and budget and compares the optima.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from harness.cli.run import add_run_arguments, eval_options_from_args, recipe_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archs", default="gpt1,gpt2,gpt3,gpt4", help="comma-separated architectures (default: all four)")
    add_run_arguments(parser, sweep=True)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per model: 0..N-1 (default 1; ≥ 2 for significance)")
    parser.add_argument("--sizes", help="comma-separated size presets (isoFLOP over presets); overrides --size")
    parser.add_argument("--widths", help="comma-separated d_model values (isoFLOP over widths at each size)")
    parser.add_argument("--name", help="report folder under reports/ (default: from the sizes and budgets)")
    parser.add_argument("--reference", help="architecture the others are tested against (default gpt2)")
    parser.add_argument("--match", choices=("compute", "tokens"), default="compute",
                        help="hold compute equal (default: each run trains the steps its budget buys) or tokens "
                             "(every run trains the reference's compute-matched tokens)")
    parser.add_argument("--dry-run", action="store_true", help="list the planned runs (to train or reused) and exit")
    parser.add_argument("--finetune-data", help="adaptation stage: downstream data spec, prompt/completion .jsonl or "
                        "task:NAME; every pre-trained run is then fine-tuned (see `harness finetune`)")
    parser.add_argument("--finetune-budget", type=float, help="fine-tuning FLOPs per run, the same for every arch and method")
    parser.add_argument("--finetune-methods", default="full,lora", help="comma-separated: full, lora, top:N (default full,lora)")
    parser.add_argument("--finetune-rank", type=int, help="LoRA rank (default max(1, d_model // 32))")
    parser.add_argument("--require-clean", action="store_true",
                        help="refuse to train from a checkout with uncommitted changes (for reports you will commit)")


def provenance_ok(require_clean: bool) -> bool:
    """Warn loudly (or refuse with ``--require-clean``) when the checkout has uncommitted changes."""
    from harness.runs.records import git_commit

    commit = git_commit() or ""
    if not commit.endswith("-dirty"):
        return True
    what = (f"the checkout has uncommitted changes ({commit}): these runs cannot be reproduced from a commit, "
            "and their reports will say so")
    if require_clean:
        print(f"error: {what}; commit or stash them first (--require-clean).", file=sys.stderr)
        return False
    print(f"WARNING: {what}. Commit first (or pass --require-clean to refuse) for a report you will publish.",
          file=sys.stderr)
    return True


def sweep_options_from_args(args: argparse.Namespace):
    """The command line as ``harness.sweeps.compare.SweepOptions`` (lists parsed and checked)."""
    from architectures.config import parse_overrides
    from harness.sweeps.compare import SweepOptions, parse_archs, parse_budgets, parse_sizes, parse_widths

    archs = parse_archs(args.archs)
    sizes = parse_sizes(args.sizes) if args.sizes else [args.size]
    widths = parse_widths(args.widths)
    budgets = parse_budgets(args.budget)
    return SweepOptions(
        archs=tuple(archs), seeds=args.seeds, sizes=tuple(sizes), widths=tuple(widths) if widths else None,
        budgets=tuple(budgets) if budgets else None, data=args.data, vocab_size=args.vocab_size,
        recipe=recipe_from_args(args), overrides=parse_overrides(args.set), device=args.device, dtype=args.dtype,
        compile=False if args.no_compile else None, parallel=args.parallel,
        activation_checkpointing=args.activation_checkpointing, reference=args.reference,
        attention_flops=args.attention_flops, match=args.match,
        evaluation=eval_options_from_args(args, redo_done=False), force=args.force, wait=args.wait,
    )


def adaptation_options_from_args(args: argparse.Namespace):
    """The ``--finetune-*`` options as ``harness.sweeps.adaptation.AdaptationOptions``, None without --finetune-data."""
    from harness.sweeps.adaptation import AdaptationOptions, parse_methods

    if not args.finetune_data:
        extra = [name for name in ("finetune_budget", "finetune_rank") if getattr(args, name) is not None]
        if extra:
            raise ValueError(f"--{extra[0].replace('_', '-')} needs --finetune-data SPEC (the downstream data).")
        return None
    return AdaptationOptions(args.finetune_data, tuple(parse_methods(args.finetune_methods)), args.finetune_budget,
                             args.finetune_rank)


ALWAYS_WRITTEN = ("archs", "size", "data", "budget", "seeds")


def canonical_command(args: argparse.Namespace, name: str) -> str:
    """The command line that reproduces this sweep: the sweep's shape (archs, size, data, budget,
    seeds) always, then every other option that differs from its default."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    words = ["python", "-m", "harness", "compare"]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "name", "dry_run", "wait"):
            continue
        value = getattr(args, action.dest, action.default)
        if action.dest == "size" and getattr(args, "sizes", None):
            continue
        explicit = action.dest in ALWAYS_WRITTEN  # spelled out even at their defaults, which may change
        if value is None or (value == action.default and not explicit):
            continue
        option = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            words.append(option)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [option, str(item)]
        else:
            words += [option, str(value)]
    words += ["--name", name]
    return " ".join(shlex.quote(word) for word in words)


def main(args: argparse.Namespace) -> int:
    from harness.sweeps.compare import default_name, plan_sweep, run_sweep, runs_payload
    from harness.training.distributed import is_main_process
    from harness.io import check_writable
    from harness.paths import reports_dir, results_dir
    from harness.runs.run_dir import planned_action
    from harness.runs.compact import sync_runs
    from harness.sweeps.runs_file import validate_name, write_runs_file

    options = sweep_options_from_args(args)
    plan = plan_sweep(options)
    adaptation = adaptation_options_from_args(args)
    name = validate_name(args.name or default_name(plan))
    root = results_dir()
    if args.dry_run:
        for spec in plan.specs:
            run_id = spec.run_id()
            state = planned_action(root / run_id)
            amount = (f"{spec.train_tokens} tokens (token-matched)" if spec.train_tokens
                      else f"budget {spec.budget_flops:.3g} FLOPs ({spec.attention_flops} attention)")
            print(f"{state}\t{run_id}\t{amount}")
        print(f"{len(plan.specs)} runs; report → {reports_dir() / name}", file=sys.stderr)
        return 0
    if not provenance_ok(args.require_clean):
        return 2
    if is_main_process():
        print(
            f"compare {name}: {len(plan.archs)} architecture(s) x {len(plan.variants)} model(s) x "
            f"{len(plan.budgets)} budget(s) x {plan.seeds} seed(s) = {len(plan.specs)} runs (results in {root})",
            file=sys.stderr,
        )
        check_writable(root)  # fail now, not after the sweep has trained, if the outputs cannot be written
        check_writable(reports_dir() / name)
    report_dir = reports_dir() / name
    outcome = run_sweep(plan, options, root, on_run=lambda run_id: sync_runs(root, report_dir, [run_id])
                        if is_main_process() else None)
    if not is_main_process():  # under torchrun only rank 0 writes the runs file and the report
        return 0
    extra = {}
    if adaptation is not None and not outcome.interrupted:
        from harness.sweeps.adaptation import run_adaptation

        extra["finetune"] = run_adaptation(outcome.run_ids, adaptation, root).to_dict()
        outcome.failed.update(extra["finetune"]["failed"])
    command = canonical_command(args, name)
    write_runs_file(reports_dir() / name, runs_payload(plan, outcome, command, name, extra))
    return _finish(plan, outcome, name, command)


def _finish(plan, outcome, name: str, command: str) -> int:
    """Print the sweep's tally; write the report unless the sweep was interrupted. The exit status."""
    print(
        f"{len(outcome.trained)} trained, {len(outcome.reused)} reused, {len(outcome.evaluated)} evaluated, "
        f"{len(outcome.failed)} failed",
        file=sys.stderr,
    )
    if outcome.interrupted:
        print(f"interrupted at {outcome.interrupted}; running the same command again continues it from its last "
              f"checkpoint (no --resume needed): {command}", file=sys.stderr)
        return 130
    from harness.reporting.report import build_report

    report = build_report([name], reference=plan.reference)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.path)
    return 1 if outcome.failed else 0
