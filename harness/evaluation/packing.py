"""Packing scoring windows into few, full rows: shared contexts run once, padding is minimal.

A scoring window is ``(context, continuation)``; the model input is
``(context + continuation)[-(L+1):][:-1]`` (L = the model's context) and the last
``len(continuation)`` input positions predict the continuation.

- **Units.** Windows with the same, untruncated context (the choices of a multiple-choice
  question) become one unit, a small tree: the context once (branch 0), then each
  continuation but its last token (branches 1, 2, ...), all placed after the context's
  positions. A continuation sees the context and itself, never a sibling. The context's last
  position predicts every sibling's first token. Any other window is a unit of its own.
- **Rows and batches.** A forward pass gets about ``rows_per_batch × row_tokens`` tokens: its
  rows are as wide as the longest unit left, and units, longest first, go into the first
  row with room (first-fit decreasing), so short units share a row instead of padding one,
  and no row is wider than the batch needs (a packed row's attention costs width²).
  Positions restart at 0 in every unit, so no position reaches L. A padding token attends
  only to itself.

``PackedBatch`` holds the model's packed inputs (``idx``, ``positions``, ``attention_mask``)
and ``logit_positions`` (flat ``row·width + t``), the positions predicting each window's
continuation, window after window, in the order of ``windows``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import torch

Window = tuple[list[int], list[int]]  # (context tokens, continuation tokens to score)


@dataclass
class Unit:
    """Tokens laid out together; ``scored[w]`` = offsets (in the unit) predicting window w's continuation."""

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    branches: list[int] = field(default_factory=list)  # 0: sequence/context trunk; i ≥ 1: continuation i
    scored: dict[int, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, tokens: Sequence[int], start_position: int, branch: int) -> list[int]:
        """Append tokens at positions start_position, ...; return their offsets in the unit."""
        offsets = list(range(len(self.tokens), len(self.tokens) + len(tokens)))
        self.tokens += tokens
        self.positions += range(start_position, start_position + len(tokens))
        self.branches += [branch] * len(tokens)
        return offsets


@dataclass
class PackedBatch:
    idx: torch.Tensor  # [R, W] token ids
    positions: torch.Tensor  # [R, W] position of each token in its own sequence
    attention_mask: torch.Tensor  # [R, W, W] bool (query, key)
    logit_positions: torch.Tensor  # [N] flat row·W + t
    windows: list[int]  # window indices, in the order their positions appear in logit_positions


def plain_unit(index: int, window: Window, max_length: int) -> Unit:
    context, continuation = window
    tokens = (context + continuation)[-(max_length + 1) :][:-1]
    unit = Unit()
    offsets = unit.add(tokens, 0, 0)
    unit.scored[index] = offsets[len(tokens) - len(continuation) :]
    return unit


def shared_units(indices: list[int], windows: Sequence[Window], row_tokens: int) -> list[Unit]:
    """Context once, then each continuation (but its last token) as a branch; split when a unit would overflow a row."""
    context = windows[indices[0]][0]
    units: list[Unit] = []
    unit = None
    for index in indices:
        rest = windows[index][1][:-1]
        if unit is None or len(unit) + len(rest) > row_tokens:
            unit = Unit()
            unit.add(context, 0, 0)
            units.append(unit)
        branch = len(unit.scored) + 1
        unit.scored[index] = [len(context) - 1] + unit.add(rest, len(context), branch)
    return units


def make_units(windows: Sequence[Window], max_length: int, row_tokens: int) -> list[Unit]:
    """One unit per group of windows sharing an untruncated context, one per other window."""
    by_context: dict[tuple[int, ...], list[int]] = defaultdict(list)
    units = []
    for i, (context, continuation) in enumerate(windows):
        if len(context) + len(continuation) - 1 <= max_length:  # nothing truncated: shareable
            by_context[tuple(context)].append(i)
        else:
            units.append(plain_unit(i, windows[i], max_length))
    for indices in by_context.values():
        if len(indices) == 1:
            units.append(plain_unit(indices[0], windows[indices[0]], max_length))
        else:
            units += shared_units(indices, windows, row_tokens)
    return units


