"""Plant ten small, realistic bugs one at a time in copies of the project; `harness check` must fail on each.

    python benchmarks/plant_bugs.py                       # all ten (about 4 minutes on a quiet 2-core CPU)
    python benchmarks/plant_bugs.py --bugs lr_to_zero     # some of them
    python benchmarks/plant_bugs.py --full                # each against the whole check, not only its groups

Each bug is a source patch (one exact text replacement; the script stops if the text is no
longer there, so a refactor is noticed rather than silently planting nothing) applied to a
fresh copy of ``architectures/``, ``harness/`` and ``tests/``. In the copy,
``python -m harness check --baseline <this checkout's baseline> --archs <groups>`` runs on
the groups the bug touches (the whole check measures those groups the same way, so its
verdict is no kinder; ``--full`` runs everything). A bug counts as **caught** when the check
exits 1 with at least one failing metric row; a check that only crashed or left a run
incomplete is reported as ``crashed``. The weight-decay bug must also fail
``tests/test_optimizer_groups.py``.

Exit status 0 when every bug is caught, else 1. ``tests/test_plant_bugs.py`` runs it (slow).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("architectures", "harness", "tests", "pyproject.toml")
DEFAULT_BASELINE = ROOT / "results" / "baselines" / "ci-cpu.json"


@dataclass(frozen=True)
class Bug:
    name: str
    what: str
    path: str  # relative to the project root
    old: str
    new: str
    groups: tuple[str, ...]  # the check's groups it touches ("resume" = the baseline's resume_arch)
    failing_tests: tuple[str, ...] = ()  # test files that must fail too


BUGS = (
    Bug("band_off_by_one", "the banded window lets each query see w + 1 keys",
        "architectures/attention.py", "in_band = (col > row) & (col <= row + window)",
        "in_band = (col >= row) & (col <= row + window)", ("gpt3", "gpt4")),
    Bug("gpt2_residual_init", "GPT-2's 1/sqrt(2 n_layer) residual init scaling dropped",
        "architectures/model.py",
        "return std / math.sqrt(2 * self.config.n_layer) if self.config.residual_init_scaling else std",
        "return std", ("gpt2",)),
    Bug("moe_gates_not_renormalised", "top-k gates taken from the softmax over all experts, not renormalised",
        "architectures/moe.py", "gates = torch.softmax(top_logits, dim=-1)",
        "gates = torch.softmax(logits, dim=-1).gather(-1, top_index)", ("gpt4",)),
    Bug("lm_head_flops_left_out", "the LM head left out of the FLOP count",
        "harness/flops/analytic.py", 'counts["lm_head"] = 2 * config.d_model * config.vocab_size', 'counts["lm_head"] = 0.0',
        ("gpt2",)),
    Bug("weight_decay_on_biases_and_norms", "weight decay on biases and LayerNorm parameters too",
        "harness/training/optim.py",
        'if isinstance(module, NORM_TYPES) or leaf_name == "bias" or leaf_name in getattr(module, "no_weight_decay", ()):'
        "\n        return False\n    return parameter.dim() >= 2",
        "return True", ("gpt2",), ("tests/test_optimizer_groups.py",)),
    Bug("loglik_shifted", "continuation log-likelihoods read one position early",
        "harness/evaluation/packing.py", "logit_positions += [r * width + start + o for o in offsets]",
        "logit_positions += [r * width + start + o - 1 for o in offsets]", ("gpt2",)),
    Bug("val_doc_leaked", "validation documents also written to the training shards",
        "harness/data/shard_prepare.py", 'for split, mask, token_mask in (("train", ~is_val, ~token_is_val), ("val", is_val, token_is_val)):',
        'for split, mask, token_mask in (("train", is_val | ~is_val, token_is_val | ~token_is_val), ("val", is_val, token_is_val)):',
        ("text",)),
    Bug("lr_to_zero", "the learning rate decays to 0 instead of min_lr_ratio x lr",
        "harness/training/optim.py", "floor = recipe.min_lr_ratio * recipe.lr", "floor = 0.0", ("gpt2",)),
    Bug("gpt1_final_norm", "a final LayerNorm added to GPT-1",
        "architectures/gpt1.py", "final_norm=False,", "final_norm=True,", ("gpt1",)),
    Bug("resume_forgets_scheduler", "resuming restores the model and optimizer but not the scheduler",
        "harness/runs/run_dir.py", '        scheduler.load_state_dict(checkpoint["scheduler"])\n', "", ("resume",)),
)


def plant(bug: Bug, folder: Path) -> None:
    """Copy the project into ``folder`` and apply ``bug``'s patch (exactly one occurrence)."""
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, folder / name)
    target = folder / bug.path
    text = target.read_text()
    if text.count(bug.old) != 1:
        raise SystemExit(f"{bug.name}: {bug.path} holds {text.count(bug.old)} copies of the patched text, not 1; "
                         f"update the patch in {Path(__file__).name}.")
    target.write_text(text.replace(bug.old, bug.new))


