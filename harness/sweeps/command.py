"""The ``harness compare`` command line that reproduces a sweep, written from its typed options.

The sweep's shape (archs, size, data, budget, seeds) is always spelled out, every other option
only when it differs from its default; where the runs execute (``--executor``, ``--jobs`` …) is
left out, since a run's result does not depend on it. Recipe fields without a ``compare`` option
(warm-up, β, …: settable in a study file only) and per-architecture rates (``lr_by_arch``: a study's
tuned rates, in its ``data/tuning.json``) are not written. Stored in ``runs.json`` and shown in reports.
"""

from __future__ import annotations

import shlex

from harness.runs.spec import Recipe
from harness.sweeps.compare import SweepOptions, format_budget

RECIPE_FLAGS = (("lr", "--lr"), ("batch_tokens", "--batch-tokens"), ("micro_batch_size", "--micro-batch"),
                ("seq_len", "--seq-len"))


def budget_text(value: float) -> str:
    """1e12 → ``1e12``; a budget three significant digits cannot hold is written in full."""
    short = format_budget(value)
    return short if float(short) == value else repr(float(value))


def compare_command(options: SweepOptions, name: str, adaptation=None) -> str:
    """``python -m harness compare …`` for ``options`` (and ``adaptation``, an ``AdaptationOptions``)."""
    words = ["python", "-m", "harness", "compare", "--archs", ",".join(options.archs)]
    if len(options.sizes) == 1:
        words += ["--size", options.sizes[0]]
    words += ["--data", options.data]
    if options.budgets:
        words += ["--budget", ",".join(budget_text(b) for b in options.budgets)]
    if options.vocab_size is not None:
        words += ["--vocab-size", str(options.vocab_size)]
    defaults = Recipe()
    for field, flag in RECIPE_FLAGS:
        value = getattr(options.recipe, field)
        if value != getattr(defaults, field):
            words += [flag, str(value)]
    for key, value in options.overrides.items():
        words += ["--set", f"{key}={value}"]
    for value, flag in ((options.device, "--device"), (options.dtype, "--dtype")):
        if value is not None:
            words += [flag, value]
    if options.compile is False:
        words.append("--no-compile")
    words += _evaluation_words(options.evaluation)
    if options.force:
        words.append("--force")
    words += ["--seeds", str(options.seeds)]
    if options.first_seed:
        words += ["--first-seed", str(options.first_seed)]
    if len(options.sizes) > 1:
        words += ["--sizes", ",".join(options.sizes)]
    if options.widths:
        words += ["--widths", ",".join(map(str, options.widths))]
    if options.reference:
        words += ["--reference", options.reference]
    if options.attention_flops != SweepOptions.attention_flops:
        words += ["--attention-flops", options.attention_flops]
    if options.match != SweepOptions.match:
        words += ["--match", options.match]
    if options.train_probes:
        words += ["--train-probes", ",".join(map(str, options.train_probes))]
    if adaptation is not None:
        words += _adaptation_words(adaptation)
    words += ["--name", name]
    return " ".join(shlex.quote(word) for word in words)


def _evaluation_words(evaluation) -> list[str]:
    words = []
    if evaluation.tasks:
        words += ["--tasks", ",".join(evaluation.tasks)]
    if evaluation.limit is not None:
        words += ["--eval-limit", str(evaluation.limit)]
    if evaluation.task_data:
        words += ["--task-data", evaluation.task_data]
    if not evaluation.enabled:
        words.append("--no-eval")
    return words


def _adaptation_words(adaptation) -> list[str]:
    from harness.training.finetune import METHODS

    words = ["--finetune-data", adaptation.data]
    if adaptation.budget_flops is not None:
        words += ["--finetune-budget", str(adaptation.budget_flops)]
    if tuple(adaptation.methods) != tuple(METHODS):
        words += ["--finetune-methods", ",".join(adaptation.methods)]
    if adaptation.rank is not None:
        words += ["--finetune-rank", str(adaptation.rank)]
    return words
