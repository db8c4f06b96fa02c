"""A study: several matched-compute sweeps (settings) reported together, with generated Findings.

A study file (YAML, e.g. ``studies/gpt-family-cpu.yaml``) names the study and lists its
sweeps; each sweep is typed data (archs, size, budget, seeds, eval …: ``harness.sweeps.entries``)
and a *role* that says what the report does with it:

- ``synthetic``: the built-in corpus; excess loss per segment, probe accuracy by distance,
  MoE routing statistics, the architecture comparisons;
- ``text``: a real corpus; bits per byte against unigram and lm-eval tasks beside chance;
- ``lr``: the same runs as ``synthetic`` at another learning rate, for sensitivity.

An optional top-level ``slurm:`` mapping gives the Slurm resources (``harness.sweeps.executors.SlurmOptions``)
used with ``--executor slurm``. The study's ``reports/<name>/runs.json`` has ``mode: "study"``, each
sweep's run ids and each run's state, so
``python -m harness report <name>`` regenerates the study report from the records alone.
``gpt_family_comparisons`` plans the family of comparisons that ``harness.reporting.findings`` tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.reporting.findings import Comparison
from harness.sweeps.compare import SweepOptions
from harness.sweeps.entries import options_from_entry
from harness.sweeps.runs_file import write_runs_file

STUDY_MODE = "study"
ROLES = ("synthetic", "text", "lr")
TAIL_FRACTION = 0.2  # routing statistics average the last 20 % of logged steps
GRAD_NORM_SKIP = 0.2  # gradient-norm variability ignores the first 20 % of steps (warm-up)


@dataclass
class StudySweep:
    """One sweep of a study: its ``name``, ``role``, and the typed sweep (``options``, from the file's ``entry``)."""

    name: str
    role: str
    options: SweepOptions
    entry: dict[str, Any] = field(default_factory=dict)  # the study file's fields for this sweep, as written

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"sweep {self.name!r} has role {self.role!r}; roles: {', '.join(ROLES)}.")


@dataclass
class StudySpec:
    name: str
    sweeps: list[StudySweep]
    reference: str = "gpt2"
    source: str | None = None
    description: str = ""  # why these sweeps: sizes, budgets, data, and what was left out
    slurm: dict[str, Any] = field(default_factory=dict)  # Slurm resources (harness.sweeps.executors.SlurmOptions)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> "StudySpec":
        where = source or "the study"
        if not isinstance(data, dict) or not data.get("name") or not data.get("sweeps"):
            raise ValueError(f"{where} needs a `name` and a list of `sweeps` (name, role and the sweep's fields).")
        sweeps = []
        for item in data["sweeps"]:
            if not isinstance(item, dict) or {"name", "role"} - set(item):
                raise ValueError(f"every sweep in {where} needs a `name` and a `role` ({', '.join(ROLES)}).")
            if "args" in item:
                raise ValueError(f"sweep {item['name']!r} in {where} uses `args` (a command line); write its fields "
                                 f"instead (archs, size, budget, seeds, eval ...: see harness/sweeps/entries.py).")
            entry = {key: value for key, value in item.items() if key not in ("name", "role")}
            options = options_from_entry(item, f"sweep {item['name']!r} in {where}")
            sweeps.append(StudySweep(str(item["name"]), str(item["role"]), options, entry))
        names, roles = [s.name for s in sweeps], [s.role for s in sweeps]
        if len(set(names)) != len(names):
            raise ValueError(f"sweep names in {where} must be unique, got {', '.join(names)}.")
        if len(set(roles)) != len(roles):
            raise ValueError(f"each role may appear once in {where}, got {', '.join(roles)}.")
        slurm = data.get("slurm") or {}
        if not isinstance(slurm, dict):
            raise ValueError(f"`slurm` in {where} must be a mapping (partition, time_min, gpus_per_run, ...).")
        return cls(str(data["name"]), sweeps, str(data.get("reference", "gpt2")), source,
                   " ".join(str(data.get("description") or "").split()), slurm)