def check_groups(bug: Bug, baseline: Path, full: bool) -> list[str]:
    if full:
        return []
    resume_arch = json.loads(baseline.read_text())["settings"]["resume_arch"]
    return [resume_arch if group == "resume" else group for group in bug.groups]


def run_bug(bug: Bug, baseline: Path, full: bool) -> dict:
    """Plant ``bug`` in a temporary copy, run the check (and its failing tests); the outcome."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"planted-{bug.name}-") as folder:
        folder = Path(folder)
        plant(bug, folder)
        env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"}
        groups = check_groups(bug, baseline, full)
        command = [sys.executable, "-m", "harness", "check", "--baseline", str(baseline)]
        command += ["--archs", ",".join(groups)] if groups else []
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        failed_lines = [line for line in done.stdout.splitlines() if re.search(r"\bFAIL\b", line)
                        and not line.startswith("FAIL:")]
        failed_rows = [tuple(line.split()[:2]) for line in failed_lines]
        tests_failed = {}
        for test in bug.failing_tests:
            result = subprocess.run([sys.executable, "-m", "pytest", test, "-q", "-x", "-p", "no:cacheprovider"],
                                    cwd=folder, env=env, capture_output=True, text=True)
            tests_failed[test] = result.returncode == 1
    if done.returncode == 1 and failed_rows:
        verdict = "caught"
    elif done.returncode == 0:
        verdict = "missed"
    else:
        verdict = "crashed"
    return {"bug": bug.name, "what": bug.what, "groups": groups or "all", "verdict": verdict,
            "failed_metrics": [f"{arch} {metric}" for arch, metric in failed_rows], "failed_rows": failed_lines,
            "exit_code": done.returncode,
            "tests_failed": tests_failed, "wall_s": round(time.perf_counter() - started, 1),
            "output_tail": (done.stdout + done.stderr)[-1500:] if verdict != "caught" else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bugs", help=f"comma-separated subset of: {', '.join(b.name for b in BUGS)}")
    parser.add_argument("--baseline", default=str(DEFAULT_BASELINE), help="the baseline the check compares with")
    parser.add_argument("--full", action="store_true", help="run the whole check for each bug, not only its groups")
    parser.add_argument("--json", help="also write the outcomes to this file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.bugs.split(",")] if args.bugs else [b.name for b in BUGS]
    unknown = sorted(set(names) - {b.name for b in BUGS})
    if unknown:
        parser.error(f"unknown bug(s) {', '.join(unknown)}")
    outcomes = []
    for bug in (b for b in BUGS if b.name in names):
        outcome = run_bug(bug, Path(args.baseline).resolve(), args.full)
        outcomes.append(outcome)
        tests = "".join(f"; {t} {'fails' if ok else 'PASSES'}" for t, ok in outcome["tests_failed"].items())
        metrics = ", ".join(outcome["failed_metrics"][:6]) + (" ..." if len(outcome["failed_metrics"]) > 6 else "")
        print(f"{bug.name:34s} {outcome['verdict']:8s} {outcome['wall_s']:6.1f} s  {metrics}{tests}", flush=True)
        if outcome["output_tail"]:
            print(outcome["output_tail"], flush=True)
    caught = sum(o["verdict"] == "caught" and all(o["tests_failed"].values()) for o in outcomes)
    print(f"caught {caught} of {len(outcomes)} planted bugs")
    if args.json:
        Path(args.json).write_text(json.dumps(outcomes, indent=2) + "\n")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
