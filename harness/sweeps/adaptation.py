"""The adaptation stage of a compare sweep: every pre-trained run × method at matched fine-tuning FLOPs.

After pre-training each architecture at matched compute, ``run_adaptation`` fine-tunes every
finished pre-training run with each method (``full``, ``lora``, ``top:N``) on the same downstream data
(``--finetune-data``), at the same fine-tuning budget (``--finetune-budget`` FLOPs, 2 per
multiply-add, each method counted by its own convention, see ``harness.training.methods``), with the
parent's seed. Runs are ``harness.training.finetune.finetune``: a finished one is reused, an
interrupted one resumes, so re-running the compare command continues the stage too.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from harness.training.methods import FINETUNE_METHODS, is_finetune_method

DEFAULT_METHODS = ("full", "lora")


def parse_methods(text: str | None) -> list[str]:
    """``"full,lora,top:1"`` → methods (checked, duplicates dropped)."""
    methods = list(dict.fromkeys(item.strip() for item in (text or "").split(",") if item.strip()))
    unknown = [m for m in methods if not is_finetune_method(m)]
    if not methods or unknown:
        raise ValueError(f"--finetune-methods takes a comma-separated list of {', '.join(FINETUNE_METHODS)}, "
                         f"got {text!r}.")
    return methods


@dataclass(frozen=True)
class AdaptationOptions:
    """The adaptation stage of a sweep: fine-tune every finished run on ``data`` with each of
    ``methods`` at ``budget_flops`` fine-tuning FLOPs (None: the default), LoRA at ``rank``
    (None: max(1, d_model // 32)). Checked when made, before anything trains."""

    data: str
    methods: tuple[str, ...] = DEFAULT_METHODS
    budget_flops: float | None = None
    rank: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        unknown = [m for m in self.methods if not is_finetune_method(m)]
        if not self.methods or unknown:
            raise ValueError(f"--finetune-methods takes a comma-separated list of {', '.join(FINETUNE_METHODS)}, "
                             f"got {','.join(self.methods)!r}.")
        if self.budget_flops is not None and not self.budget_flops > 0:
            raise ValueError(f"--finetune-budget must be a positive number of FLOPs, got {self.budget_flops}.")


@dataclass
class AdaptationOutcome:
    data: str
    methods: list[str]
    budget_flops: float | None
    rank: int | None
    run_ids: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def run_adaptation(
    pretrain_run_ids: list[str],
    options: AdaptationOptions,
    results_dir: str | Path,
    log: Callable[[str], None] | None = None,
) -> AdaptationOutcome:
    """Fine-tune every finished run of ``pretrain_run_ids`` with every method; failures are noted and skipped."""
    from harness.evaluation.text_tasks import text_task_for_data
    from harness.training.finetune import FinetuneFailed, FinetuneSpec, finetune
    from harness.runs.records import load_record

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    outcome = AdaptationOutcome(options.data, list(options.methods), options.budget_flops, options.rank)
    methods = outcome.methods
    root = Path(results_dir)
    parents = []
    for run_id in pretrain_run_ids:
        try:
            if load_record(root / run_id).get("status") == "ok":
                parents.append(run_id)
        except (OSError, ValueError):
            continue
    total = len(parents) * len(methods)
    for index, (parent, method) in enumerate(((p, m) for p in parents for m in methods), 1):
        seed = int(load_record(root / parent).get("seed") or 0)
        spec = FinetuneSpec(parent=str(root / parent), data=outcome.data, method=method, seed=seed,
                            budget_flops=outcome.budget_flops, rank=outcome.rank if method == "lora" else None)
        started = time.perf_counter()
        try:
            result = finetune(spec, root, progress=False)
        except (FinetuneFailed, ValueError) as error:
            outcome.failed[f"{parent}/{method}"] = str(error)
            log(f"[adapt {index}/{total}] {method} of {parent}: FAILED ({error}); continuing")
            continue
        outcome.run_ids.append(result.run_dir.name)
        record = result.record
        generation_task = text_task_for_data(outcome.data)  # BLEU / ROUGE before (parent) and after
        if generation_task and record.get("status") == "ok":
            score_generation(generation_task, [root / parent, result.run_dir], log)
        if record.get("status") == "interrupted":
            log(f"[adapt {index}/{total}] {method} of {parent}: interrupted; run the same command again to resume")
            break
        log(f"[adapt {index}/{total}] {method} of {parent}: {'reused' if result.reused else 'trained'} "
            f"{result.run_dir.name}, val loss {record.get('val_loss_before', float('nan')):.4f} → "
            f"{record.get('val_loss_after', float('nan')):.4f} ({time.perf_counter() - started:.0f} s)")
    return outcome


def score_generation(task: str, run_dirs, log=None) -> None:
    """Evaluate ``task`` on each run whose record lacks it (results merge into the records)."""
    from harness.evaluation.run import evaluate_run
    from harness.runs.records import load_record

    for run_dir in run_dirs:
        if task in (load_record(run_dir).get("evaluation") or {}):
            continue
        scores = evaluate_run(run_dir, tasks=[task])
        if log:
            values = ", ".join(f"{metric} {entry['value']:.3g}" for metric, entry in scores.get(task, {}).items())
            log(f"[adapt] {task} on {Path(run_dir).name}: {values}")
