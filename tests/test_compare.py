"""compare: statistics, sweep planning, bad input, and one real end-to-end sweep on nano."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import stats as scipy_stats

from harness.sweeps.compare import parse_archs, parse_budgets, plan_sweep
from harness.reporting.formatting import fmt_interval
from harness.reporting.stats import compare_optima, fit_isoflop, t_interval, welch_test
from cli_run import run_cli as _cli  # noqa: E402  (tests/ is on sys.path)




# ----------------------------------------------------------------------------- statistics


def test_t_interval_matches_the_t_distribution():
    values = [3.0, 3.1, 3.2, 3.3]
    interval = t_interval(values)
    assert interval.mean == pytest.approx(3.15)
    expected = scipy_stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert interval.half_width == pytest.approx(expected)
    assert fmt_interval(interval, 2) == f"3.15 ± {expected:.2f}"
    one = t_interval([2.5])
    assert one.n == 1 and math.isnan(one.half_width) and fmt_interval(one, 2) == "2.50"
    assert fmt_interval(t_interval([])) == "—"


def test_welch_test_agrees_with_scipy_and_explains_when_unavailable():
    a, b = [3.0, 3.1, 3.05], [3.4, 3.5, 3.45, 3.38]
    result = welch_test(a, b)
    reference = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert result.available and result.p == pytest.approx(reference.pvalue)
    assert result.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert result.ci_low < result.diff < result.ci_high < 0 and result.significant
    close = welch_test([3.0, 3.2], [3.1, 3.05])
    assert close.available and not close.significant and close.ci_low < 0 < close.ci_high
    lonely = welch_test([3.0], [3.1, 3.2])
    assert not lonely.available and lonely.reason == "needs at least 2 seeds on each side (has 1 and 2)"
    flat = welch_test([3.0, 3.0], [3.0, 3.0])
    assert not flat.available and "zero variance" in flat.reason


def test_isoflop_fit_finds_the_vertex_and_says_when_it_cannot():
    params = np.array([1e5, 2e5, 4e5, 8e5, 1.6e6])
    x = np.log10(params)
    exact = 2.0 + 0.5 * (x - np.log10(3e5)) ** 2
    fit = fit_isoflop(np.repeat(params, 2), np.repeat(exact, 2) + np.tile([1e-4, -1e-4], 5), [0, 1] * 5)
    assert fit.ok and fit.params_opt == pytest.approx(3e5, rel=1e-3) and fit.loss_opt == pytest.approx(2.0, abs=1e-4)
    assert not fit.extrapolated and fit.params_opt_ci is not None and fit.loss_opt_se < 1e-3
    interval = fit.params_opt_interval()
    assert interval[0] < 3e5 < interval[1]
    too_few = fit_isoflop(params[:2], exact[:2])
    assert not too_few.ok and "at least 3 model sizes" in too_few.reason
    hill = fit_isoflop(params, -exact)
    assert not hill.ok and "no minimum" in hill.reason
    falling = fit_isoflop(params, 3.0 - 0.1 * x + np.array([0, 1e-3, 0, -1e-3, 0]) - 0.01 * x**2)
    assert not falling.ok and "add larger sizes" in falling.reason
    edge = fit_isoflop(params, 2.0 + 0.5 * (x - np.log10(5e6)) ** 2 + np.array([0, 1e-4, 0, -1e-4, 0]))
    assert edge.ok and edge.extrapolated
    other = fit_isoflop(params, exact + 0.1 + np.array([0, 1e-4, 0, -1e-4, 0]))
    comparison = compare_optima(other, edge)
    assert comparison.available and comparison.params_ratio < 1


# ----------------------------------------------------------------------------- planning and bad input


def _options(argv):
    from harness.cli.compare import add_arguments, sweep_options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return sweep_options_from_args(parser.parse_args(argv))


def test_plan_orders_seeds_outermost_and_shares_the_recipe():
    plan = plan_sweep(_options(["--archs", "gpt1,gpt2", "--size", "nano", "--budget", "1e10", "--seeds", "2"]))
    assert plan.mode == "matched" and plan.reference == "gpt2"
    assert [(s.arch, s.seed) for s in plan.specs] == [("gpt1", 0), ("gpt2", 0), ("gpt1", 1), ("gpt2", 1)]
    assert len(set(plan.run_ids)) == 4
    assert {(s.recipe.lr, s.recipe.batch_tokens, s.budget_flops, s.data) for s in plan.specs} == {(3e-3, 1024, 1e10, "synthetic")}
    iso = plan_sweep(_options(["--archs", "gpt2", "--size", "nano", "--widths", "32,64", "--budget", "1e10,2e10"]))
    assert iso.mode == "isoflop" and iso.budgets == [1e10, 2e10]
    assert [(s.overrides.get("d_model"), s.budget_flops) for s in iso.specs] == [(32, 1e10), (64, 1e10), (32, 2e10), (64, 2e10)]


def test_typed_options_plan_the_command_lines_runs_each_with_its_own_recipe():
    from harness.sweeps.compare import SweepOptions
    from harness.runs.spec import Recipe

    recipe = Recipe(lr=1e-3)
    typed = plan_sweep(SweepOptions(archs=("gpt1", "gpt2"), seeds=2, sizes=("nano",), widths=(32, 64),
                                    budgets=(1e10,), recipe=recipe, overrides={"dropout": 0.1}))
    argv = ["--archs", "gpt1,gpt2", "--seeds", "2", "--size", "nano", "--widths", "32,64", "--budget", "1e10",
            "--lr", "1e-3", "--set", "dropout=0.1"]
    assert typed.run_ids == plan_sweep(_options(argv)).run_ids
    assert len({id(spec.recipe) for spec in typed.specs}) == len(typed.specs) == 8
    assert recipe.seq_len is None  # resolving each run's recipe leaves the caller's alone
    with pytest.raises(ValueError, match="unknown architecture 'gpt9' in --archs"):
        plan_sweep(SweepOptions(archs=("gpt9",), sizes=("nano",)))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--archs", "gpt2,gpt5"], "unknown architecture 'gpt5' in --archs; known: gpt1, gpt2, gpt3, gpt4."),
        (["--seeds", "0"], "--seeds must be at least 1 (seeds 0..N-1 are trained for each model), got 0."),
        (["--budget", "1e10,lots"], "--budget takes FLOPs as numbers"),
        (["--budget", "-5"], "every budget must be a positive number of FLOPs"),
        (["--widths", "30"], "d_model (30) must be divisible by n_head (4)"),
        (["--widths", "64", "--set", "d_model=32"], "--widths sets d_model"),
        (["--name", "../escape"], "report name '../escape' must be a folder name"),
        (["--reference", "gpt1"], "--reference 'gpt1' is not among --archs"),
        (["--eval-limit", "0"], "--eval-limit must be a positive whole number, got 0."),
        (["--finetune-budget", "1e9"], "--finetune-budget needs --finetune-data SPEC"),
        (["--finetune-data", "task:facts", "--finetune-methods", "full,qlora"], "--finetune-methods takes"),
        (["--finetune-data", "task:facts", "--finetune-budget", "-1"], "--finetune-budget must be a positive"),
    ],
)
def test_bad_input_is_one_clear_sentence(results_tmp, argv, message):
    base = ["compare", "--archs", "gpt2,gpt3", "--size", "nano", "--budget", "1e10", "--no-eval"]
    code, _, err = _cli(base + argv)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not results_tmp.exists()  # nothing was trained


def test_parsers():
    assert parse_archs("gpt2, gpt2,gpt1") == ["gpt2", "gpt1"]
    assert parse_budgets("1e12, 3e12") == [1e12, 3e12] and parse_budgets(None) is None
    with pytest.raises(ValueError, match="--archs is empty"):
        parse_archs(" , ")


# ----------------------------------------------------------------------------- end to end


@pytest.fixture
def quick_validation(monkeypatch):
    """Validate on 4096 held-out tokens instead of up to 131072: this test checks the plumbing, not the losses."""
    import harness.training.heldout as heldout

    original = heldout.validation_metrics

    def capped(*args, max_tokens=heldout.MAX_EVAL_TOKENS, **kwargs):
        return original(*args, max_tokens=min(max_tokens, 4096), **kwargs)

    monkeypatch.setattr(heldout, "validation_metrics", capped)


FIGURES = ("loss_vs_flops", "loss_vs_wall", "pareto", "throughput", "flops_breakdown", "evaluation", "segments")


def test_compare_end_to_end_then_resume_trains_nothing(results_tmp, quick_validation):
    argv = ["compare", "--archs", "gpt2,gpt3", "--size", "nano", "--budget", "6e9", "--seeds", "2",
            "--tasks", "harness_copy", "--eval-limit", "8", "--name", "e2e"]
    code, out, err = _cli(argv)
    assert code == 0, err
    assert "4 trained, 0 reused, 4 evaluated, 0 failed" in err
    report_dir = results_tmp.parent / "reports" / "e2e"
    assert out.strip() == str(report_dir / "report.md")
    runs = json.loads((report_dir / "runs.json").read_text())
    assert len(runs["run_ids"]) == 4 and runs["complete"] and runs["seeds"] == 2
    assert runs["command"] == ("python -m harness compare --archs gpt2,gpt3 --size nano --data synthetic --budget 6e9 "
                               "--tasks harness_copy --eval-limit 8 --seeds 2 --name e2e")
    text = (report_dir / "report.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| gpt2 |") or line.startswith("| gpt3 |")]
    assert len(table) >= 3  # summary rows for both + the significance row
    summary = table[0].split("|")
    assert summary[2].strip() == "2" and " ± " in summary[7]  # seeds, loss ± 95 % CI
    assert "harness_copy token_acc (± stderr)" in text
    assert "| gpt3 | gpt2 |" in text  # significance against gpt2
    for stem in FIGURES:
        for suffix in ("png", "svg"):
            path = report_dir / "figures" / f"{stem}.{suffix}"
            assert path.exists(), path
        image = imread(report_dir / "figures" / f"{stem}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    records = {run_id: (results_tmp / run_id / "record.json").stat().st_mtime_ns for run_id in runs["run_ids"]}

    code, out, err = _cli(argv)
    assert code == 0, err
    assert "0 trained, 4 reused, 0 evaluated, 0 failed" in err
    assert {run_id: (results_tmp / run_id / "record.json").stat().st_mtime_ns for run_id in runs["run_ids"]} == records
