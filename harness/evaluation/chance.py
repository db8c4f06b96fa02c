"""Chance levels of evaluation metrics, and whether a score is distinguishable from chance.

Chance = the expected score of guessing uniformly among the answer options: 1/4 for the
4-way multiple-choice tasks (ARC, HellaSwag, OpenBookQA), 1/2 for the 2-way ones (PIQA,
WinoGrande, BoolQ — BoolQ's majority class scores 0.62), 0 for open-vocabulary answers
(LAMBADA's last word, the copy probe's 8-token span); for the synthetic probes it is 1 over
the answer alphabet of the generator that made the run's data (values for recall, objects
for facts, Markov states for copied tokens). Metrics without a chance level (bits per
byte, perplexity, NLL) return None.

``recall_context_baseline``: a stronger bar for the recall probes than 1/values. A model that
knows which values the probe's definition block holds, but not which key each is bound to,
guesses uniformly among the block's distinct values and scores E[1 / distinct values]; only
accuracy above it shows keys bound to values (in-context recall proper).

``at_chance``: a score whose 95 % interval reaches the chance level. Its standard error
combines the seed-to-seed spread of the mean (s/√n) and lm-eval's per-run sampling error
over the shared items (root-mean-square, not divided by n: the seeds see the same items).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

Z95 = 1.959964

CHANCE: dict[tuple[str, str], float] = {
    **{(task, metric): 0.25 for task in ("arc_easy", "arc_challenge", "hellaswag", "openbookqa")
       for metric in ("acc", "acc_norm")},
    **{(task, metric): 0.5 for task in ("piqa", "winogrande", "boolq") for metric in ("acc", "acc_norm")},
    ("lambada_openai", "acc"): 0.0,
    ("lambada_standard", "acc"): 0.0,
    ("harness_copy", "exact_match"): 0.0,
}


def chance_level(task: str, metric: str, synthetic_config: dict[str, Any] | None = None) -> float | None:
    """The chance score of ``metric`` on ``task`` (None when the metric has none)."""
    if (task, metric) in CHANCE:
        return CHANCE[(task, metric)]
    config = synthetic_config or {}
    if task.startswith("harness_recall_") and metric == "acc" and config.get("n_values"):
        return 1.0 / config["n_values"]
    if task == "harness_facts" and metric == "acc" and config.get("n_objects"):
        return 1.0 / config["n_objects"]
    if task == "harness_copy" and metric == "token_acc" and config.get("n_markov"):
        return 1.0 / config["n_markov"]
    return None


def recall_context_baseline(synthetic_config: dict[str, Any] | None) -> float | None:
    """E[1 / D], D the number of distinct values among a definition block's ``recall_pairs`` values,
    each uniform over ``n_values`` (exact, by the occupancy distribution); None without a config."""
    config = synthetic_config or {}
    pairs, values = config.get("recall_pairs"), config.get("n_values")
    if not pairs or not values:
        return None
    # ways[d]: sequences of `pairs` draws that use exactly d given values (surjections: d! S(pairs, d))
    stirling = [[1]] + [[0] * (k + 1) for k in range(1, pairs + 1)]
    for k in range(1, pairs + 1):
        for d in range(1, k + 1):
            stirling[k][d] = d * (stirling[k - 1][d] if d < k else 0) + stirling[k - 1][d - 1]
    total = sum(math.comb(values, d) * math.factorial(d) * stirling[pairs][d] / d for d in range(1, min(pairs, values) + 1))
    return total / values**pairs


def at_chance(values: Sequence[float], stderrs: Sequence[float], chance: float | None,
              higher_is_better: bool = True) -> bool | None:
    """Whether the mean score's 95 % interval reaches ``chance`` (None without a chance level or scores)."""
    scores = [v for v in values if v is not None and math.isfinite(v)]
    if chance is None or not scores:
        return None
    n = len(scores)
    mean = sum(scores) / n
    seed_var = sum((v - mean) ** 2 for v in scores) / (n - 1) / n if n > 1 else 0.0
    errors = [e for e in stderrs if e is not None and math.isfinite(e)]
    item_var = sum(e * e for e in errors) / len(errors) if errors else 0.0
    half = Z95 * math.sqrt(seed_var + item_var)
    return mean - half <= chance if higher_is_better else mean + half >= chance
