"""Per-architecture learning-rate tuning in a study: the `tune:` block, the choice, the extensions, the run."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from harness.sweeps.study import StudySpec
from harness.sweeps.tuning import edge_step, select_rate
from cli_run import run_cli as _cli  # noqa: E402  (tests/ is on sys.path)

GRID = [5.0e-4, 1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3]


def _study(tune: dict | None = None, **sweep_extra) -> dict:
    sweep = {"name": "syn", "role": "synthetic", "archs": ["gpt2", "gpt3"], "size": "nano", "budget": 2.0e9,
             "seeds": 2, "eval": False, **sweep_extra}
    data = {"name": "tiny-tune", "sweeps": [sweep]}
    if tune is not None:
        data["tune"] = tune
    return data


def _tune(**changes) -> dict:
    return {"sweeps": ["syn"], "lrs": list(GRID), "seeds": 1, "first_seed": 100, **changes}


def test_a_valid_tune_block_is_typed():
    spec = StudySpec.from_dict(_study(_tune(budget="2e9")))
    assert spec.tune.lrs == tuple(GRID) and spec.tune.budget == 2e9 and list(spec.tune.seed_range) == [100]
    assert spec.rate_sources() == {"syn": "syn"}


@pytest.mark.parametrize("tune, message", [
    (_tune(lrs=GRID[:4]), "at least 5 learning rates"),
    (_tune(lrs=[5e-4, 1e-3, 2e-3, 4e-3, 9e-3]), "must be log-spaced"),
    (_tune(first_seed=1), "overlap sweep 'syn'"),
    (_tune(sweeps=["nope"]), "names 'nope'"),
    (_tune(select="mean_loss"), "tune.select"),
    (_tune(budget=-1), "tune.budget"),
])
def test_a_bad_tune_block_fails_with_one_sentence(tune, message):
    with pytest.raises(ValueError, match=message):
        StudySpec.from_dict(_study(tune))


def test_lr_from_must_name_a_sweep_of_the_study_and_a_tuned_one():
    data = _study(_tune())
    data["sweeps"].append({**data["sweeps"][0], "name": "tok", "role": "text", "lr_from": "missing"})
    with pytest.raises(ValueError, match="lr_from 'missing', which names no sweep"):
        StudySpec.from_dict(data)
    data["sweeps"][1]["lr_from"] = "syn"
    assert StudySpec.from_dict(data).rate_sources() == {"syn": "syn", "tok": "syn"}
    with pytest.raises(ValueError, match="no `tune:` block"):
        StudySpec.from_dict({**data, "tune": None})


def test_a_tuned_sweep_may_not_also_give_recipe_lr():
    with pytest.raises(ValueError, match="drop recipe.lr"):
        StudySpec.from_dict(_study(_tune(), recipe={"lr": 1e-3}))


def test_selection_picks_the_lowest_mean_over_seeds():
    losses = {1e-3: [3.0, 3.4], 2e-3: [2.5, 4.0], 4e-3: [3.1, 3.1], 8e-3: [None, math.nan]}
    assert select_rate(losses) == 4e-3  # means 3.2, 3.25, 3.1, +inf: not the single lowest loss (2.5)
    assert select_rate({1e-3: [3.0], 2e-3: [3.0]}) == 1e-3  # ties: the smaller rate
    assert select_rate({1e-3: [None], 2e-3: [float("nan")], 4e-3: [5.0]}) == 4e-3  # diverged counts as +inf
    assert select_rate({1e-3: [None]}) is None


def test_a_best_rate_at_the_edge_adds_the_next_log_step():
    assert edge_step(GRID, 8e-3, 2.0) == pytest.approx(1.6e-2)
    assert edge_step(GRID, 5e-4, 2.0) == pytest.approx(2.5e-4)
    assert edge_step(GRID, 2e-3, 2.0) is None


def _fake_round(losses):
    """``run_round`` for ``run_tuning``: writes a record per run with the loss ``losses(arch, lr)``."""
    from harness.runs.records import write_record
    from harness.sweeps.runner import SweepOutcome

    trained = []

    def run_round(plan, options, root):
        for spec in plan.specs:
            write_record(root / spec.run_id(), {"run_id": spec.run_id(), "status": "ok",
                                                "final_val_loss": losses(spec.arch, spec.recipe.lr)})
        trained.append([(s.arch, s.recipe.lr) for s in plan.specs])
        return SweepOutcome(run_ids=plan.run_ids)

    return run_round, trained


def test_edge_rates_extend_round_by_round_only_for_the_archs_at_the_edge(tmp_path):
    from harness.sweeps.tuning_run import run_tuning

    spec = StudySpec.from_dict(_study(_tune(max_extensions=2)))
    # gpt2's loss falls with the rate without end (always at the high edge); gpt3's is best at 2e-3
    run_round, trained = _fake_round(lambda arch, lr: -math.log(lr) if arch == "gpt2" else abs(math.log(lr / 2e-3)))
    result = run_tuning(spec, lambda plan, options: run_round(plan, options, tmp_path), tmp_path)
    assert [len(r) for r in trained] == [10, 1, 1]
    assert trained[1] == [("gpt2", pytest.approx(1.6e-2))] and trained[2] == [("gpt2", pytest.approx(3.2e-2))]
    assert result.chosen["syn"]["gpt3"] == 2e-3 and result.chosen["syn"]["gpt2"] == pytest.approx(3.2e-2)
    assert result.at_edge["syn"] == {"gpt2": True, "gpt3": False}
    assert [e["edge"] for e in result.extensions] == ["high", "high"]
    assert {row["seed"] for row in result.runs} == {100}


def test_tuning_seeds_never_appear_among_comparison_seeds(tmp_path):
    from harness.sweeps.tuning_run import comparison_plans, first_round

    spec = StudySpec.from_dict(_study(_tune(seeds=2, first_seed=2)))
    tuning_seeds = {run.spec.seed for run in first_round(spec)}
    comparison = comparison_plans(spec, {"syn": {"gpt2": 1e-3, "gpt3": 2e-3}})["syn"]
    assert tuning_seeds == {2, 3} and {s.seed for s in comparison.specs} == {0, 1}
    assert {(s.arch, s.recipe.lr) for s in comparison.specs} == {("gpt2", 1e-3), ("gpt3", 2e-3)}
    with pytest.raises(ValueError, match="overlap"):
        StudySpec.from_dict(_study(_tune(first_seed=1)))


def test_first_seed_and_lr_by_arch_leave_existing_run_ids_alone():
    from harness.sweeps.compare import SweepOptions, plan_sweep

    base = SweepOptions(archs=("gpt2", "gpt3"), sizes=("nano",), budgets=(2e9,), seeds=2)
    before = plan_sweep(base).run_ids
    assert plan_sweep(SweepOptions(**{**base.__dict__, "first_seed": 0, "lr_by_arch": {}})).run_ids == before
    shifted = plan_sweep(SweepOptions(**{**base.__dict__, "first_seed": 5}))
    assert sorted({s.seed for s in shifted.specs}) == [5, 6]
    tuned = plan_sweep(SweepOptions(**{**base.__dict__, "lr_by_arch": {"gpt3": 4e-3}}))
    assert [s.recipe.lr for s in tuned.specs if s.arch == "gpt3"] == [4e-3, 4e-3]
    assert [r for r in tuned.run_ids if r.startswith("gpt2")] == [r for r in before if r.startswith("gpt2")]


def test_the_tune_block_is_part_of_the_registered_plan(tmp_path):
    from harness.sweeps.plan import Plan, register_plan

    data = {"comparisons": [], "tune": _tune()}
    assert register_plan(tmp_path, Plan.from_dict(data), data_exist=False, now="T0") == "registered"
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["plan"]["tune"] == _tune() and written["sha256"] == Plan.from_dict(data).sha256()
    changed = Plan.from_dict({**data, "tune": _tune(lrs=[g * 2 for g in GRID])})
    with pytest.raises(ValueError, match="changed after runs have data"):
        register_plan(tmp_path, changed, data_exist=True)
    assert register_plan(tmp_path, changed, data_exist=True, amend="wider grid") == "amended"
    assert json.loads((tmp_path / "plan.json").read_text())["amendments"][0]["tune_changed"] is True
    assert Plan.from_dict({"comparisons": []}).to_dict() == {"comparisons": []}  # untuned plans keep their sha256




@pytest.mark.slow
def test_a_tuned_study_end_to_end(results_tmp, tmp_path):
    study = tmp_path / "tiny-tune.yaml"
    study.write_text(yaml.safe_dump(_study(_tune(max_extensions=1), seeds=1)))
    report_dir = results_tmp.parent / "reports" / "tiny-tune"
    code, out, err = _cli(["study", str(study), "--dry-run"])
    assert code == 0, err
    assert out.count("tune:syn\t") == 10 and "planned after the learning-rate tuning" in out

    code, out, err = _cli(["study", str(study)])
    assert code == 0, err
    tuning = json.loads((report_dir / "data" / "tuning.json").read_text())
    assert tuning["tune"] == _tune(max_extensions=1) and len(tuning["runs"]) >= 10
    assert {row["seed"] for row in tuning["runs"]} == {100}
    meta = json.loads((report_dir / "runs.json").read_text())
    for run_id in meta["sweeps"]["syn"]["run_ids"]:
        record = json.loads((results_tmp / run_id / "record.json").read_text())
        assert record["recipe"]["lr"] == tuning["chosen"]["syn"][record["arch"]] and record["seed"] == 0
    assert set(meta["tuning_run_ids"]) == {row["run_id"] for row in tuning["runs"]}
    text = (report_dir / "report.md").read_text()
    assert "## Learning rate, tuned per architecture" in text and "figures/lr_tuning.png" in text
    chosen = ", ".join(f"{arch} {lr:g}" for arch, lr in tuning["chosen"]["syn"].items())
    assert f"peak lr tuned per architecture ({chosen})" in text  # Methods: the rates the command cannot carry
    assert (report_dir / "figures" / "lr_tuning.png").exists()

    code, out, err = _cli(["study", str(study), "--dry-run"])  # tuning.json exists: the comparisons are listed
    lines = out.strip().splitlines()
    assert len(lines) == len(tuning["runs"]) + 2 and all(line.split("\t")[-3] == "reuse" for line in lines), out
    figure = (report_dir / "figures" / "lr_tuning.png").read_bytes()
    records = {path: path.read_bytes() for path in results_tmp.glob("*/record.json")}
    code, _, err = _cli(["study", str(study)])
    assert code == 0, err
    assert ": trained " not in err and {path: path.read_bytes() for path in records} == records
    assert json.loads((report_dir / "data" / "tuning.json").read_text()) == tuning
    assert (report_dir / "figures" / "lr_tuning.png").read_bytes() == figure

    report = (report_dir / "report.md").read_text()  # from data/ alone, byte for byte
    shutil.rmtree(results_tmp)
    shutil.rmtree(report_dir / "figures")
    code, _, err = _cli(["report", "tiny-tune"])
    assert code == 0, err
    assert (report_dir / "figures" / "lr_tuning.png").read_bytes() == figure
    assert (report_dir / "report.md").read_text() == report
