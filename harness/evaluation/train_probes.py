"""Recall probes scored during training: lm-eval's ``harness_recall_<d>`` items, in place, at every validation point.

For each distance d the items are the first ``TRAIN_PROBE_ITEMS`` of
``generator.recall_probe(N_RECALL, d, PROBE_SEED)``, exactly the items (in order) lm-eval's
``harness_recall_<d>`` scores (``harness.evaluation.probes``). Accuracy (a fraction in [0, 1]) is
lm-eval's ``acc`` for a one-token target: the value token is the model's greedy next token (argmax
over the whole vocabulary) after the context, left-truncated to the model's context. Items are
grouped by context length (no padding), scored in eval mode without autograd in the parameters'
dtype (no autocast, as lm-eval scores), and the model's training mode is restored. Logged as
``probe/recall_<d>/acc`` on the metrics line of each validation point (``metric_name``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import torch

from harness.evaluation.probes import N_RECALL, PROBE_SEED
from harness.runs.validation import check_train_probes

TRAIN_PROBE_ITEMS = 100  # the first 100 items: lm-eval's harness_recall_<d> with --eval-limit 100
BATCH_ITEMS = 64  # items per forward pass


def metric_name(distance: int) -> str:
    """``probe/recall_<d>/acc``: the metrics column (and flattened record field) of distance ``d``."""
    return f"probe/recall_{int(distance)}/acc"


@dataclass
class TrainProbes:
    """The probe items of each distance: (context tokens left-truncated to the context, value token)."""

    items: dict[int, list[tuple[list[int], int]]]

    @classmethod
    def build(cls, generator, distances: Iterable[int], context: int) -> "TrainProbes":
        items = {}
        for distance in check_train_probes(tuple(distances)):
            probes = generator.recall_probe(N_RECALL, distance, PROBE_SEED)[:TRAIN_PROBE_ITEMS]
            items[distance] = [([int(t) for t in ctx][-context:], int(target[0])) for ctx, target in probes]
        return cls(items)

    def predictions(self, model: torch.nn.Module, device) -> dict[int, list[int]]:
        """``{d: the greedy next token of each item, in item order}``; eval mode, no autograd, the mode restored."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return {d: _greedy(model, [context for context, _ in items], device) for d, items in self.items.items()}
        finally:
            model.train(was_training)

    def by_distance(self, model: torch.nn.Module, device) -> dict[int, float]:
        """``{d: fraction of items whose value token is the greedy next token}``."""
        return {d: sum(p == target for p, (_, target) in zip(predicted, self.items[d])) / len(self.items[d])
                for d, predicted in self.predictions(model, device).items()}

    def metrics(self, model: torch.nn.Module, device) -> dict[str, float]:
        """``{probe/recall_<d>/acc: accuracy}``: the columns of a validation point's metrics line."""
        return {metric_name(d): acc for d, acc in self.by_distance(model, device).items()}

    def record_fields(self, model: torch.nn.Module, device) -> dict:
        """``{"probe": {"recall_<d>": {"acc": accuracy}}}``: the record's final values (flattened: the metric names)."""
        return {"probe": {f"recall_{d}": {"acc": acc} for d, acc in self.by_distance(model, device).items()}}


def _greedy(model: torch.nn.Module, contexts: list[list[int]], device) -> list[int]:
    """Argmax over the vocabulary at the last position of each context; contexts of one length share a batch."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, context in enumerate(contexts):
        by_length[len(context)].append(i)
    out = [0] * len(contexts)
    for indices in by_length.values():
        for start in range(0, len(indices), BATCH_ITEMS):
            chunk = indices[start : start + BATCH_ITEMS]
            idx = torch.tensor([contexts[i] for i in chunk], dtype=torch.long, device=device)
            for i, token in zip(chunk, model(idx).logits[:, -1].argmax(dim=-1).tolist()):
                out[i] = int(token)
    return out