def pack_rows(units: list[Unit], row_tokens: int) -> list[list[Unit]]:
    """First-fit decreasing: each unit, longest first, into the first row it fits (rows as needed)."""
    rows, _ = _fill_rows(sorted(units, key=len, reverse=True), row_tokens, max(1, len(units)) * row_tokens)
    return rows


def _fill_rows(units: list[Unit], width: int, token_budget: int) -> tuple[list[list[Unit]], list[Unit]]:
    """As many rows of ``width`` as the budget allows, filled first-fit decreasing from ``units``
    (sorted longest first); returns the rows and the units left over."""
    n_rows = max(1, token_budget // width)
    rows: list[list[Unit]] = []
    free: list[int] = []
    left: list[Unit] = []
    for unit in units:
        for r, room in enumerate(free):
            if len(unit) <= room:
                rows[r].append(unit)
                free[r] -= len(unit)
                break
        else:
            if len(rows) < n_rows:
                rows.append([unit])
                free.append(width - len(unit))
            else:
                left.append(unit)
    return rows, left


def _take_batch(units: list[Unit], token_budget: int, row_tokens: int, attention_keys: float) -> list[list[Unit]]:
    """The next batch, taken out of ``units``: rows of the width (a multiple of the longest
    unit's length, or ``row_tokens``) that wastes least. The cost of a row is modelled as
    width·(1 + width/attention_keys) token-equivalents (the projections and MLP per token,
    plus attention over width keys, which costs as much as the rest at ``attention_keys``)."""
    best = None
    longest = len(units[0])
    for width in sorted(set(range(longest, row_tokens + 1, longest)) | {max(longest, row_tokens)}):
        rows, left = _fill_rows(units, width, token_budget)
        useful = sum(len(u) for row in rows for u in row)
        efficiency = useful / (len(rows) * width * (1 + width / attention_keys))
        if best is None or efficiency > best[0]:
            best = (efficiency, rows, left)
    units[:] = best[2]
    return best[1]


def make_batch(rows: list[list[Unit]]) -> PackedBatch:
    """Tensors for one forward pass over ``rows`` (right-padded to the longest)."""
    width = max(sum(len(u) for u in row) for row in rows)
    R = len(rows)
    idx = torch.zeros(R, width, dtype=torch.long)
    positions = torch.zeros(R, width, dtype=torch.long)
    unit_id = torch.arange(-1, -width - 1, -1).repeat(R, 1)  # padding: a unit of its own per token
    branch = torch.zeros(R, width, dtype=torch.long)
    logit_positions: list[int] = []
    order: list[int] = []
    for r, row in enumerate(rows):
        start = 0
        for u, unit in enumerate(row):
            end = start + len(unit)
            idx[r, start:end] = torch.tensor(unit.tokens)
            positions[r, start:end] = torch.tensor(unit.positions)
            branch[r, start:end] = torch.tensor(unit.branches)
            unit_id[r, start:end] = u
            for window, offsets in unit.scored.items():
                order.append(window)
                logit_positions += [r * width + start + o for o in offsets]
            start = end
    same_unit = unit_id[:, :, None] == unit_id[:, None, :]
    causal = positions[:, None, :] <= positions[:, :, None]
    same_branch = (branch[:, None, :] == 0) | (branch[:, None, :] == branch[:, :, None])
    mask = same_unit & causal & same_branch
    return PackedBatch(idx, positions, mask, torch.tensor(logit_positions, dtype=torch.long), order)


def plan_batches(
    windows: Sequence[Window], max_length: int, row_tokens: int, rows_per_batch: int, attention_keys: float = 1536.0
) -> list[list[list[Unit]]]:
    """Units → batches of about ``rows_per_batch × row_tokens`` tokens each.

    A batch's rows are only as wide as they need to be: attention over a packed row costs
    width² whatever is in it, so short units are not made to pay for a wide row, while
    padding costs the whole model. ``attention_keys``: keys per query at which attention
    costs as much as the rest of the model (about 6·d_model: 24·d² FLOPs of projections and
    MLP per token and layer against 4·d per key).
    """
    units = sorted(make_units(windows, max_length, max(row_tokens, max_length)), key=len, reverse=True)
    budget = rows_per_batch * max(row_tokens, max_length)
    batches = []
    while units:
        batches.append(_take_batch(units, budget, max(row_tokens, max_length), attention_keys))
    return batches
