"""Regression gate: retrain gpt1..gpt4 at nano, evaluate the probes, compare with the committed baseline.

    python -m harness check                                  # against results/baselines/ci-cpu.json
    python -m harness check --archs gpt2 --set init_std=0.2  # a deliberately changed model: must FAIL
    python -m harness check --update                         # re-measure (seed 0 + 3 spread seeds), rewrite, print the diff
    python -m harness check --strict-perf                    # quiet machine: slower throughput or speed ratios FAIL

Each architecture is trained from scratch in a fresh temporary folder (fp32 on the CPU,
seed 0, the baseline's FLOP budget), evaluated on the harness probes (the baseline's
--limit), and compared: parameter counts and FLOPs per token (total and by component) and
the optimizer's parameter groups exactly; the losses and last learning rate of a short
deterministic run to a relative 1e-6; a short run stopped half-way and resumed equal to the
uninterrupted one; a short text run's split, tokenizer and bits per byte (group "text");
validation loss and probe metrics within the tolerance the baseline stores per metric (3 x
the seed-to-seed std measured by --update, or a small floor); throughput, as a ratio to a reference matmul
timed in the same process, only warns unless --strict-perf. With --speed (implied by
--strict-perf) the speed ratios of harness/speed_ratios.py (banded vs dense attention, MoE
per active FLOP, packed evaluation vs one request per forward; one thread, about 25 s) are
judged the same way. Exit status: 0 pass,
1 regression or incomplete run, 2 bad input (missing, malformed or incompatible baseline).
"""

from __future__ import annotations

import argparse
import sys

from harness.cli import add_set_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", default=None,
                        help="baseline file (default results/baselines/ci-cpu.json)")
    parser.add_argument("--update", action="store_true",
                        help="re-measure and rewrite the baseline atomically, print what changed")
    parser.add_argument("--strict-perf", action="store_true",
                        help="a throughput or speed-ratio regression fails the check (default: a warning); "
                             "implies --speed")
    parser.add_argument("--speed", action="store_true",
                        help="also time the speed ratios of harness/speed_ratios.py (about 25 s); with --update, "
                             "re-measure them (else the baseline keeps its old ones)")
    parser.add_argument("--archs", help="comma-separated subset of the baseline's groups: architectures, and 'text' "
                                         "(the text run)")
    add_set_argument(parser, help="override a model config field on every architecture (to test the gate)")
    parser.add_argument("--workdir", help="keep runs and caches here (default: a fresh temporary folder)")
    update = parser.add_argument_group("with --update (a check always uses the baseline's settings)")
    update.add_argument("--budget", type=float, help="training FLOPs per run (default 2e11)")
    update.add_argument("--eval-limit", type=int, help="documents per probe task (default 100)")
    update.add_argument("--spread-seeds", type=int, help="extra seeds measured for the tolerances (default 3)")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    from harness import check
    from architectures.config import parse_overrides

    baseline = args.baseline or str(check.DEFAULT_BASELINE)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()] if args.archs else None
    overrides = parse_overrides(args.set)
    if args.update:
        if overrides:
            raise ValueError("--set makes a changed model; a baseline is made from the unmodified architectures, "
                             "so drop --set when using --update.")
        if archs:
            from architectures import available

            unknown = [a for a in archs if a not in available() and a != check.TEXT_GROUP]
            if unknown:
                raise ValueError(f"unknown architecture(s) {', '.join(unknown)}; known: {', '.join(available())}.")
        defaults = check.CheckSettings()
        if args.spread_seeds is not None and args.spread_seeds < 1:
            raise ValueError(f"--spread-seeds must be at least 1 (the tolerance needs a spread), got {args.spread_seeds}.")
        settings = check.CheckSettings(
            archs=tuple(a for a in archs if a != check.TEXT_GROUP) or defaults.archs if archs else defaults.archs,
            budget_flops=args.budget if args.budget is not None else defaults.budget_flops,
            eval_limit=args.eval_limit if args.eval_limit is not None else defaults.eval_limit,
            spread_seeds=tuple(range(1, 1 + args.spread_seeds)) if args.spread_seeds else defaults.spread_seeds,
        )
        command = "python -m harness " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["check"] else "python -m harness check --update"
        new, diff = check.update_baseline(baseline, settings, archs=archs, workdir=args.workdir, command=command,
                                          speed=args.speed, log=_log)
        print(f"wrote {baseline} ({new['produced']['wall_s']:.0f} s); changes:")
        print(diff)
        return 0
    for flag, value in (("--budget", args.budget), ("--eval-limit", args.eval_limit), ("--spread-seeds", args.spread_seeds)):
        if value is not None:
            raise ValueError(f"{flag} only applies with --update; a check repeats the baseline's own settings.")
    result = check.run_check(baseline, archs=archs, overrides=overrides, strict_perf=args.strict_perf,
                             speed=args.speed or args.strict_perf, workdir=args.workdir, log=_log)
    if result.rows:
        print(result.table())
    for note in result.notes:
        print(f"note: {note}")
    for error in result.errors.values():
        print(f"error: incomplete run: {error}", file=sys.stderr)
    if any(row.failed and row.direction is check.Direction.BETTER for row in result.rows):
        print("note: a metric improved beyond the seed spread; if the change is intended, refresh the baseline "
              "with `python -m harness check --update` and commit it with the change.")
    print(result.summary())
    return 0 if result.passed else 1
