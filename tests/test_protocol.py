"""The study protocol: paired tests and the sign-flip p, Wilson intervals, the planned family, plan
registration and amendments, and the rule that "because" needs a planned control."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from scipy import stats

from harness.reporting.findings import Comparison, assess, check_causal, family_size, findings_markdown
from harness.reporting.paired import min_sign_flip_p, paired_t_test, sign_flip_p
from harness.reporting.proportions import pooled_accuracy, wilson_interval
from harness.reporting.stats import welch_test
from harness.sweeps.plan import Plan, effective_comparisons, read_plan_file, register_plan

# ---- paired statistics ---------------------------------------------------------------------------------


def test_sign_flip_p_matches_an_enumeration_by_hand():
    # d = (0.3, -0.1, 0.2): the 8 sign patterns give sums ±0.4 (observed), ±0.0, ±0.6, ±0.2;
    # |sum| ≥ 0.4 for 0.4, 0.6, -0.4, -0.6 → 4/8
    assert sign_flip_p([0.3, -0.1, 0.2]) == pytest.approx(0.5)
    # d = (1, 2, 3, 4): only all-plus and all-minus reach |sum| = 10 → 2/16, the smallest possible at 4 pairs
    assert sign_flip_p([1, 2, 3, 4]) == pytest.approx(0.125) == pytest.approx(min_sign_flip_p(4))
    # d = (1, 1, 1, -3): the observed sum is 0, so every pattern is at least as extreme
    assert sign_flip_p([1, 1, 1, -3]) == pytest.approx(1.0)
    # d = (2, -1): sums ±1 (observed), ±3 → 4/4
    assert sign_flip_p([2, -1]) == pytest.approx(1.0)
    assert [min_sign_flip_p(n) for n in (3, 5, 6, 10)] == pytest.approx([0.25, 0.0625, 0.03125, 2 / 1024])


def test_a_small_consistent_per_seed_difference_resolves_paired_but_not_under_welch():
    seeds = np.array([2.10, 2.31, 2.02, 2.45, 2.20, 2.37])  # seed-to-seed spread 0.4 nats shared by both arms
    a = seeds - 0.02 + np.array([0.001, -0.002, 0.0015, 0.0, -0.001, 0.002])  # a is 0.02 lower at every seed
    paired, welch = paired_t_test(a, seeds), welch_test(a, seeds)
    assert paired.available and paired.p < 1e-4 and paired.perm_p == pytest.approx(min_sign_flip_p(6))
    assert paired.ci_high < 0 and paired.effect_high < 0  # the effect and its interval exclude 0
    assert welch.p > 0.5
    # the paired p is scipy's ttest_rel; the interval is the t-interval of the mean difference
    assert paired.p == pytest.approx(stats.ttest_rel(a, seeds).pvalue)
    d = a - seeds
    half = stats.t.ppf(0.975, 5) * d.std(ddof=1) / math.sqrt(6)
    assert (paired.ci_low, paired.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))

    def comparison(test):
        return Comparison("k", "t", "loss", "nats/token", "A", "B", list(a), list(seeds), False, test=test,
                          a_seeds=list(range(6)), b_seeds=list(range(6)))

    assert assess([comparison("paired")])[0].resolved
    assert not assess([comparison("welch")])[0].resolved


def test_paired_tests_match_seeds_not_positions():
    a = Comparison("k", "t", "m", "", "A", "B", [1.0, 2.0, 3.0], [1.5, 2.6, 3.4], False, test="paired",
                   a_seeds=[0, 1, 2], b_seeds=[2, 0, 1])  # b's values belong to seeds 2, 0, 1
    result = assess([a])[0].test
    assert result.n_a == 3 and result.diff == pytest.approx(np.mean([1.0 - 2.6, 2.0 - 3.4, 3.0 - 1.5]))


# ---- Wilson intervals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (1, 3), (0, 1), (7, 200), (199, 200)])
def test_wilson_intervals_stay_in_the_unit_interval(k, n):
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0 and high > low


def test_wilson_interval_known_values_and_pooling():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # Newcombe (1998), table I
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    accuracy, low, high, items = pooled_accuracy([0.02, 0.03, 0.0], [200, 200, 200])
    assert items == 600 and accuracy == pytest.approx(10 / 600) and low > 0 and high < 0.05


# ---- the planned family ----------------------------------------------------------------------------------

PLAN = """
comparisons:
  - {key: x/a-vs-b, topic: t, setting: syn, metric: excess_loss, label: excess loss, unit: nats/token,
     a: gpt3, b: gpt2, higher_is_better: false, expected: better, reason: more tokens per FLOP, citation: Child 2019,
     cause: it trained on more tokens at the same budget, control: tokens/a-vs-b}
  - {key: tokens/a-vs-b, topic: t, setting: syn-tokens, metric: excess_loss, label: excess loss at matched tokens,
     unit: nats/token, a: gpt3, b: gpt2, higher_is_better: false}
  - {key: y/a-vs-b, topic: t, setting: syn, metric: eval/harness_facts/acc, label: facts accuracy, unit: accuracy,
     a: gpt4, b: gpt3, higher_is_better: true, expected: better, kind: exploratory, test: welch}
