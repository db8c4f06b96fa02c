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
The run ids and each run's state go to reports/<name>/runs.json (rewritten as each run
ends), and the report (report.md, figures/) is written next to it once every run has an
outcome; `python -m harness report <name>` regenerates it from the records.

Where the runs execute (the results do not depend on it; a finished run is reused by id
whatever ran it): --executor inline (default, one after another), local --jobs N (N worker
processes, each with cores/N threads and, on a multi-GPU machine, its own GPUs),
submitit-local, or slurm (a job array through submitit: --slurm-partition, --slurm-time,
--slurm-gpus, --slurm-account, --slurm-array-parallelism). A failed run is tried again
--retries times (default 1). `python -m harness sweep status <name>` shows each run's state.

Model variants: --sizes names presets (e.g. nano,micro); --widths overrides d_model
(n_layer and n_head stay at the preset's values, so each width must be divisible by
n_head: 4 for nano, 8 for micro; d_ff follows as 4·d_model). Both may be combined (every
size × every width). More than one variant makes an isoFLOP sweep: the report fits loss
against log(active params) per architecture and budget and compares the optima.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli.run import add_run_arguments, eval_options_from_args, parse_train_probes, recipe_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archs", default="gpt1,gpt2,gpt3,gpt4", help="comma-separated architectures (default: all four)")
    add_run_arguments(parser, sweep=True)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per model: 0..N-1 (default 1; ≥ 2 for significance)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first seed: seeds FIRST..FIRST+N-1 are trained (default 0)")
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
    add_executor_arguments(parser)


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
        archs=tuple(archs), seeds=args.seeds, first_seed=args.first_seed, sizes=tuple(sizes),
        widths=tuple(widths) if widths else None,
        budgets=tuple(budgets) if budgets else None, data=args.data, vocab_size=args.vocab_size,
        recipe=recipe_from_args(args), overrides=parse_overrides(args.set), device=args.device, dtype=args.dtype,
        compile=False if args.no_compile else None, parallel=args.parallel,
        activation_checkpointing=args.activation_checkpointing, reference=args.reference,
        attention_flops=args.attention_flops, match=args.match, train_probes=parse_train_probes(args.train_probes),
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


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the runs execute (``harness.sweeps.executors``): shared by ``compare`` and ``study``."""
    group = parser.add_argument_group("executor (where the runs execute; results do not depend on it)")
    group.add_argument("--executor", default="inline", choices=("inline", "local", "submitit-local", "slurm"),
                       help="inline: one after another in this process (default); local: --jobs worker processes; "
                            "submitit-local: submitit's local executor; slurm: a Slurm job array through submitit")
    group.add_argument("--jobs", type=int, default=1, help="local / submitit-local: runs at once (default 1)")
    group.add_argument("--threads", type=int, help="torch threads per run (default: CPU cores / --jobs for local)")
    group.add_argument("--gpus-per-run", type=int, default=1,
                       help="local: GPUs per run on a multi-GPU machine (more than 1: torchrun); slurm: see --slurm-gpus")
    group.add_argument("--retries", type=int, default=1, help="attempts after a failed one before a run is reported "
                                                              "failed (default 1)")
    group.add_argument("--slurm-partition", help="Slurm partition (or `slurm: {partition: ...}` in a study file)")
    group.add_argument("--slurm-time", type=int, dest="slurm_time_min", help="Slurm time limit per run, minutes (default 60)")
    group.add_argument("--slurm-gpus", type=int, dest="slurm_gpus_per_run", help="GPUs per run on Slurm (default 0)")
    group.add_argument("--slurm-account", help="Slurm account to charge")
    group.add_argument("--slurm-array-parallelism", type=int, help="runs of the job array at once (default 32)")
    group.add_argument("--slurm-cpus", type=int, dest="slurm_cpus_per_task", help="CPUs per Slurm task")


def executor_options_from_args(args: argparse.Namespace, study_slurm: dict | None = None, source: str = "the study file"):
    """``--executor`` … as ``ExecutorOptions`` (``--retries`` checked too); the ``--slurm-*`` options override the
    study file's ``slurm:``."""
    from harness.sweeps.executors import ExecutorOptions, SlurmOptions
    from harness.sweeps.runner import check_retries

    check_retries(args.retries)
    slurm = SlurmOptions.from_dict(study_slurm, source).merged(
        {key: getattr(args, f"slurm_{key}") for key in SlurmOptions.KEYS})
    return ExecutorOptions(args.executor, args.jobs, args.threads, args.gpus_per_run, slurm)


def main(args: argparse.Namespace) -> int:
    from harness.paths import reports_dir, results_dir
    from harness.sweeps.command import compare_command
    from harness.sweeps.compare import default_name, plan_sweep
    from harness.sweeps.driver import execute_sweep, planned_lines
    from harness.sweeps.runs_file import validate_name
    from harness.training.distributed import env_world_size, is_main_process

    options = sweep_options_from_args(args)
    plan = plan_sweep(options)
    adaptation = adaptation_options_from_args(args)
    executor = executor_options_from_args(args)
    name = validate_name(args.name or default_name(plan))
    if args.dry_run:
        print("\n".join(planned_lines(plan, results_dir())))
        print(f"{len(plan.specs)} runs; report → {reports_dir() / name}", file=sys.stderr)
        return 0
    if env_world_size() > 1 and executor.kind != "inline":
        raise ValueError(f"under torchrun only --executor inline works; for multi-GPU runs with --executor "
                         f"{executor.kind} start `harness compare` without torchrun and give --gpus-per-run N.")
    if not provenance_ok(args.require_clean):
        return 2
    if is_main_process():
            print(f"compare {name}: {len(plan.archs)} architecture(s) x {len(plan.variants)} model(s) x "
              f"{len(plan.budgets)} budget(s) x {plan.seeds} seed(s) = {len(plan.specs)} runs on the {executor.kind} "
              f"executor (results in {results_dir()})", file=sys.stderr)
    command = compare_command(options, name, adaptation)
    done = execute_sweep(plan, options, name, command, executor, retries=args.retries, adaptation=adaptation)
    if not is_main_process():  # under torchrun only rank 0 writes the runs file and the report
        return 0
    return finish(done, command)


def finish(done, command: str) -> int:
    """Print the sweep's tally and the report's path (or how to resume); the exit status."""
    from harness.sweeps.driver import tally

    outcome = done.outcome
    print(tally(outcome), file=sys.stderr)
    if outcome.interrupted:
        print(f"interrupted at {outcome.interrupted}; running the same command again continues it from its last "
              f"checkpoint (no --resume needed): {command}", file=sys.stderr)
        return 130
    for note in done.report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(done.report.path)
    return 1 if outcome.failed else 0
