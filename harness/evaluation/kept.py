"""How a run's evaluations are kept: none overwrites another.

A record's ``evaluation`` holds, per key (``task`` or ``task@<k>shot``), the result with the
largest n (documents scored); a newer result of equal n replaces it. Every other result of
that key is kept under ``evaluation_kept_aside`` = {key: {"<n>": {metric: entry}}} (the newest
per n), so an ``eval --limit 5`` after a full evaluation leaves the full one in ``evaluation``
and the limited one beside it, and the other way round. ``merge_evaluations`` returns both
and one sentence per result that did not land in ``evaluation`` (or displaced one there).

lm-eval's own output files accumulate: ``lm_eval_results_name`` names each call's file by
time, shots, limit and tasks, so no call overwrites another's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

KEPT_ASIDE_FIELD = "evaluation_kept_aside"
LM_EVAL_RESULTS_DIR = "lm_eval_results"


def entry_n(metrics: dict) -> int | None:
    """Documents scored for one key's result: the largest ``n`` among its metrics (None when unknown)."""
    counts = [entry.get("n") for entry in (metrics or {}).values() if isinstance(entry, dict)]
    counts = [n for n in counts if isinstance(n, int) and not isinstance(n, bool)]
    return max(counts) if counts else None


def _slot(n: int | None) -> str:
    return str(n) if n is not None else "unknown"


@dataclass
class MergedEvaluations:
    """The record's ``evaluation`` and ``evaluation_kept_aside`` after a merge, and what moved."""

    evaluation: dict[str, dict]
    kept_aside: dict[str, dict[str, dict]]
    notes: list[str] = field(default_factory=list)


def merge_evaluations(evaluation: dict | None, kept_aside: dict | None, new: dict[str, dict]) -> MergedEvaluations:
    """Merge this call's results ``new`` ({key: {metric: entry}}) into a record's evaluations (see module doc)."""
    merged = MergedEvaluations(dict(evaluation or {}), {k: dict(v) for k, v in (kept_aside or {}).items()})
    for key, metrics in new.items():
        old = merged.evaluation.get(key)
        new_n, old_n = entry_n(metrics), entry_n(old) if old is not None else None
        if old is None or (new_n or 0) >= (old_n or 0):
            merged.evaluation[key] = metrics
            if old is not None and old_n != new_n:
                merged.kept_aside.setdefault(key, {})[_slot(old_n)] = old
                merged.notes.append(f"{key}: this n = {_slot(new_n)} result replaces the n = {_slot(old_n)} one in "
                                    f"`evaluation`; that one is kept aside under `{KEPT_ASIDE_FIELD}`.")
            merged.kept_aside.get(key, {}).pop(_slot(new_n), None)
            if key in merged.kept_aside and not merged.kept_aside[key]:
                del merged.kept_aside[key]
        else:
            merged.kept_aside.setdefault(key, {})[_slot(new_n)] = metrics
            merged.notes.append(f"{key}: this n = {_slot(new_n)} result is smaller than the n = {_slot(old_n)} one "
                                f"in `evaluation`, which stays; this one is kept aside under `{KEPT_ASIDE_FIELD}`.")
    return merged


def lm_eval_results_name(tasks: list[str], num_fewshot: int, limit: int | None, now: datetime | None = None) -> str:
    """``lm_eval_results/<UTC time>_<k>shot_<limit N|all>_<tasks>.json``: one file per evaluation call."""
    now = now or datetime.now(timezone.utc)
    names = re.sub(r"[^A-Za-z0-9_.+-]", "_", "+".join(tasks))[:80]
    scope = f"limit{limit}" if limit is not None else "all"
    return f"{LM_EVAL_RESULTS_DIR}/{now.strftime('%Y%m%dT%H%M%S.%fZ')}_{int(num_fewshot)}shot_{scope}_{names}.json"
