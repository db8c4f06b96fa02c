"""Measuring: train an architecture from scratch and evaluate it (``harness.runs.pipeline``), as flat metrics.

Every run goes into a fresh temporary folder (results and caches, so no stale run, token
array or probe file is reused) unless ``workdir`` is given, with ``CheckSettings.threads``
torch threads; runs are always retrained. Derived metrics are left out
(``token_perplexity`` = exp(nll), ``excess_*`` = loss - a fixed floor) so each metric is an
independent fact. Throughput is a ratio to a reference matmul timed just before each run.
The speed ratios (``measure_speed``) are timed on one thread after the runs.

``measure_group`` adds, at the check seed, the deterministic metrics of a short run
(``harness.check.deterministic``) to an architecture's, and measures the text group
(``harness.check.text_run``). Folders under the workspace: ``results/`` (the gated runs),
``short/`` (the short runs), ``resume/`` (the resumed one), ``text/``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.check.deterministic import deterministic_metrics
from harness.check.errors import PartialRun
from harness.check.settings import (DATA_KEYS, DERIVED_METRICS, PERF_KEY, RECORD_EXACT_KEYS, REFERENCE_MATMUL,
                                    TEXT_GROUP, CheckSettings)
from harness.check.text_run import text_metrics
from harness.paths import temporary_environ
from harness.threads import torch_threads


@contextlib.contextmanager
def workspace(workdir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A folder for the check's runs and caches (fresh and temporary unless ``workdir``)."""
    if workdir is not None:
        root = Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        holder = contextlib.nullcontext(str(root))
    else:
        holder = tempfile.TemporaryDirectory(prefix="harness-check-")
    with holder as folder:
        root = Path(folder)
        with temporary_environ(HARNESS_RESULTS_DIR=str(root / "results"), HARNESS_CACHE_DIR=str(root / "cache")):
            yield root


def reference_matmul_flops_per_s(device: str = "cpu", dtype: str = "fp32") -> float:
    """A 1024² matmul in ``dtype`` timed now (best of 8 after warm-up), FLOP/s (2 per multiply-add)."""
    from harness.device import measured_peak_flops_per_s

    # refresh=True: measured in this process now, not read from a cache of another moment.
    return measured_peak_flops_per_s(device, dtype, size=REFERENCE_MATMUL, refresh=True)


