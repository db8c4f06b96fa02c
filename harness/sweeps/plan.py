"""The pre-registered plan of a study: its comparisons, fixed (with a sha256) before the first run trains.

A study file's ``comparisons:`` list says, for each comparison, which two architectures, on which
metric of which sweep, which way the literature expects it to go and why (with a citation),
the primary test (``paired``: seed i of one arm against seed i of the other, which share the
initialisation seed and data order; ``welch``: independent groups) and whether it is
``confirmatory`` (one of the family that Holm's correction covers) or ``exploratory``.

The study's ``tune:`` block (per-architecture learning-rate tuning, ``harness.sweeps.tuning``) is
part of the plan as written: changing the grid once runs have data is an amendment too.

``register_plan`` writes ``reports/<name>/data/plan.json`` before anything trains:

- no plan yet: the plan, its sha256 and the time (``before_data`` says whether any run had data);
- the same plan again: nothing changes;
- a changed plan while no run has data: it replaces the old one (still planned before the data);
- a changed plan once runs have data: refused unless ``amend`` gives a reason; then the new plan,
  its sha256, the reason, the time and the settings (sweep names and roles) that had data are
  appended to ``amendments`` and the old plan is kept.

``effective_comparisons`` turns the file into what the report tests: the family is every
confirmatory comparison of the plan as first registered (before data), in its registered form,
even if an amendment later changed or removed it; a comparison an amendment changed, or added on
a setting that already had data, is exploratory, outside the corrected family. A confirmatory
comparison an amendment added on a setting with no data yet (a new sweep, written down before
its runs train) joins the family: it was planned before its data like the rest. A plan first
registered after runs had data has no confirmatory family at all.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.io import read_json, write_json_atomic

PLAN_NAME = "plan.json"
EXPECTATIONS = ("better", "worse", "no difference")
TESTS = ("paired", "welch")
KINDS = ("confirmatory", "exploratory")
CAUSAL = re.compile(r"\bbecause\b", re.IGNORECASE)


@dataclass(frozen=True)
class PlannedComparison:
    """One comparison as planned: ``a`` against ``b`` on ``metric`` of sweep ``setting``.

    ``metric``: a column of the sweep's runs frame (``harness.reporting.results``), e.g.
    ``excess_loss``, ``eval/harness_recall_16/acc``, ``grad_norm_log_std``; with ``change_to``
    (another sweep's name) the value per seed is metric(change_to) − metric(setting).
    ``expected``: what the literature expects of ``a`` relative to ``b`` (None: no expectation),
    ``reason`` and ``citation`` say why. ``cause``: a candidate explanation of a difference, as a noun
    phrase ("the extra tokens it trained on"; the report writes "because of <cause>" or "co-occurs with
    <cause>"), and ``control``: the key of the planned comparison that tests it (the report says
    "because" only when that control is planned, confirmatory and resolved).
    """

    key: str
    topic: str
    setting: str
    metric: str
    label: str
    a: str
    b: str
    higher_is_better: bool
    unit: str = ""
    expected: str | None = None
    reason: str = ""
    citation: str = ""
    test: str = "paired"
    kind: str = "confirmatory"
    change_to: str | None = None
    cause: str = ""
    control: str | None = None

    @classmethod
    def from_dict(cls, item: dict[str, Any], where: str) -> "PlannedComparison":
        if not isinstance(item, dict):
            raise ValueError(f"each entry of `comparisons` in {where} must be a mapping, got {item!r}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(item) - known)
        if unknown:
            raise ValueError(f"comparison {item.get('key')!r} in {where} has unknown field(s) {', '.join(unknown)}; "
                             f"fields: {', '.join(sorted(known))}.")
        missing = [name for name in ("key", "topic", "setting", "metric", "label", "a", "b", "higher_is_better")
                   if item.get(name) is None]
        if missing:
            raise ValueError(f"comparison {item.get('key')!r} in {where} lacks {', '.join(missing)}.")
        values = {k: (" ".join(v.split()) if isinstance(v, str) else v) for k, v in item.items()}
        if str(values.get("expected")).lower() in ("none", "null", ""):
            values["expected"] = None
        comparison = cls(**values)
        comparison.check(where)
        return comparison

    def check(self, where: str) -> None:
        if self.expected is not None and self.expected not in EXPECTATIONS:
            raise ValueError(f"comparison {self.key!r} in {where}: expected must be one of {', '.join(EXPECTATIONS)} "
                             f"or none, got {self.expected!r}.")
        if self.test not in TESTS:
            raise ValueError(f"comparison {self.key!r} in {where}: test must be paired or welch, got {self.test!r}.")
        if self.kind not in KINDS:
            raise ValueError(f"comparison {self.key!r} in {where}: kind must be confirmatory or exploratory, "
                             f"got {self.kind!r}.")
        if not isinstance(self.higher_is_better, bool):
            raise ValueError(f"comparison {self.key!r} in {where}: higher_is_better must be true or false.")
        for name in ("label", "reason", "cause", "topic"):
            if CAUSAL.search(getattr(self, name) or ""):
                raise ValueError(f"comparison {self.key!r} in {where}: its {name} says 'because'; state it without "
                                 "the causal word (the report writes one only where a planned control tests the cause).")
        if self.cause and not self.control:
            raise ValueError(f"comparison {self.key!r} in {where} names a cause but no `control` (the key of the "
                             "planned comparison that tests it).")


@dataclass(frozen=True)
class Plan:
    """The comparisons, and the ``tune:`` block as written (None: rates not tuned; left out of the
    dict and so of the sha256, which stays what it was for a plan without one)."""

    comparisons: tuple[PlannedComparison, ...]
    tune: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"comparisons": [asdict(c) for c in self.comparisons]}
        if self.tune is not None:
            out["tune"] = self.tune
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the plan") -> "Plan":
        items = (data or {}).get("comparisons") or []
        if not isinstance(items, list):
            raise ValueError(f"`comparisons` in {where} must be a list of comparisons.")
        comparisons = tuple(PlannedComparison.from_dict(item, where) for item in items)
        keys = [c.key for c in comparisons]
        if len(set(keys)) != len(keys):
            raise ValueError(f"comparison keys in {where} must be unique, got {', '.join(keys)}.")
        for c in comparisons:
            if c.control is not None and c.control not in keys:
                raise ValueError(f"comparison {c.key!r} in {where} names control {c.control!r}, which is not a "
                                 "comparison of the plan.")
        tune = (data or {}).get("tune")
        if tune is not None and not isinstance(tune, dict):
            raise ValueError(f"`tune` in {where} must be a mapping (see harness/sweeps/tuning.py).")
        return cls(comparisons, dict(tune) if tune is not None else None)

    def sha256(self) -> str:
        return plan_sha256(self.to_dict())

    def by_key(self) -> dict[str, PlannedComparison]:
        return {c.key: c for c in self.comparisons}


def check_settings(plan: Plan, settings: set[str], where: str) -> None:
    """``ValueError`` when a comparison names a sweep (``setting``/``change_to``) the study does not have."""
    for c in plan.comparisons:
        for name in (c.setting, c.change_to):
            if name is not None and name not in settings:
                raise ValueError(f"comparison {c.key!r} in {where} names sweep {name!r}; the study's sweeps (or roles) "
                                 f"are {', '.join(sorted(settings))}.")


def plan_sha256(plan: dict[str, Any]) -> str:
    """sha256 of the plan's canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_plan(path: str | Path) -> Plan:
    """The ``comparisons:`` (and ``tune:``) of a study file as a ``Plan`` (empty when the file has none)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"study file {path} does not exist; see studies/ for examples.")
    return Plan.from_dict(yaml.safe_load(path.read_text()) or {}, str(path))


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def read_plan_file(data_dir: str | Path) -> dict[str, Any] | None:
    """``data/plan.json`` as written by ``register_plan``, or None when the study has none."""
    path = Path(data_dir) / PLAN_NAME
    return read_json(path) if path.exists() else None


def latest_plan(registered: dict[str, Any]) -> dict[str, Any]:
    """The plan in force: the last amendment's, else the registered one (plan dicts)."""
    amendments = registered.get("amendments") or []
    return amendments[-1]["plan"] if amendments else registered["plan"]


def _diff(old: Plan, new: Plan) -> dict[str, list[str]]:
    before, after = old.by_key(), new.by_key()
    return {"added": [k for k in after if k not in before], "removed": [k for k in before if k not in after],
            "changed": [k for k in after if k in before and after[k] != before[k]], "tune_changed": old.tune != new.tune}


def register_plan(data_dir: str | Path, plan: Plan, *, data_exist: bool, amend: str | None = None,
                  now: str | None = None, settings_with_data: set[str] | None = None) -> str:
    """Write or check ``data/plan.json`` (see the module docstring); returns what happened:
    ``registered``, ``unchanged``, ``replaced`` or ``amended``. Raises ``ValueError`` on a changed
    plan after data without ``amend``. ``settings_with_data``: the sweep names and roles with data
    now (None: unknown, taken as all, so an amendment's additions stay exploratory)."""
    data_dir = Path(data_dir)
    current = read_plan_file(data_dir)
    sha = plan.sha256()
    stamp = now or _now()
    if current is None or (not data_exist and not current.get("amendments")):
        if current is not None and current["sha256"] == sha:
            return "unchanged"
        write_json_atomic(data_dir / PLAN_NAME, {"plan": plan.to_dict(), "sha256": sha, "registered_at": stamp,
                                                 "before_data": not data_exist, "amendments": []})
        return "registered" if current is None else "replaced"
    previous = latest_plan(current)
    if plan_sha256(previous) == sha:
        if amend:
            raise ValueError("--amend was given but the plan is unchanged; drop --amend.")
        return "unchanged"
    if not amend:
        raise ValueError(f"the planned comparisons or learning-rate tuning changed after runs have data "
                         f"(sha256 {plan_sha256(previous)[:12]} → {sha[:12]}); restore them, or pass --amend \"reason\" "
                         "to record the change as a deviation.")
    change = _diff(Plan.from_dict(previous), plan)
    known = {} if settings_with_data is None else {"settings_with_data": sorted(settings_with_data)}
    current.setdefault("amendments", []).append({"time": stamp, "reason": " ".join(amend.split()), "old_sha256":
                                                 plan_sha256(previous), "sha256": sha, "plan": plan.to_dict(), **change,
                                                 **known})
    write_json_atomic(data_dir / PLAN_NAME, current)
    return "amended"


@dataclass(frozen=True)
class Effective:
    """A comparison as the report tests it: ``in_family`` (confirmatory, Holm-corrected) or not."""

    comparison: PlannedComparison
    in_family: bool
    note: str = ""  # why it is outside the family, when it was planned otherwise


def effective_comparisons(registered: dict[str, Any]) -> list[Effective]:
    """The family (as first registered) and the exploratory comparisons (see the module docstring)."""
    original = Plan.from_dict(registered["plan"])
    latest = Plan.from_dict(latest_plan(registered))
    before = bool(registered.get("before_data", True))
    out = [Effective(c, before and c.kind == "confirmatory",
                     "" if before or c.kind != "confirmatory" else "plan registered after runs had data")
           for c in original.comparisons]
    first = original.by_key()
    added_before_data = _added_before_their_data(registered, first)
    for c in latest.comparisons:
        if c.key in first and first[c.key] == c:
            continue
        if c.key in added_before_data and c.kind == "confirmatory" and before:
            out.append(Effective(c, True))
            continue
        why = "changed by an amendment after data" if c.key in first else "added by an amendment after data"
        key = f"{c.key} (amended)" if c.key in first else c.key
        out.append(Effective(replace(c, key=key, kind="exploratory"), False, why))
    return out


def _added_before_their_data(registered: dict[str, Any], first: dict[str, PlannedComparison]) -> set[str]:
    """Keys of comparisons an amendment added, unchanged since, that read only settings with no data then."""
    state: dict[str, tuple[PlannedComparison, bool]] = {}  # key -> (its latest form, added before its data)
    for amendment in registered.get("amendments") or []:
        with_data = amendment.get("settings_with_data")
        for key, c in Plan.from_dict(amendment["plan"]).by_key().items():
            if key in first or (key in state and state[key][0] == c):
                continue
            read = {c.setting, c.change_to} - {None}  # the settings its values come from
            fresh = key not in state and with_data is not None and not read & set(with_data)
            state[key] = (c, fresh)
    return {key for key, (_, fresh) in state.items() if fresh}


def amendment_lines(registered: dict[str, Any]) -> list[str]:
    """One markdown bullet per amendment: time, reason, what changed; ["none"] without any."""
    lines = []
    for a in registered.get("amendments") or []:
        parts = [f"{what} {', '.join(f'`{k}`' for k in a.get(what) or [])}" for what in ("added", "changed", "removed")
                 if a.get(what)] + (["changed the learning-rate tuning (`tune`)"] if a.get("tune_changed") else [])
        lines.append(f"- {a['time']}: \"{a['reason']}\" — plan sha256 `{a['old_sha256'][:12]}` → `{a['sha256'][:12]}`"
                     f" ({'; '.join(parts) or 'wording only'}). " + _amendment_rule(a))
    return lines


def _amendment_rule(amendment: dict[str, Any]) -> str:
    if "settings_with_data" not in amendment:  # recorded before amendments named the settings with data
        return "Added or changed comparisons are exploratory; removed ones are still tested as registered."
    with_data = ", ".join(f"`{name}`" for name in amendment["settings_with_data"]) or "none"
    return (f"Settings with data then: {with_data}. Changed comparisons, and added ones on those settings, are "
            "exploratory; added confirmatory ones on other settings join the family (planned before their data); "
            "removed ones are still tested as registered.")


def preregister(study_file: str | Path, report_dir: Path, results_root: Path, run_ids: dict[str, list[str]],
                amend: str | None, roles: dict[str, str] | None = None) -> str:
    """Register (or check) a study's plan in ``report_dir/data`` before anything trains; the outcome
    (``register_plan``'s). ``run_ids``: sweep name → its planned run ids (tuning runs included);
    ``roles``: sweep name → role. A run has data once the report's data folder holds it or
    ``results_root`` holds it finished."""
    from harness.runs.compact import copy_study_file, has_data, is_finished

    plan = load_plan(study_file)
    with_data = {name for name, ids in run_ids.items()
                 if has_data(report_dir, ids) or any(is_finished(Path(results_root) / i) for i in ids)}
    with_data |= {(roles or {}).get(name, name) for name in with_data}
    data_exist = has_data(report_dir) or bool(with_data)
    status = register_plan(Path(report_dir) / "data", plan, data_exist=data_exist, amend=amend,
                           settings_with_data=with_data)
    if status != "unchanged" or not (Path(report_dir) / "data" / "study.yaml").exists():
        copy_study_file(study_file, report_dir)
    return status
