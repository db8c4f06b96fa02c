"""Per-document results and aggregations of the harness probe tasks (referenced by the YAMLs)."""

from __future__ import annotations


def copy_results(doc: dict, results: list[str]) -> dict:
    """Exact match of the generated span (whitespace-separated words) and per-position accuracy."""
    predicted, target = results[0].split(), doc["target"].split()
    right = sum(p == t for p, t in zip(predicted, target))
    return {"exact_match": float(predicted[: len(target)] == target), "token_acc": right / len(target)}


def heldout_results(doc: dict, results: list[float]) -> dict:
    loglikelihood = results[0][0] if isinstance(results[0], (tuple, list)) else results[0]
    n, floor = int(doc["n_tokens"]), float(doc["floor_nats"])
    return {
        "nll_per_token": (loglikelihood, n, floor),
        "excess_nll_per_token": (loglikelihood, n, floor),
        "token_perplexity": (loglikelihood, n),
    }


def nll_per_token(items) -> float:
    """Token-weighted mean negative log-likelihood, nats."""
    return -sum(item[0] for item in items) / sum(item[1] for item in items)


def excess_nll_per_token(items) -> float:
    """Token-weighted mean NLL minus the generator's entropy floor, nats."""
    return (-sum(item[0] for item in items) - sum(item[2] for item in items)) / sum(item[1] for item in items)