def measure_run(
    arch: str,
    settings: CheckSettings,
    seed: int,
    results_dir: Path,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train ``arch`` at ``seed`` (always from scratch), evaluate the probes; flat {metric: value}."""
    from harness.runs.pipeline import EvalOptions, run
    from harness.runs.spec import RunSpec
    from harness.training.trainer import TrainingFailed

    spec = RunSpec(
        arch=arch, size=settings.size, data=settings.data, seed=seed, budget_flops=float(settings.budget_flops),
        overrides=dict(overrides or {}), device=settings.device, dtype=settings.dtype, compile=False,
    )
    evaluation = EvalOptions(tasks=tuple(settings.task_names()), limit=settings.eval_limit, quiet=True)
    reference = reference_matmul_flops_per_s(settings.device, settings.dtype)
    try:
        outcome = run(spec, evaluation, results_dir, force=True, progress=False)
    except TrainingFailed as failure:
        raise PartialRun(f"{arch} seed {seed}: {failure}") from None
    record = outcome.record
    if outcome.status != "ok":
        raise PartialRun(
            f"{arch} seed {seed}: training ended with status {outcome.status!r} "
            f"({record.get('error') or 'no reason given'}), so there is nothing to compare."
        )
    what = f"{arch} seed {seed}"
    metrics = {**_record_metrics(record, what), **_evaluation_metrics(outcome.evaluation or {}, settings, what)}
    metrics[PERF_KEY] = record["tokens_per_s"] * record["train_flops_per_token"] / reference
    metrics["_vocab_size"] = record["data"]["vocab_size"]
    metrics["_seq_len"] = record["seq_len"]
    if log:
        log(
            f"check: {what}: {record['steps']} steps in {outcome.train_s:.1f} s "
            f"({record['tokens_per_s']:.0f} tokens/s), evaluated in {outcome.eval_s:.1f} s, "
            f"val loss {record['final_val_loss']:.4f}"
        )
    return metrics


def _record_metrics(record: dict[str, Any], what: str) -> dict[str, float]:
    """The exact and data facts and the final validation loss, from the training record."""
    metrics: dict[str, float] = {}
    for key in RECORD_EXACT_KEYS + DATA_KEYS + ("final_val_loss",):
        if record.get(key) is None:
            raise PartialRun(f"{what}: the run's record has no {key!r}; the run is incomplete.")
        metrics[key] = record[key]
    return metrics


def _evaluation_metrics(evaluation: dict[str, Any], settings: CheckSettings, what: str) -> dict[str, float]:
    """``{"<task>.<metric>": value}`` for every probe task, derived metrics left out."""
    metrics: dict[str, float] = {}
    for task in settings.task_names():
        values = evaluation.get(task)
        if not values:
            raise PartialRun(f"{what}: the evaluation returned no metrics for {task}.")
        for name, entry in values.items():
            if name in DERIVED_METRICS:
                continue
            value = entry.get("value") if isinstance(entry, dict) else None
            if value is None:
                raise PartialRun(f"{what}: {task} metric {name} has no value.")
            metrics[f"{task}.{name}"] = float(value)
    return metrics


def measure_group(
    group: str,
    settings: CheckSettings,
    seed: int,
    root: Path,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One group's metrics at ``seed``: an architecture's run (plus, at the check seed, its deterministic
    metrics), or the text group's (``TEXT_GROUP``, check seed only)."""
    if group == TEXT_GROUP:
        metrics = text_metrics(settings, root / "text", overrides)
    else:
        metrics = measure_run(group, settings, seed, root / "results", overrides, log)
        if seed == settings.seed:
            metrics.update(deterministic_metrics(group, settings, root / "short", overrides))
    if log and seed == settings.seed:
        log(f"check: {group}: short run val loss {metrics['short_val_loss']:.8f}, {metrics['_short_steps']} steps")
    return metrics


def measure(
    settings: CheckSettings,
    seeds: list[int],
    *,
    archs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    workdir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[int, dict[str, float]]]:
    """{group: {seed: metrics}} for every group (``archs``: these groups; default ``settings.groups()``)
    and seed (the text group: the check seed alone), in a fresh (or the given) workspace."""
    from harness.device import configure_device

    configure_device(settings.device, settings.dtype, compile=False)  # process-wide switches first
    out: dict[str, dict[int, dict[str, float]]] = {}
    with workspace(workdir) as root, torch_threads(settings.threads):
        for group in archs or settings.groups():
            group_seeds = [settings.seed] if group == TEXT_GROUP else seeds
            out[group] = {seed: measure_group(group, settings, seed, root, overrides, log) for seed in group_seeds}
    return out


def measure_speed(measurements: int = 1, log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """{ratio: [value per measurement]} for ``harness.speed_ratios.SPEED_RATIOS``, one torch thread
    (process CPU time then barely moves with other work on the machine)."""
    from harness.speed_ratios import measure_speed_ratios

    values: dict[str, list[float]] = {}
    with torch_threads(1):
        for index in range(measurements):
            if log:
                log(f"speed ratios: measurement {index + 1} of {measurements}")
            for name, value in measure_speed_ratios().items():
                values.setdefault(name, []).append(value)
    return values


def static_metrics(arch: str, size: str, vocab_size: int, seq_len: int, overrides: dict | None = None) -> dict[str, float]:
    """Parameter counts and FLOPs per token of ``arch`` at ``size``, built on the meta device (no memory, no time)."""
    import torch

    from architectures import build_from_config, get
    from harness.flops import forward_flops_per_token, train_flops_per_token

    config = get(arch).config(size, **{**(overrides or {}), "vocab_size": vocab_size})
    with torch.device("meta"):
        model = build_from_config(config)
    counts = model.param_counts()
    return {
        "params": counts["params"],
        "non_embedding_params": counts["non_embedding_params"],
        "active_params": counts["active_params"],
        "forward_flops_per_token": forward_flops_per_token(config, seq_len),
        "train_flops_per_token": train_flops_per_token(config, seq_len),
    }
