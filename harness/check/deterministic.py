"""The deterministic metrics: what fp32, one thread and a fixed seed make reproducible to the last bits.

Per architecture (at the check seed only; no spread seeds are needed):

- ``init_train_loss``: the untrained model's loss on the first training batch (step 1's
  ``train_loss``, before any update; dropout as in training) — the forward pass and the
  initialisation;
- ``short_train_loss``, ``short_val_loss``, ``short_final_lr``: the last step's training loss,
  the validation loss and the learning rate after a short run of ``short_budget_flops``
  (10-11 nano steps, the whole schedule: warm-up, cosine decay, floor) — the backward pass,
  the optimizer and the schedule, through the real trainer;
- ``param_groups``: the optimizer's groups (weight decay and the names in each) as a digest;
- ``flops.<component>``: forward FLOPs per token by component (``harness.flops.forward_breakdown``).

``resume_pairs`` stops one short run half-way, resumes it and compares every metric with the
uninterrupted run: they must be equal.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.check.errors import PartialRun
from harness.check.settings import RESUME_PREFIX, CheckSettings

SHORT_KEYS = ("init_train_loss", "short_train_loss", "short_val_loss", "short_final_lr")


def short_spec(arch: str, settings: CheckSettings, overrides: dict[str, Any] | None = None, *, data: str | None = None,
               vocab_size: int | None = None):
    """The short run's ``RunSpec``: the check's settings at ``short_budget_flops``."""
    from harness.runs.spec import RunSpec

    return RunSpec(arch=arch, size=settings.size, data=data or settings.data, seed=settings.seed,
                   budget_flops=float(settings.short_budget_flops), overrides=dict(overrides or {}),
                   vocab_size=vocab_size, device=settings.device, dtype=settings.dtype, compile=False)


def train_short(spec, results_dir: Path, *, stop_after_steps: int | None = None):
    """Train ``spec`` from scratch into ``results_dir`` (resuming when a checkpoint is there); the record."""
    from harness.training.trainer import TrainingFailed, train

    try:
        return train(spec, results_dir, progress=False, stop_after_steps=stop_after_steps).record
    except TrainingFailed as failure:
        raise PartialRun(f"{spec.arch} short run: {failure}") from None


def short_metrics(record: dict[str, Any], run_dir: Path) -> dict[str, float]:
    """``SHORT_KEYS`` from a finished short run's record and ``metrics.jsonl`` (and, not compared with
    the baseline, ``_short_steps`` and every step's loss ``_short_train_losses``, for the resume check)."""
    from harness.runs.run_dir import METRICS_NAME

    lines = [json.loads(line) for line in (run_dir / METRICS_NAME).read_text().splitlines() if line.strip()]
    return {
        "init_train_loss": lines[0]["train_loss"],
        "short_train_loss": lines[-1]["train_loss"],
        "short_val_loss": record["final_val_loss"],
        "short_final_lr": lines[-1]["lr"],
        "_short_steps": record["steps"],
        "_short_train_losses": [line["train_loss"] for line in lines],
    }


def measure_short(spec, results_dir: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """(record, ``SHORT_KEYS``) of the short run of ``spec``."""
    record = train_short(spec, results_dir)
    if record.get("status") != "ok":
        raise PartialRun(f"the short run {spec.run_id()} ended {record.get('status')!r}: {record.get('error')}")
    return record, short_metrics(record, results_dir / spec.run_id())


def layout_digest(layout: list[dict]) -> str:
    """``wd 0.1: 18 | wd 0: 17 #<12 hex>``: the group sizes, and a sha256 of every group's decay and names."""
    sizes = " | ".join(f"wd {group['weight_decay']:g}: {len(group['names'])}" for group in layout)
    digest = hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:12]
    return f"{sizes} #{digest}"


def param_groups_digest(spec, vocab_size: int) -> str:
    """The optimizer groups the trainer builds for ``spec``'s model (on the meta device), as ``layout_digest``."""
    import torch

    from architectures import build_from_config
    from harness.training.optim import make_optimizer, parameter_group_layout

    with torch.device("meta"):
        model = build_from_config(spec.model_config(vocab_size))
    optimizer = make_optimizer(model, spec.recipe, fused=False)
    return layout_digest(parameter_group_layout(model, optimizer))


def flops_by_component(spec, vocab_size: int) -> dict[str, float]:
    """``flops.<component>``: forward FLOPs per token (2 per multiply-add) at the run's sequence length."""
    from harness.flops.analytic import forward_breakdown

    config = spec.model_config(vocab_size)
    return {f"flops.{name}": value for name, value in forward_breakdown(config, spec.recipe.seq_len).items()}


def deterministic_metrics(arch: str, settings: CheckSettings, results_dir: Path,
                          overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every deterministic metric of ``arch`` (see the module docstring)."""
    spec = short_spec(arch, settings, overrides)
    record, metrics = measure_short(spec, results_dir)
    vocab_size = record["data"]["vocab_size"]
    return {**metrics, "param_groups": param_groups_digest(spec, vocab_size), **flops_by_component(spec, vocab_size)}


def resume_pairs(arch: str, settings: CheckSettings, results_dir: Path, uninterrupted: dict[str, Any],
                 overrides: dict[str, Any] | None = None) -> dict[str, tuple[float, float]]:
    """``{resume.<metric>: (uninterrupted, resumed)}``: the short run stopped after half its steps and
    resumed in ``results_dir``, against ``uninterrupted`` (``deterministic_metrics``' output): every
    ``SHORT_KEYS`` value, and how many steps' training losses differ
    (``resume.train_loss_steps_differing``, 0 when every step matches)."""
    spec = short_spec(arch, settings, overrides)
    first = train_short(spec, results_dir, stop_after_steps=max(1, uninterrupted["_short_steps"] // 2))
    if first.get("status") != "interrupted":
        raise PartialRun(f"the resume check's first part ended {first.get('status')!r}, not 'interrupted'")
    _, resumed = measure_short(spec, results_dir)
    pairs = {RESUME_PREFIX + name: (uninterrupted[name], resumed[name]) for name in SHORT_KEYS}
    straight, again = uninterrupted["_short_train_losses"], resumed["_short_train_losses"]
    differing = sum(a != b for a, b in zip(straight, again)) + abs(len(straight) - len(again))
    pairs[RESUME_PREFIX + "train_loss_steps_differing"] = (0, differing)
    return pairs