"""


def plan(text: str = PLAN) -> Plan:
    return Plan.from_dict(yaml.safe_load(text), "test plan")


def test_family_size_in_the_text_counts_untestable_comparisons():
    clear = [1.0, 1.01, 0.99, 1.02]
    comparisons = [
        Comparison("ok", "t", "m1", "", "A", "B", clear, [2.0, 2.02, 1.98, 2.01], False),
        Comparison("flat", "t", "m2", "", "A", "B", [1.0, 1.0], [1.0, 1.0], False),  # zero variance
        Comparison("missing", "t", "m3", "", "A", "B", [], [], False),  # metric absent
        Comparison("lead", "t", "m4", "", "A", "B", clear, [3.0, 3.1, 2.9, 3.05], False, in_family=False),
    ]
    findings = assess(comparisons)
    m = family_size(findings)
    assert m == 3  # the exploratory one is outside; the two untestable ones are in
    text = findings_markdown(findings)
    assert f"across the {m} planned confirmatory comparisons" in text and f"The family is the {m} planned" in text
    assert findings[0].p_holm == pytest.approx(min(1.0, 3 * findings[0].test.p))  # Holm's m is the same 3
    untestable = text.split("**Untestable**")[1].split("**Exploratory**")[0]
    assert "m2: untestable" in untestable and "m3: untestable" in untestable
    assert not findings[3].resolved and "Outside the corrected family" in findings[3].sentence()


def test_plan_fields_are_checked():
    with pytest.raises(ValueError, match="expected must be one of"):
        plan(PLAN.replace("expected: better, reason", "expected: faster, reason"))
    with pytest.raises(ValueError, match="says 'because'"):
        plan(PLAN.replace("reason: more tokens per FLOP", "reason: because of more tokens"))
    with pytest.raises(ValueError, match="not a comparison of the plan"):
        plan(PLAN.replace("control: tokens/a-vs-b", "control: nope"))


def test_a_plan_changed_after_data_is_refused_unless_amended(tmp_path):
    data = tmp_path / "data"
    assert register_plan(data, plan(), data_exist=False, now="T0") == "registered"
    assert register_plan(data, plan(), data_exist=True) == "unchanged"
    changed = plan(PLAN.replace("expected: better, reason: more", "expected: worse, reason: more"))
    with pytest.raises(ValueError, match="changed after runs have data"):
        register_plan(data, changed, data_exist=True)
    assert read_plan_file(data)["sha256"] == plan().sha256()  # the refused change left the file alone
    added = PLAN + ("  - {key: z/new, topic: t, setting: syn, metric: val_bpb, label: bpb, a: gpt1, b: gpt2,\n"
                    "     higher_is_better: false}\n")
    amended = plan(added.replace("expected: better, reason: more", "expected: worse, reason: more"))
    assert register_plan(data, amended, data_exist=True, amend="GPT-1 failed at the shared rate", now="T1") == "amended"
    registered = read_plan_file(data)
    assert registered["plan"] == plan().to_dict() and registered["amendments"][0]["plan"] == amended.to_dict()
    assert registered["amendments"][0]["reason"] == "GPT-1 failed at the shared rate"
    effective = {e.comparison.key: e for e in effective_comparisons(registered)}
    assert effective["x/a-vs-b"].in_family and effective["x/a-vs-b"].comparison.expected == "better"  # as registered
    assert not effective["x/a-vs-b (amended)"].in_family and effective["x/a-vs-b (amended)"].comparison.expected == "worse"
    assert not effective["z/new"].in_family and effective["z/new"].comparison.kind == "exploratory"


def test_a_comparison_added_on_a_sweep_without_data_joins_the_family_and_one_on_a_sweep_with_data_does_not(tmp_path):
    register_plan(tmp_path, plan(), data_exist=False, now="T0")
    added = PLAN + ("  - {key: r/new-sweep, topic: t, setting: recall, metric: eval/harness_recall_16/acc, label: recall,\n"
                    "     unit: accuracy, a: gpt3, b: gpt2, higher_is_better: true}\n"
                    "  - {key: s/old-sweep, topic: t, setting: syn, metric: val_bpb, label: bpb, a: gpt1, b: gpt2,\n"
                    "     higher_is_better: false}\n")
    assert register_plan(tmp_path, plan(added), data_exist=True, amend="a recall sweep", now="T1",
                         settings_with_data={"syn", "syn-tokens"}) == "amended"
    registered = read_plan_file(tmp_path)
    assert registered["amendments"][0]["settings_with_data"] == ["syn", "syn-tokens"]
    effective = {e.comparison.key: e for e in effective_comparisons(registered)}
    assert effective["r/new-sweep"].in_family and effective["r/new-sweep"].comparison.kind == "confirmatory"
    assert not effective["s/old-sweep"].in_family and effective["s/old-sweep"].note == "added by an amendment after data"
    assert effective["x/a-vs-b"].in_family  # the registered family is kept
    # one that also reads a setting with data (change_to: the other sweep minus this one) stays exploratory
    registered["amendments"][0]["plan"]["comparisons"][-2]["change_to"] = "syn"
    assert not {e.comparison.key: e for e in effective_comparisons(registered)}["r/new-sweep"].in_family
    # changed by a later amendment once its sweep has data: exploratory, as any change after data
    changed = plan(added.replace("label: recall,", "label: recall at 16,"))
    register_plan(tmp_path, changed, data_exist=True, amend="relabel", now="T2", settings_with_data={"syn", "recall"})
    assert not {e.comparison.key: e for e in effective_comparisons(read_plan_file(tmp_path))}["r/new-sweep"].in_family
    # an amendment that did not record which sweeps had data (older plans) adds exploratory comparisons only
    register_plan(tmp_path / "old", plan(), data_exist=False, now="T0")
    register_plan(tmp_path / "old", plan(added), data_exist=True, amend="a recall sweep", now="T1")
    assert not {e.comparison.key: e for e in effective_comparisons(read_plan_file(tmp_path / "old"))}["r/new-sweep"].in_family


def test_a_changed_plan_before_any_data_replaces_the_old_one(tmp_path):
    register_plan(tmp_path, plan(), data_exist=False, now="T0")
    changed = plan(PLAN.replace("expected: better, reason: more", "expected: worse, reason: more"))
    assert register_plan(tmp_path, changed, data_exist=False, now="T1") == "replaced"
    assert read_plan_file(tmp_path)["sha256"] == changed.sha256() and not read_plan_file(tmp_path)["amendments"]


def test_a_plan_registered_after_data_has_no_confirmatory_family(tmp_path):
    from harness.reporting.plan_sections import deviation_lines

    register_plan(tmp_path, plan(), data_exist=True, now="T0")
    assert not any(e.in_family for e in effective_comparisons(read_plan_file(tmp_path)))
    assert "registered after runs had data" in deviation_lines(read_plan_file(tmp_path))[0]


# ---- causal words ----------------------------------------------------------------------------------------


def _cause_findings(control_values):
    main = Comparison("x", "t", "excess loss", "nats/token", "GPT-3", "GPT-2", [1.0, 1.01, 0.99], [2.0, 2.02, 1.98],
                      False, cause="the extra tokens it trained on at the same budget", control="ctl")
    control = Comparison("ctl", "t", "excess loss at matched tokens", "nats/token", "GPT-3", "GPT-2",
                         *control_values, False)
    return assess([main, control])


def test_because_only_where_a_planned_control_tests_the_cause():
    untested = _cause_findings(([1.0, 1.2, 0.9], [1.05, 0.95, 1.1]))[0]  # the control does not resolve
    assert untested.resolved and "because" not in untested.sentence().lower()
    assert "co-occurs with the extra tokens it trained on" in untested.sentence()
    tested = _cause_findings(([1.0, 1.01, 0.99], [2.0, 2.02, 1.98]))[0]  # the control resolves
    assert "because of the extra tokens it trained on at the same budget" in tested.sentence()


def test_the_generator_refuses_a_causal_word_without_a_tested_cause():
    finding = assess([Comparison("x", "t", "loss", "", "A", "B", [1.0, 1.01, 0.99], [2.0, 2.02, 1.98], False,
                                 "better", rationale="it is better because it is bigger")])[0]
    with pytest.raises(ValueError, match="no planned control tests that cause"):
        finding.sentence()
    assert check_causal("A is lower than B.", finding) == "A is lower than B."


def test_accuracy_bars_never_leave_the_unit_interval():
    import pandas as pd

    from harness.reporting.proportions import score_bar

    rows = pd.DataFrame({"eval/t/acc": [0.0, 0.0, 0.01], "eval/t/acc/n": [200, 200, 200],
                         "eval/t/acc/stderr": [0.0, 0.0, 0.007]})
    height, below, above = score_bar(rows, "eval/t/acc", "acc")
    assert height == pytest.approx(2 / 600) and height - below >= 0.0 and 0 < height + above <= 1.0
    ceiling = rows.assign(**{"eval/t/acc": [1.0, 1.0, 1.0]})
    height, below, above = score_bar(ceiling, "eval/t/acc", "acc")
    assert height == 1.0 and above == 0.0 and below > 0