def load_study(path: str | Path) -> StudySpec:
    """Read a study YAML file (see the module docstring)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"study file {path} does not exist; see studies/ for examples.")
    return StudySpec.from_dict(yaml.safe_load(path.read_text()), str(path))


def write_study_file(report_dir: str | Path, spec: StudySpec, sweeps: dict[str, dict[str, Any]],
                     runs: dict[str, dict[str, Any]] | None = None) -> Path:
    """``reports/<name>/runs.json`` for a study: each sweep's role, fields, command and run ids, and
    each run's state (``harness.sweeps.state``)."""
    run_ids = list(dict.fromkeys(r for sweep in sweeps.values() for r in sweep["run_ids"]))
    payload = {"name": spec.name, "mode": STUDY_MODE, "reference": spec.reference, "source": spec.source,
               "description": spec.description, "sweeps": sweeps, "run_ids": run_ids, "runs": runs or {}}
    return write_runs_file(report_dir, payload)


# ----------------------------------------------------------------------------- per-run measures


def per_seed(frame: pd.DataFrame | None, arch: str, column: str) -> list[float]:
    """``column`` of ``arch``'s runs ordered by seed (missing values dropped)."""
    if frame is None or frame.empty or column not in frame.columns:
        return []
    rows = frame[frame["arch"] == arch].sort_values("seed")
    values = pd.to_numeric(rows[column], errors="coerce")
    return [float(v) for v in values if math.isfinite(v)]


def _curve(curves: pd.DataFrame, run_id: str, metric: str) -> np.ndarray:
    rows = curves[(curves["run_id"] == run_id) & (curves["metric"] == metric)].sort_values("step")
    return rows["value"].to_numpy(dtype=np.float64)


