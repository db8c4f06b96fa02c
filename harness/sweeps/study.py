"""A study: several matched-compute sweeps (settings) reported together, with generated Findings.

A study file (YAML, e.g. ``studies/gpt-family-cpu.yaml``) names the study and lists its
sweeps; each sweep is typed data (archs, size, budget, seeds, eval …: ``harness.sweeps.entries``)
and a *role* that says what the report does with it:

- ``synthetic``: the built-in corpus; excess loss per segment, probe accuracy by distance,
  MoE routing statistics, the architecture comparisons;
- ``text``: a real corpus; bits per byte against unigram and lm-eval tasks beside chance;
- ``lr``: the same runs as ``synthetic`` at another learning rate, for sensitivity;
- ``recall``: a synthetic corpus centred on key → value recall (e.g. most blocks queries, few pairs per
  definition), where the recall probes can engage; its quality, per-segment excess loss and probes by
  distance, beside the ``synthetic`` setting;
- ``tokens``: a token-matched arm (``match: tokens``) of a compute-matched sweep on the same data: every
  architecture trains the reference's tokens, shown side by side with the compute-matched arm.

An optional top-level ``probes: {distances: [16, 64], threshold: 0.3}`` block
(``harness.sweeps.probe_measures.ProbeSettings``) asks the report for FLOPs to reach the threshold
of the in-training recall probes; each distance must be in some sweep's ``train_probes``.
An optional top-level ``tune:`` block tunes the peak learning rate per architecture before the
comparison sweeps train (``harness.sweeps.tuning``); a sweep entry's ``lr_from: <tuned sweep>`` uses
the rates tuned for that sweep. An optional top-level ``slurm:`` mapping gives the Slurm resources (``harness.sweeps.executors.SlurmOptions``)
used with ``--executor slurm``. The study's ``reports/<name>/runs.json`` has ``mode: "study"``, each
sweep's run ids and each run's state, so ``python -m harness report <name>`` regenerates the study
report from the data kept in ``reports/<name>/data/``. The planned comparisons live in the study
file's ``comparisons:`` (``harness.sweeps.plan``), not in code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.sweeps.compare import SweepOptions
from harness.sweeps.entries import options_from_entry
from harness.sweeps.probe_measures import ProbeSettings
from harness.sweeps.runs_file import write_runs_file
from harness.sweeps.tuning import TuneSpec, check_lr_from, check_tuning, rate_sources

STUDY_MODE = "study"
ROLES = ("synthetic", "recall", "text", "lr", "tokens")
TAIL_FRACTION = 0.2  # routing statistics average the last 20 % of logged steps
GRAD_NORM_SKIP = 0.2  # gradient-norm variability ignores the first 20 % of steps (warm-up)


@dataclass
class StudySweep:
    """One sweep of a study: its ``name``, ``role``, and the typed sweep (``options``, from the file's ``entry``)."""

    name: str
    role: str
    options: SweepOptions
    entry: dict[str, Any] = field(default_factory=dict)  # the study file's fields for this sweep, as written
    lr_from: str | None = None  # the tuned sweep whose per-architecture rates this sweep uses

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
    probes: ProbeSettings | None = None  # FLOPs to a threshold of the in-training recall probes (the report)
    tune: TuneSpec | None = None  # per-architecture learning-rate tuning (harness.sweeps.tuning)

    def rate_sources(self) -> dict[str, str]:
        """Sweep name → the tuned sweep whose rates it uses (tuned sweeps: themselves; untuned: absent)."""
        return rate_sources([s.name for s in self.sweeps], self.tune, {s.name: s.lr_from for s in self.sweeps})

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
            fields = {key: value for key, value in item.items() if key != "lr_from"}
            options = options_from_entry(fields, f"sweep {item['name']!r} in {where}")
            lr_from = str(item["lr_from"]) if item.get("lr_from") is not None else None
            sweeps.append(StudySweep(str(item["name"]), str(item["role"]), options, entry, lr_from))
        names, roles = [s.name for s in sweeps], [s.role for s in sweeps]
        if len(set(names)) != len(names):
            raise ValueError(f"sweep names in {where} must be unique, got {', '.join(names)}.")
        if len(set(roles)) != len(roles):
            raise ValueError(f"each role may appear once in {where}, got {', '.join(roles)}.")
        for sweep in sweeps:
            if (sweep.role == "tokens") != (sweep.options.match == "tokens"):
                raise ValueError(f"sweep {sweep.name!r} in {where}: role tokens goes with `match: tokens` and only "
                                 f"with it (got role {sweep.role!r}, match {sweep.options.match!r}).")
        slurm = data.get("slurm") or {}
        if not isinstance(slurm, dict):
            raise ValueError(f"`slurm` in {where} must be a mapping (partition, time_min, gpus_per_run, ...).")
        tune = _tune(data.get("tune"), sweeps, where)
        return cls(str(data["name"]), sweeps, str(data.get("reference", "gpt2")), source,
                   " ".join(str(data.get("description") or "").split()), slurm, _probes(data, sweeps, where), tune)


def _probes(data: dict[str, Any], sweeps: list[StudySweep], where: str) -> ProbeSettings | None:
    if data.get("probes") is None:
        return None
    probes = ProbeSettings.from_dict(data["probes"], where)
    scored = {d for sweep in sweeps for d in sweep.options.train_probes}
    missing = [d for d in probes.distances if d not in scored]
    if missing:
        raise ValueError(f"`probes` in {where} asks for distance(s) {', '.join(map(str, missing))}, which no sweep "
                         f"scores during training; add them to a sweep's `train_probes` "
                         f"(e.g. train_probes: {list(probes.distances)}).")
    return probes


def _tune(block: Any, sweeps: list[StudySweep], where: str) -> TuneSpec | None:
    """The typed ``tune:`` block, checked against the sweeps (``lr_from`` needs one)."""
    lr_from = {s.name: s.lr_from for s in sweeps}
    check_lr_from(lr_from, [s.name for s in sweeps], where)
    if block is None:
        if any(lr_from.values()):
            raise ValueError(f"a sweep in {where} has lr_from but the study has no `tune:` block to tune rates.")
        return None
    tune = TuneSpec.from_dict(block, where)
    check_tuning(tune, {s.name: s.options for s in sweeps}, lr_from, where)
    return tune


def load_study(path: str | Path) -> StudySpec:
    """Read a study YAML file (see the module docstring)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"study file {path} does not exist; see studies/ for examples.")
    return StudySpec.from_dict(yaml.safe_load(path.read_text()), str(path))


def write_study_file(report_dir: str | Path, spec: StudySpec, sweeps: dict[str, dict[str, Any]],
                     runs: dict[str, dict[str, Any]] | None = None, tuning_ids: list[str] | None = None) -> Path:
    """``reports/<name>/runs.json`` for a study: each sweep's role, fields, command and run ids, and
    each run's state (``harness.sweeps.state``); ``tuning_ids``: the learning-rate tuning runs, if any."""
    run_ids = list(dict.fromkeys(r for sweep in sweeps.values() for r in sweep["run_ids"]))
    payload = {"name": spec.name, "mode": STUDY_MODE, "reference": spec.reference, "source": spec.source,
               "description": spec.description, "sweeps": sweeps, "run_ids": run_ids, "runs": runs or {}}
    if spec.probes is not None:  # only when asked for: a study without it keeps its runs.json as before
        payload["probes"] = spec.probes.to_dict()
    if tuning_ids:
        payload["tuning_run_ids"] = list(tuning_ids)
    return write_runs_file(report_dir, payload)


# ----------------------------------------------------------------------------- per-run measures


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


