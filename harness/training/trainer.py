"""Pre-training: a ``RunSpec`` → a model built from its config, trained at a FLOP budget by the engine.

``train(spec, results_dir)`` hands ``harness.training.engine.run_locked`` a ``Pretraining`` run
kind (the corpus, config.json and the tokenizer, the pre-training record and its closing
validation against the unigram baseline) and the ``pretrain`` method (every parameter trains,
3 × forward FLOPs per token). The loop, checkpoints, lock, signals and failures are the
engine's; see ``harness.training.engine``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from architectures import build_from_config
from harness.data import get_batch, prepare_data
from harness.flops import forward_flops_per_token
from harness.io import write_json_atomic
from harness.runs import run_dir as run_files
from harness.runs.records import training_record
from harness.runs.spec import RunSpec
from harness.runs.validation import quality_warnings
from harness.training import distributed, heldout
from harness.training.engine import Engine, TrainingFailed, TrainResult, run_locked
from harness.training.methods import PretrainMethod
from harness.training.placement import place, rank_seed
from harness.training.spec_fields import SpecFields

__all__ = ["Pretraining", "TrainResult", "TrainingFailed", "train"]


def train(
    spec: RunSpec,
    results_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool | None = None,
    stop_after_steps: int | None = None,
    wait: bool = False,
) -> TrainResult:
    """Train ``spec`` into ``results_dir/<run_id>``; returns the run directory and record.

    A finished run (record status ``ok``) is reused unless ``force``; ``force`` also allows a
    plan of more than ``harness.runs.validation.MAX_PLANNED_STEPS`` steps. An interrupted or failed
    run with a checkpoint continues from it. ``stop_after_steps`` simulates an interruption
    after that many steps (tests, smoke runs). The run directory is locked for the whole call
    (``harness.runs.lock``): if another live process holds it, ``RunLocked`` is raised, or with
    ``wait`` this waits for it.
    """
    run_dir = Path(results_dir) / spec.run_id()
    return run_locked(run_dir, lambda: Pretraining.engine(spec, run_dir, force=force), resume=resume, force=force,
                      wait=wait, progress=progress, stop_after_steps=stop_after_steps)


@dataclass
class Pretraining(SpecFields):
    """The pre-training run kind (``harness.training.engine.RunKind``) of one ``RunSpec``."""

    spec: RunSpec
    run_dir: Path
    data: Any  # harness.data.PreparedData
    probes: Any = None  # harness.evaluation.train_probes.TrainProbes when spec.train_probes is set

    @classmethod
    def engine(cls, spec: RunSpec, run_dir: Path, *, force: bool = False) -> Engine:
        """Device and ranks, data (rank 0 first), the model (same init on every rank), the plan, AdamW."""
        placement = place(spec.recipe, spec.device, spec.dtype, spec.compile, spec.parallel)
        settings, device, dist, _ = placement
        data = distributed.main_first(dist, lambda: prepare_data(spec.data, vocab_size=spec.vocab_size, seed=spec.seed))
        config = spec.model_config(data.tokenizer.vocab_size)
        torch.manual_seed(spec.seed)
        model = build_from_config(config).to(device)
        if dist.rank > 0:  # same initial weights everywhere, but each rank its own dropout stream
            torch.manual_seed(rank_seed(spec.seed, dist.rank))
        method = PretrainMethod()
        probes = _train_probes(spec, data, config.context)
        return Engine.create(cls(spec, Path(run_dir), data, probes), method, method.prepare(model), placement,
                             spec.budget_flops, force=force, attention_flops=spec.attention_flops,
                             train_tokens=spec.train_tokens, parallel=spec.parallel,
                             activation_checkpointing=spec.activation_checkpointing)

    # ---- what the engine reads ------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.spec.run_id()

    def train_batch(self, step: int, micro: int, batch_size: int, rank: int, world_size: int):
        return get_batch(self.data.train_tokens, step, batch_size, self.spec.recipe.seq_len, seed=self.spec.seed,
                         micro_step=micro, rank=rank, world_size=world_size)

    def running_record(self, engine: Engine) -> dict:
        spec, seq_len, model = self.spec, self.spec.recipe.seq_len, engine.model
        return training_record(
            spec, counts=model.param_counts(),
            config_flops={"forward_flops_per_token": forward_flops_per_token(engine.config, seq_len, spec.attention_flops),
                          "train_flops_per_token": engine.plan.train_flops_per_token},
            plan=engine.plan, start_step=engine.start_step, data=self.data.describe(),
            layout={"grad_accum": engine.layout.grad_accum, "world_size": engine.dist.world_size,
                    "micro_batch_per_rank": engine.layout.micro_batch_per_rank},
            settings=engine.settings,
            kernels=model.kernels(seq_len, engine.device) if hasattr(model, "kernels") else {},
        )

    def write_files(self, engine: Engine) -> None:
        write_json_atomic(self.run_dir / run_files.CONFIG_NAME,
                          {"run": self.spec.to_dict(), "model": engine.config.to_dict(), "run_id": self.run_id})
        self.data.tokenizer.save(self.run_dir / run_files.TOKENIZER_DIR)

    def val_loss(self, engine: Engine) -> float:
        recipe = self.spec.recipe
        return heldout.validation_metrics(engine.model, self.data, recipe.seq_len, recipe.micro_batch_size,
                                          engine.device, engine.settings.autocast,
                                          max_tokens=16 * recipe.seq_len * recipe.micro_batch_size)["val_loss"]

    def validation_extras(self, engine: Engine) -> dict:
        """The in-training recall probes (``probe/recall_<d>/acc``) when the spec asks for them."""
        return self.probes.metrics(engine.model, engine.device) if self.probes is not None else {}

    def final_fields(self, engine: Engine, record: dict) -> dict:
        """Final validation over the whole held-out split, the unigram baseline, the recall probes, quality warnings."""
        recipe = self.spec.recipe
        final = heldout.validation_metrics(engine.model, self.data, recipe.seq_len, recipe.micro_batch_size,
                                           engine.device, engine.settings.autocast)
        fields = {"final_val_loss": final.pop("val_loss"), **final}
        fields.update(heldout.unigram_baseline(self.data, final))
        if self.probes is not None:
            fields.update(self.probes.record_fields(engine.model, engine.device))
        fields["warnings"] = quality_warnings({**record, **fields})
        return fields


def _train_probes(spec: RunSpec, data, context: int):
    """The probe items of ``spec.train_probes`` from the run's own generator, or None when there are none."""
    if not spec.train_probes:
        return None
    from harness.data import SyntheticConfig, SyntheticGenerator
    from harness.evaluation.train_probes import TrainProbes

    if data.kind != "synthetic" or "synthetic_config" not in data.info:
        raise ValueError(f"train_probes need synthetic data; {spec.data!r} is {data.kind} data.")
    return TrainProbes.build(SyntheticGenerator(SyntheticConfig(**data.info["synthetic_config"])),
                             spec.train_probes, context)