def add_curve_measures(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per-run summaries of the training curves, as columns of ``runs``.

    ``grad_norm_log_std``: standard deviation of ln(gradient norm before clipping) over the
    steps after the first 20 % (variability of the update size); ``grad_norm_max_ratio``:
    largest / median gradient norm over the same steps (spikes); ``moe_balance_tail`` and
    ``moe_dropped_tail``: the Switch balance term E·Σᵢ fᵢPᵢ, unweighted (1 = uniform load;
    the logged ``moe_balance`` is multiplied by ``moe_balance_weight``) and the fraction of
    expert assignments dropped by the capacity, averaged over the last 20 % of steps;
    ``moe_dropped_mean``: the dropped fraction averaged over the whole run.
    """
    runs = runs.copy()
    for column in ("grad_norm_log_std", "grad_norm_max_ratio", "moe_balance_tail", "moe_dropped_tail",
                   "moe_dropped_mean"):
        runs[column] = math.nan
    for index, row in runs.iterrows():
        norms = _curve(curves, row["run_id"], "grad_norm")
        norms = norms[int(len(norms) * GRAD_NORM_SKIP):]
        norms = norms[np.isfinite(norms) & (norms > 0)]
        if len(norms) > 2:
            runs.at[index, "grad_norm_log_std"] = float(np.log(norms).std(ddof=1))
            runs.at[index, "grad_norm_max_ratio"] = float(norms.max() / np.median(norms))
        weight = float(row.get("model/moe_balance_weight") or 1.0)  # the logged term is weighted: unweight it
        for metric, name, scale in (("moe_balance", "moe_balance_tail", 1 / weight),
                                    ("moe_dropped_fraction", "moe_dropped_tail", 1.0)):
            values = _curve(curves, row["run_id"], metric) * scale
            if len(values):
                runs.at[index, name] = float(values[-max(1, int(len(values) * TAIL_FRACTION)):].mean())
        dropped = _curve(curves, row["run_id"], "moe_dropped_fraction")
        if len(dropped):
            runs.at[index, "moe_dropped_mean"] = float(dropped.mean())
    return runs


def lr_degradation(base: pd.DataFrame, other: pd.DataFrame, arch: str, column: str = "final_val_loss") -> list[float]:
    """Per seed: ``column`` at the other learning rate − at the base one (same arch, seed and data order)."""
    if base is None or other is None or base.empty or other.empty:
        return []
    a = base[base["arch"] == arch].set_index("seed")[column]
    b = other[other["arch"] == arch].set_index("seed")[column]
    seeds = sorted(set(a.index) & set(b.index))
    return [float(b[s] - a[s]) for s in seeds if math.isfinite(b[s]) and math.isfinite(a[s])]


# ----------------------------------------------------------------------------- the comparisons

LABELS = {"gpt1": "GPT-1 (post-LN)", "gpt2": "GPT-2 (pre-LN, dense)", "gpt3": "GPT-3 (dense/banded)",
          "gpt4": "GPT-4-style (MoE)"}
XIONG = "pre-LN transformers train faster and tolerate larger learning rates (Xiong et al. 2020)"
SWITCH = "more parameters at the same active FLOPs lower the loss (Switch Transformer, Fedus et al. 2021)"


def _label(arch: str) -> str:
    return LABELS.get(arch, arch)


def matched_compute_context(frame: pd.DataFrame | None, a: str, b: str) -> str:
    """A sentence when two architectures at one budget saw different numbers of tokens (≥ 1 % apart)."""
    tokens_a, tokens_b = per_seed(frame, a, "tokens"), per_seed(frame, b, "tokens")
    flops_a, flops_b = per_seed(frame, a, "train_flops_per_token"), per_seed(frame, b, "train_flops_per_token")
    if not (tokens_a and tokens_b and flops_a and flops_b):
        return ""
    ratio = np.mean(tokens_a) / np.mean(tokens_b) - 1
    if abs(ratio) < 0.01:
        return ""
    more = "more" if ratio > 0 else "fewer"
    return (f"At the same budget {a} trained on {100 * abs(ratio):.1f} % {more} tokens ({np.mean(tokens_a) / 1e3:.0f}k vs "
            f"{np.mean(tokens_b) / 1e3:.0f}k) because its training FLOPs per token are {flops_a[0] / 1e6:.2f}M vs "
            f"{flops_b[0] / 1e6:.2f}M (2 per multiply-add).")


def lr_base(settings: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The setting an ``lr`` sweep varies: the one trained on the same data (text or synthetic)."""
    lr = settings.get("lr")
    if lr is None or lr.empty:
        return settings.get("synthetic")
    spec = lr["data/spec"].iloc[0] if "data/spec" in lr.columns else None
    for role in ("text", "synthetic"):
        frame = settings.get(role)
        if frame is not None and not frame.empty and "data/spec" in frame.columns and frame["data/spec"].iloc[0] == spec:
            return frame
    return None


def gpt_family_comparisons(settings: dict[str, pd.DataFrame], window: int | None = None,
                           base_lr: float | None = None, other_lr: float | None = None) -> list[Comparison]:
    """The planned family: banded vs dense, MoE vs dense at matched active FLOPs, post-LN vs pre-LN.

    ``settings`` maps a role (``synthetic``, ``text``, ``lr``) to its runs frame (with
    ``add_curve_measures`` applied to the synthetic one). Comparisons without data are left out.
    """
    syn, text, lr = settings.get("synthetic"), settings.get("text"), settings.get("lr")
    band = f"the {window}-token band" if window else "the band"
    out: list[Comparison] = []

    def add(key, topic, frame, column, metric, unit, a, b, higher, expected, why, values=None):
        va, vb = values if values else (per_seed(frame, a, column), per_seed(frame, b, column))
        if va and vb:
            out.append(Comparison(key, topic, metric, unit, _label(a), _label(b), va, vb, higher, expected, why,
                                  matched_compute_context(frame, a, b)))

    topic = "banded vs dense attention"
    for distance in (16, 48, 128):
        inside = window is None or distance < window
        where = f"inside {band}" if inside else f"beyond {band}, inside the context"
        add(f"recall_{distance}/gpt3-vs-gpt2", topic, syn, f"eval/harness_recall_{distance}/acc",
            f"recall accuracy {distance} tokens back ({where})", "accuracy", "gpt3", "gpt2", True,
            "no difference" if inside else "worse",
            f"every layer sees {distance} tokens back" if inside else
            "half of GPT-3's layers cannot attend that far, unless its dense layers compensate")
    add("recall_excess/gpt3-vs-gpt2", topic, syn, "segment/recall/excess_loss",
        "excess loss on recall tokens", "nats/token", "gpt3", "gpt2", False, "worse",
        "recall needs attention to earlier definitions")
    add("excess/gpt3-vs-gpt2", topic, syn, "excess_loss", "excess loss over the entropy floor (synthetic)",
        "nats/token", "gpt3", "gpt2", False, None, "")
    add("bpb/gpt3-vs-gpt2", topic, text, "val_bpb", "validation bits per byte (text)", "bits/byte",
        "gpt3", "gpt2", False, None, "")

    topic = "MoE vs dense at matched active FLOPs"
    add("excess/gpt4-vs-gpt3", topic, syn, "excess_loss", "excess loss over the entropy floor (synthetic)",
        "nats/token", "gpt4", "gpt3", False, "better", SWITCH)
    add("facts_acc/gpt4-vs-gpt3", topic, syn, "eval/harness_facts/acc", "facts accuracy (memorised table)",
        "accuracy", "gpt4", "gpt3", True, "better", "memorisation scales with total parameters")
    add("facts_excess/gpt4-vs-gpt3", topic, syn, "segment/facts/excess_loss", "excess loss on fact tokens",
        "nats/token", "gpt4", "gpt3", False, "better", "memorisation scales with total parameters")
    add("bpb/gpt4-vs-gpt3", topic, text, "val_bpb", "validation bits per byte (text)", "bits/byte",
        "gpt4", "gpt3", False, "better", SWITCH)

    topic = "post-LN (GPT-1) vs pre-LN (GPT-2)"
    add("excess/gpt1-vs-gpt2", topic, syn, "excess_loss", "excess loss over the entropy floor (synthetic)",
        "nats/token", "gpt1", "gpt2", False, "worse", XIONG)
    add("bpb/gpt1-vs-gpt2", topic, text, "val_bpb", "validation bits per byte (text)", "bits/byte",
        "gpt1", "gpt2", False, "worse", XIONG)
    base = lr_base(settings)
    kind = "text" if base is text else "synthetic"
    add("grad_norm/gpt1-vs-gpt2", topic, base, "grad_norm_log_std",
        f"gradient-norm variability (std of ln ‖g‖ after warm-up, {kind})", "", "gpt1", "gpt2", False, "worse",
        "post-LN gradients are less well conditioned (Xiong et al. 2020)")
    if lr is not None and base is not None:
        what = (f"loss change from learning rate {base_lr:g} to {other_lr:g} ({kind}; negative: the change helped)"
                if base_lr and other_lr else f"loss change at the other learning rate ({kind})")
        # the change is other − base (lower is better): a smaller learning rate should help post-LN more,
        # a larger one should hurt it more
        expected = None if not (base_lr and other_lr) else ("better" if other_lr < base_lr else "worse")
        add("lr_sensitivity/gpt1-vs-gpt2", topic, None, "", what, "nats/token", "gpt1", "gpt2", False, expected,
            "post-LN needs a smaller learning rate or a longer warm-up than pre-LN (Xiong et al. 2020; "
            "Liu et al. 2020)", values=(lr_degradation(base, lr, "gpt1"), lr_degradation(base, lr, "gpt2")))
    return out
