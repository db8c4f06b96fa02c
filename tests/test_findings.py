"""Findings from statistics: Holm's correction, generated sentences, and a study report from fabricated records."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.evaluation.chance import at_chance, chance_level, recall_context_baseline
from harness.reporting.findings import Comparison, assess, findings_markdown
from harness.reporting.stats import holm_adjust, welch_test


def comparison(key, a, b, higher=False, expected=None, rationale="a reason"):
    return Comparison(key, "topic", f"metric {key}", "nats/token", f"A{key}", f"B{key}", list(a), list(b), higher,
                      expected, rationale)


def test_holm_adjust_matches_the_step_down_definition():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm_adjust([0.01, math.nan, 0.02])  # an untestable comparison stays in the family at p = 1: m = 3
    assert adjusted == pytest.approx([0.03, 1.0, 0.04])


def test_a_large_difference_is_resolved_and_a_null_is_not():
    big = comparison("big", [1.00, 1.01, 0.99], [2.00, 2.02, 1.98], expected="better")
    null = comparison("null", [1.0, 1.1, 0.9], [1.05, 0.95, 1.0], expected="worse")
    findings = assess([big, null])
    assert findings[0].resolved and findings[0].outcome == "better" and findings[0].agrees is True
    assert not findings[1].resolved and findings[1].outcome is None
    text = findings_markdown(findings)
    resolved, unresolved = text.split("**Not resolved**")
    assert "**Abig is better than Bbig**" in resolved and "As the literature expects (a reason)" in resolved
    assert "Anull vs Bnull on metric null: not resolved" in unresolved
    assert "cannot confirm or reject it" in unresolved
    # the sentence carries the numbers the test produced
    test = welch_test(big.a, big.b)
    assert f"Δ = {test.diff:+.3g}" in resolved and f"{test.ci_low:+.3g}" in resolved


def test_holm_correction_can_turn_a_raw_significance_into_not_resolved():
    moderate = [comparison(f"m{i}", [0.0, 0.3, 0.6], [0.9, 1.2, 1.5]) for i in range(4)]
    raw = welch_test(moderate[0].a, moderate[0].b).p
    assert 0.01 < raw < 0.05  # significant alone ...
    findings = assess(moderate)
    assert all(f.p_holm == pytest.approx(min(1.0, 4 * raw)) for f in findings)
    assert not any(f.resolved for f in findings)  # ... but not across a family of four
    assert "none: no comparison reached significance" in findings_markdown(findings)


def test_a_result_against_the_literature_is_reported_as_measured():
    finding = assess([comparison("x", [2.0, 2.01, 1.99], [1.0, 1.01, 0.99], expected="better")])[0]
    assert finding.resolved and finding.outcome == "worse" and finding.agrees is False
    assert "contradicts the expectation" in finding.sentence() and "reported as measured" in finding.sentence()


def test_untestable_comparisons_say_why_and_count_in_the_family():
    testable = comparison("clear", [1.0, 1.01, 0.99], [2.0, 2.02, 1.98])
    findings = assess([comparison("one", [1.0], [2.0, 2.1]), testable])
    assert not findings[0].resolved and "needs at least 2 seeds" in findings[0].sentence()
    assert findings[1].p_holm == pytest.approx(min(1.0, 2 * findings[1].test.p))  # m = 2, not 1
    text = findings_markdown(findings)
    assert "across the 2 planned confirmatory comparisons" in text and "the 2 planned confirmatory" in text
    assert "**Untestable** (in the family of 2 at p = 1)" in text and "Aone vs Bone" in text.split("**Untestable**")[1]


def test_chance_levels_and_at_chance():
    config = {"n_values": 64, "n_objects": 48, "n_markov": 200}
    assert chance_level("arc_easy", "acc") == 0.25 and chance_level("piqa", "acc") == 0.5
    assert chance_level("harness_recall_48", "acc", config) == pytest.approx(1 / 64)
    assert chance_level("wikitext", "bits_per_byte") is None
    assert at_chance([0.26, 0.25, 0.27], [0.03] * 3, 0.25) is True
    assert at_chance([0.60, 0.62, 0.61], [0.03] * 3, 0.25) is False
    assert at_chance([1.0], [0.0], None) is None


# ---- a study report from fabricated records -----------------------------------------------------------

SEGMENTS = ["markov", "recall", "copy", "facts"]


def write_run(root, run_id, arch, seed, lr, *, loss, recall48, facts):
    run = root / run_id
    run.mkdir(parents=True)
    evaluation = {
        "harness_recall_16": {"acc": {"value": 0.9 + 0.01 * seed, "stderr": 0.02}},
        "harness_recall_48": {"acc": {"value": recall48, "stderr": 0.02}},
        "harness_facts": {"acc": {"value": facts, "stderr": 0.02}},
    }
    record = {
        "schema_version": 1, "run_id": run_id, "status": "ok", "arch": arch, "size": "nano", "seed": seed,
        "params": 1000, "active_params": 1000, "tokens": 1e5, "steps": 10, "budget_flops": 1e12,
        "flops_used": 1e12, "train_flops_per_token": 1e7, "final_val_loss": loss, "excess_loss": loss - 1.0,
        "entropy_floor": 1.0, "unigram_val_loss": 5.0, "unigram_excess_loss": 4.0,
        "per_segment": {s: {"excess_loss": loss - 1.0, "entropy_floor": 1.0} for s in SEGMENTS},
        "evaluation": evaluation, "wall_s": 10.0, "tokens_per_s": 1e4, "device": "cpu",
        "device_settings": {"threads": 1}, "git_commit": "abc123",
        "data": {"kind": "synthetic", "spec": "synthetic", "tokenizer": "synthetic", "vocab_size": 512,
                 "segment_names": SEGMENTS, "synthetic_config": {"n_values": 64, "n_objects": 48, "n_markov": 200}},
        "recipe": {"lr": lr, "batch_tokens": 1024},
        "machine_load": {"end": {"loadavg_5m": 0.5, "cpu_count": 2}},
    }
    (run / "record.json").write_text(json.dumps(record))
    (run / "config.json").write_text(json.dumps({"model": {"window": 32}, "run": {"overrides": {}}}))
    lines = [{"step": s, "tokens": 100 * s, "flops": 1e10 * s, "wall_s": s, "train_loss": loss + 1 / s,
              "grad_norm": 1.0 + 0.1 * ((s + seed) % 3), "val_loss": loss + 1 / s} for s in range(1, 11)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


FAB_PLAN = """
comparisons:
  - {key: recall_48/gpt3-vs-gpt2, topic: banded vs dense, setting: syn, metric: eval/harness_recall_48/acc,
     label: recall accuracy 48 tokens back, unit: accuracy, a: gpt3, b: gpt2, higher_is_better: true,
     expected: worse, reason: half the layers cannot attend that far, citation: Child et al. 2019}
  - {key: facts_acc/gpt4-vs-gpt3, topic: MoE vs dense, setting: syn, metric: eval/harness_facts/acc,
     label: facts accuracy, unit: accuracy, a: gpt4, b: gpt3, higher_is_better: true, expected: better}
  - {key: copy/gpt4-vs-gpt3, topic: MoE vs dense, setting: syn, metric: eval/harness_copy/acc,
     label: copy accuracy, unit: accuracy, a: gpt4, b: gpt3, higher_is_better: true}
  - {key: lr/gpt1-vs-gpt2, topic: post-LN, setting: syn, change_to: hi, metric: final_val_loss,
     label: loss change at the other learning rate, unit: nats/token, a: gpt1, b: gpt2, higher_is_better: false,
     test: welch, kind: exploratory}
