"""Evaluate a trained run with lm-eval: probes and standard tasks, metrics into its record.

Writes lm-eval's results to results/<run_id>/lm_eval_results/<time>_<k>shot_<limit>_<tasks>.json
(one file per call; none is overwritten) and merges each metric (value, stderr, n, task
version) into record.json under "evaluation". With --num-fewshot k (k > 0) the record keys
are "<task>@<k>shot", so zero- and few-shot results of one task stay side by side (a report
shows both). Of two results of one key, the larger n stays in "evaluation" and the other is
kept under "evaluation_kept_aside" (a line says so): a --limit run never replaces a full one.

Tasks: the harness probes (harness_recall_16, harness_recall_48, harness_recall_64,
harness_recall_128, harness_copy, harness_facts, harness_heldout; "harness_probes" for all of them; synthetic
runs only), lm-eval's standard tasks (lambada_openai, hellaswag, piqa, arc_easy,
arc_challenge, winogrande, boolq, openbookqa, wikitext) and any other lm-eval task name.
Default: the probes for synthetic data, wikitext,lambada_openai for text.

Offline, standard tasks read local jsonl copies: --task-data DIR (e.g. ../shared/data/lm_eval;
with HF_HUB_OFFLINE set, $HARNESS_DATA_DIR/lm_eval is used when it has them).

Example:
  python -m harness eval --run results/<run_id> --tasks piqa,wikitext --limit 100 --task-data ../shared/data/lm_eval
  python -m harness eval --run results/<run_id> --tasks arc_easy --num-fewshot 5 --task-data ../shared/data/lm_eval
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory (results/<run_id>) or run id")
    parser.add_argument("--tasks", help="comma-separated task names (default: by the run's data kind)")
    parser.add_argument("--limit", type=int, help="evaluate at most N documents per task")
    parser.add_argument("--num-fewshot", type=int, default=0, help="few-shot examples per prompt (default 0)")
    parser.add_argument("--task-data", help="folder with local jsonl copies of the standard tasks' data")
    parser.add_argument("--batch-size", type=int, default=16, help="requests per forward pass (default 16)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="score the last checkpoint of an interrupted or failed run (refused otherwise)")
    parser.add_argument("--verbose", action="store_true",
                        help="show lm-eval's progress bars and warnings even when the output is not a terminal")
    parser.add_argument("--wait", action="store_true",
                        help="if another process is using the run, wait for it instead of exiting (code 2)")


def main(args: argparse.Namespace) -> int:
    from harness.evaluation.run import check_limit, evaluate_run, latest_results_file
    from harness.reporting.run_summary import evaluation_lines
    from harness.runs.records import record_path
    from harness.runs.run_dir import resolve_run_dir

    check_limit(args.limit)  # before paying for the imports and the model
    if args.num_fewshot < 0:
        raise ValueError(f"--num-fewshot must be 0 or more examples per prompt, got {args.num_fewshot}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}.")
    run_dir = resolve_run_dir(args.run)
    summary = evaluate_run(
        run_dir,
        tasks=args.tasks,
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        task_data=args.task_data,
        batch_size=args.batch_size,
        device=args.device,
        allow_partial=args.allow_partial,
        wait=args.wait,
        verbose=True if args.verbose else None,
    )
    for line in evaluation_lines(summary):
        print(line)
    print(f"→ {latest_results_file(run_dir)}, evaluation merged into {record_path(run_dir)}")
    return 0
