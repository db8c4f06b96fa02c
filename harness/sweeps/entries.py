"""A sweep as typed data: a study file's sweep entry ↔ ``SweepOptions``.

A study file (``studies/*.yaml``) lists each sweep by name and role plus the fields below, the
same as ``harness compare``'s options but typed (lists are lists, numbers are numbers)::

    - name: text-lr-low
      role: lr
      archs: [gpt1, gpt2]
      size: mini                 # or sizes: [nano, micro]; widths: [64, 96] (d_model)
      data: ../shared/data/corpora/tinyshakespeare.txt
      vocab_size: 2048
      budget: 4.0e+12            # or budgets: [1.0e+12, 3.0e+12]; FLOPs, 2 per multiply-add
      seeds: 3                   # seeds first_seed .. first_seed+2
      first_seed: 0              # default 0
      recipe: {lr: 6.0e-4}       # any harness.runs.spec.Recipe field
      set: {window: 64}          # model config overrides
      eval: {tasks: [wikitext, piqa], limit: 200, task_data: ../shared/data/lm_eval}   # or eval: false
      train_probes: [16, 64]     # synthetic data: recall distances scored at every validation point

Numbers written as ``4e12`` (which YAML reads as text) are accepted too. ``options_from_entry``
checks every key, so a typo fails before anything trains.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.runs.pipeline import EvalOptions
from harness.runs.spec import Recipe
from harness.runs.validation import check_train_probes
from harness.sweeps.compare import SweepOptions

ENTRY_KEYS = ("name", "role", "archs", "size", "sizes", "widths", "budget", "budgets", "seeds", "first_seed", "data",
              "vocab_size", "recipe", "set", "device", "dtype", "compile", "reference", "eval", "attention_flops", "match",
              "train_probes")
EVAL_KEYS = ("tasks", "limit", "task_data")


def _number(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}.") from None


def _listed(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _recipe(data: Any, where: str) -> Recipe:
    data = dict(data or {})
    known = {f.name: f for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown recipe field(s) {', '.join(unknown)}; known: {', '.join(known)}.")
    typed = {}
    for key, value in data.items():
        number = _number(value, f"{where}: recipe.{key}")
        typed[key] = int(number) if "int" in str(known[key].type) and number == int(number) else number
    return Recipe(**typed)


def _evaluation(data: Any, where: str) -> EvalOptions:
    if data is False:
        return EvalOptions(enabled=False)
    data = dict(data or {})
    unknown = sorted(set(data) - set(EVAL_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown eval key(s) {', '.join(unknown)}; known: {', '.join(EVAL_KEYS)}, or eval: false.")
    tasks = data.get("tasks")
    return EvalOptions(tasks=tuple(str(t) for t in _listed(tasks)) if tasks is not None else None,
                       limit=data.get("limit"), task_data=data.get("task_data"))


def options_from_entry(entry: dict[str, Any], where: str = "a sweep") -> SweepOptions:
    """A study file's sweep entry (see the module docstring) as ``SweepOptions``; one ``ValueError`` per bad key."""
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(ENTRY_KEYS)}.")
    if "size" in entry and "sizes" in entry or "budget" in entry and "budgets" in entry:
        raise ValueError(f"{where}: give size or sizes, budget or budgets, not both.")
    sizes = _listed(entry.get("sizes", entry.get("size", "micro")))
    budgets = entry.get("budgets", entry.get("budget"))
    widths = entry.get("widths")
    options = SweepOptions(
        archs=tuple(str(a) for a in _listed(entry.get("archs", SweepOptions.archs))),
        seeds=entry.get("seeds", 1), first_seed=entry.get("first_seed", 0), sizes=tuple(str(s) for s in sizes),
        widths=tuple(widths) if widths is not None else None,
        budgets=tuple(_number(b, f"{where}: budget") for b in _listed(budgets)) if budgets is not None else None,
        data=str(entry.get("data", "synthetic")), vocab_size=entry.get("vocab_size"),
        recipe=_recipe(entry.get("recipe"), where), overrides=dict(entry.get("set") or {}),
        device=entry.get("device"), dtype=entry.get("dtype"), compile=entry.get("compile"),
        reference=entry.get("reference"), evaluation=_evaluation(entry.get("eval"), where),
        attention_flops=str(entry.get("attention_flops", SweepOptions.attention_flops)),
        match=str(entry.get("match", SweepOptions.match)),
        train_probes=check_train_probes(_listed(entry.get("train_probes", []))),
    )
    return options

