"""What the engine reads from a run kind's spec, forwarded once for every kind (``harness.training.engine.RunKind``).

A run kind (``trainer.Pretraining``, ``finetune.Finetuning``) holds its typed spec as ``self.spec``;
inheriting ``SpecFields`` gives it the recipe, seed and the evaluation and checkpoint intervals the
engine asks for (``None``: the engine's default; ``checkpoint_minutes``: wall-clock minutes).
"""

from __future__ import annotations

from typing import Any


class SpecFields:
    spec: Any  # harness.runs.spec.RunSpec or harness.training.finetune.FinetuneSpec

    @property
    def recipe(self):
        return self.spec.recipe

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def eval_interval(self) -> int | None:
        return self.spec.eval_interval

    @property
    def checkpoint_interval(self) -> int | None:
        return self.spec.checkpoint_interval

    @property
    def checkpoint_minutes(self) -> float:
        return self.spec.checkpoint_minutes
