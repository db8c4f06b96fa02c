"""The study's planned comparisons (``harness.sweeps.plan``) filled with per-seed values from its runs.

``planned_comparisons`` turns each effective comparison into a ``harness.reporting.findings.Comparison``:
the values of ``metric`` for architectures ``a`` and ``b`` in the sweep ``setting`` (named by
sweep name, or by role), one per seed with the seed beside it; with ``change_to`` the value per
seed is metric(change_to) − metric(setting) for the same architecture and seed. A comparison
whose sweep or metric has no data stays in, with no values: it is tested as untestable.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from harness.reporting.findings import Comparison
from harness.sweeps.plan import Effective

LABELS = {"gpt1": "GPT-1 (post-LN)", "gpt2": "GPT-2 (pre-LN, dense)", "gpt3": "GPT-3 (dense/banded)",
          "gpt4": "GPT-4-style (MoE)"}


def arch_label(arch: str) -> str:
    return LABELS.get(arch, arch)


def by_seed(frame: pd.DataFrame | None, arch: str, column: str) -> dict[int, float]:
    """{seed: value} of ``column`` for ``arch``'s runs (missing or non-finite values left out)."""
    if frame is None or frame.empty or column not in frame.columns:
        return {}
    rows = frame[frame["arch"] == arch]
    values = pd.to_numeric(rows[column], errors="coerce")
    return {int(s): float(v) for s, v in sorted(zip(rows["seed"], values)) if math.isfinite(v)}


def _change(base: pd.DataFrame | None, other: pd.DataFrame | None, arch: str, column: str) -> dict[int, float]:
    first, second = by_seed(base, arch, column), by_seed(other, arch, column)
    return {s: second[s] - first[s] for s in sorted(set(first) & set(second))}


def tokens_context(frame: pd.DataFrame | None, a: str, b: str) -> str:
    """A sentence stating the tokens each side trained on at one budget (when ≥ 1 % apart); no causal claim."""
    tokens_a, tokens_b = by_seed(frame, a, "tokens"), by_seed(frame, b, "tokens")
    cost_a, cost_b = by_seed(frame, a, "train_flops_per_token"), by_seed(frame, b, "train_flops_per_token")
    if not (tokens_a and tokens_b and cost_a and cost_b):
        return ""
    mean_a, mean_b = np.mean(list(tokens_a.values())), np.mean(list(tokens_b.values()))
    ratio = mean_a / mean_b - 1
    if abs(ratio) < 0.01:
        return ""
    return (f"At the same budget {a} trained on {100 * abs(ratio):.1f} % {'more' if ratio > 0 else 'fewer'} tokens "
            f"({mean_a / 1e3:.0f}k vs {mean_b / 1e3:.0f}k) at {next(iter(cost_a.values())) / 1e6:.2f}M vs "
            f"{next(iter(cost_b.values())) / 1e6:.2f}M training FLOPs per token (2 per multiply-add).")


def _frame(settings: dict[str, pd.DataFrame], roles: dict[str, str], name: str | None) -> pd.DataFrame | None:
    if name is None:
        return None
    if name in settings:
        return settings[name]
    matches = [n for n, role in roles.items() if role == name]
    return settings.get(matches[0]) if len(matches) == 1 else None


def planned_comparisons(effective: Sequence[Effective], settings: dict[str, pd.DataFrame],
                        roles: dict[str, str] | None = None) -> list[Comparison]:
    """Every effective comparison with its per-seed values (``settings``: sweep name → runs frame)."""
    roles = roles or {}
    out = []
    for item in effective:
        p = item.comparison
        frame = _frame(settings, roles, p.setting)
        if p.change_to:
            other = _frame(settings, roles, p.change_to)
            a, b = _change(frame, other, p.a, p.metric), _change(frame, other, p.b, p.metric)
        else:
            a, b = by_seed(frame, p.a, p.metric), by_seed(frame, p.b, p.metric)
        rationale = p.reason + (f"; {p.citation}" if p.citation else "")
        out.append(Comparison(
            p.key, p.topic, p.label, p.unit, arch_label(p.a), arch_label(p.b), list(a.values()), list(b.values()),
            p.higher_is_better, p.expected, rationale, "" if p.change_to else tokens_context(frame, p.a, p.b),
            test=p.test, in_family=item.in_family, a_seeds=list(a), b_seeds=list(b), citation=p.citation,
            cause=p.cause, control=p.control, note=item.note))
    return out