"""


def test_recall_context_baseline_is_the_score_of_guessing_among_the_definitions_values():
    """E[1/distinct values] of the probes' own definition blocks: the generator's recall probes, scored
    by a guesser that picks uniformly among the distinct values of the block, agree with the formula."""
    from harness.data.synthetic_config import SyntheticConfig
    from harness.data.synthetic_generator import SyntheticGenerator

    config = SyntheticConfig(recall_pairs=4)
    probes = SyntheticGenerator(config).recall_probe(2000, 16, seed=3)
    values = range(config.value_base, config.value_base + config.n_values)
    expected = np.mean([1 / len({t for t in p.context if t in values}) for p in probes])  # one block per probe
    assert recall_context_baseline(config.to_dict()) == pytest.approx(expected, abs=0.01)
    assert recall_context_baseline({"recall_pairs": 1, "n_values": 16}) == 1.0  # one pair: the value is known
    assert recall_context_baseline({"recall_pairs": 3, "n_values": 2}) == pytest.approx(5 / 8)  # by enumeration
    assert recall_context_baseline(None) is None


def test_study_report_from_fabricated_records(tmp_path, assert_no_fill_ins):
    import yaml

    from harness.reporting.study_report import build_study_report
    from harness.sweeps.plan import Plan, register_plan
    from harness.sweeps.compare import SweepOptions
    from harness.sweeps.study import StudySpec, StudySweep, write_study_file

    results, reports = tmp_path / "results", tmp_path / "reports"
    synthetic, lr = [], []
    for seed in range(3):
        for arch in ("gpt1", "gpt2", "gpt3", "gpt4"):
            # known large effect: GPT-3 recall 48 tokens back collapses; known null: GPT-4 facts = GPT-3 facts
            recall48 = [0.05, 0.07, 0.06][seed] if arch == "gpt3" else 0.85 + 0.01 * seed
            facts = [0.40, 0.44, 0.42][seed]
            write_run(results, f"{arch}-s{seed}", arch, seed, 2e-3, loss=2.0 + 0.01 * seed, recall48=recall48,
                      facts=facts)
            synthetic.append(f"{arch}-s{seed}")
        for arch in ("gpt1", "gpt2"):
            write_run(results, f"{arch}-lr-s{seed}", arch, seed, 6e-3, loss=2.5 + 0.01 * seed, recall48=0.5, facts=0.4)
            lr.append(f"{arch}-lr-s{seed}")
    gpt1 = SweepOptions(archs=("gpt1",))
    spec = StudySpec("fab", [StudySweep("syn", "synthetic", gpt1), StudySweep("hi", "lr", gpt1)])
    write_study_file(reports / "fab", spec, {"syn": {"role": "synthetic", "command": "c1", "run_ids": synthetic},
                                             "hi": {"role": "lr", "command": "c2", "run_ids": lr}})
    register_plan(reports / "fab" / "data", Plan.from_dict(yaml.safe_load(FAB_PLAN)), data_exist=False, now="T0")
    report = build_study_report("fab", results_dir=results, reports_dir=reports)
    text = report.path.read_text()
    assert_no_fill_ins(text)
    assert "| *n (documents scored per run)* |" in text
    findings = text.split("## Findings")[1].split("## Synthetic")[0]
    resolved, unresolved = findings.split("**Not resolved**")
    assert "**GPT-3 (dense/banded) is worse than GPT-2 (pre-LN, dense)** on recall accuracy 48 tokens back" in resolved
    assert "GPT-4-style (MoE) vs GPT-3 (dense/banded) on facts accuracy" in unresolved
    assert "Holm-adjusted p" in resolved and "sign-flip p" in resolved
    # the missing copy metric is untestable and still counted: m = 3 (the exploratory one is outside)
    assert "across the 3 planned confirmatory comparisons" in findings
    assert "copy accuracy: untestable" in findings.split("**Untestable**")[1]
    assert "**Exploratory**" in findings and "loss change at the other learning rate" in findings.split("**Exploratory**")[1]
    assert "smallest p that permutation test can reach is 0.25" in findings
    assert "## Deviations from the plan\n\n- none" in text
    assert "m = 3" in text  # the forest plot's caption
    assert (report.directory / "figures" / "forest.svg").exists()
    assert "all 18 runs trained at commit `abc123` (a clean checkout)" in text
    table = pd.read_csv(report.directory / "findings.csv")
    row = table[table["key"] == "recall_48/gpt3-vs-gpt2"].iloc[0]
    assert bool(row["resolved"]) and row["p_holm"] == pytest.approx(min(1.0, 3 * row["p"])) and row["test"] == "paired"
    assert (report.directory / "figures" / "recall_by_distance.png").exists()


# ---- the study command -----------------------------------------------------------------------------------


def test_token_matched_arm_is_shown_beside_its_compute_matched_twin(tmp_path):
    """role tokens: per arch, tokens and FLOPs of both arms and the paired difference to the reference."""
    from harness.reporting.study_report import build_study_report
    from harness.sweeps.compare import SweepOptions
    from harness.sweeps.study import StudySpec, StudySweep, write_study_file

    results, reports = tmp_path / "results", tmp_path / "reports"
    compute, tokens = [], []
    for seed in range(3):
        for arch, offset in (("gpt2", 0.0), ("gpt3", -0.05)):
            write_run(results, f"{arch}-s{seed}", arch, seed, 2e-3, loss=2.0 + offset + 0.01 * seed, recall48=0.5, facts=0.4)
            compute.append(f"{arch}-s{seed}")
            # token-matched: gpt3 trains gpt2's tokens, and its advantage shrinks to 0.01 nats
            write_run(results, f"{arch}-tok-s{seed}", arch, seed, 2e-3, loss=2.0 + offset / 5 + 0.01 * seed,
                      recall48=0.5, facts=0.4)
            tokens.append(f"{arch}-tok-s{seed}")
    options = SweepOptions(archs=("gpt2", "gpt3"))
    spec = StudySpec("tok", [StudySweep("syn", "synthetic", options),
                             StudySweep("syn-tokens", "tokens", SweepOptions(archs=("gpt2", "gpt3"), match="tokens"))])
    write_study_file(reports / "tok", spec, {"syn": {"role": "synthetic", "command": "c1", "run_ids": compute},
                                             "syn-tokens": {"role": "tokens", "command": "c2", "run_ids": tokens}})
    text = build_study_report("tok", results_dir=results, reports_dir=reports).path.read_text()
    section = text.split("## Compute-matched (`syn`) vs token-matched (`syn-tokens`)")[1].split("\n## ")[0]
    gpt3 = next(line for line in section.splitlines() if line.startswith("| gpt3"))
    cells = [c.strip() for c in gpt3.strip("|").split("|")]
    assert cells[4] == "-0.0500 ± 0.0000" and cells[8] == "-0.0100 ± 0.0000", cells
    assert "compute-matched: tokens" in section and "token-matched: training FLOPs" in section


@pytest.mark.parametrize(
    "body, message",
    [
        ("name: s\nsweeps:\n  - {name: a, role: nope, archs: [gpt2]}\n", "role 'nope'"),
        ("name: s\nsweeps:\n  - {name: a, role: lr, size: nano}\n  - {name: b, role: lr, size: nano}\n",
         "each role may appear once"),
        ("name: s\nsweeps:\n  - {name: a, role: lr, args: x}\n", "uses `args` \\(a command line\\)"),
        ("name: s\nsweeps:\n  - {name: a, role: lr, archs: gpt2, sizes: nano, size: nano}\n", "not both"),
        ("sweeps: []\n", "needs a `name`"),
        ("name: s\nsweeps:\n  - {name: a, role: tokens, archs: [gpt2]}\n", "role tokens goes with `match: tokens`"),
    ],
)
def test_bad_study_files_are_one_sentence(tmp_path, body, message):
    from harness.sweeps.study import load_study

    path = tmp_path / "study.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_study(path)


@pytest.mark.slow
def test_study_command_end_to_end_and_report_regenerates(results_tmp, monkeypatch, tmp_path):
    import io
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    import harness.training.heldout as heldout
    from harness.cli import main as cli_main

    original = heldout.validation_metrics
    monkeypatch.setattr(heldout, "validation_metrics",
                        lambda *a, max_tokens=4096, **k: original(*a, max_tokens=min(max_tokens, 4096), **k))

    def cli(argv):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cli_main(argv), out.getvalue(), err.getvalue()

    study = tmp_path / "tiny.yaml"
    study.write_text("name: tiny\nsweeps:\n  - name: syn\n    role: synthetic\n    archs: [gpt2, gpt3]\n    size: nano\n"
                     "    budget: 6.0e+9\n    seeds: 2\n    eval: {tasks: [harness_recall_16], limit: 8}\n"
                     "comparisons:\n  - {key: recall_16, topic: banded vs dense, setting: syn, "
                     "metric: eval/harness_recall_16/acc, label: recall accuracy 16 tokens back, unit: accuracy, "
                     "a: gpt3, b: gpt2, higher_is_better: true, expected: no difference}\n")
    code, out, err = cli(["study", str(study), "--dry-run"])
    assert code == 0 and out.count("\ttrain\t") == 4, err
    code, out, err = cli(["study", str(study)])
    assert code == 0, err
    report = results_tmp.parent / "reports" / "tiny" / "report.md"
    assert out.strip() == str(report)
    first = report.read_text()
    assert "## Findings" in first and "recall accuracy 16 tokens back" in first and "Holm" in first
    runs = json.loads((report.parent / "runs.json").read_text())
    assert runs["mode"] == "study" and len(runs["sweeps"]["syn"]["run_ids"]) == 4
    report.unlink()
    code, out, err = cli(["report", "tiny"])  # regenerated from the records alone
    assert code == 0, err
    assert report.read_text() == first
