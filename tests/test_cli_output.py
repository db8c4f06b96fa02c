"""What the commands print: the run summary block, progress off a terminal, a pasteable record command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.cli import main as cli_main
from harness.progress import LineProgress
from harness.reporting.run_summary import evaluation_lines, run_summary

REPO = Path(__file__).resolve().parents[1]
RUN = ["run", "--arch", "gpt2", "--size", "nano", "--budget", "1.1e10", "--dtype", "fp32",
       "--data", "synthetic?n_train=200000&n_val=20000", "--tasks", "harness_facts", "--eval-limit", "3"]


def test_run_ends_with_a_summary_block(results_tmp, capsys):
    assert cli_main(RUN) == 0
    out = capsys.readouterr().out.splitlines()
    (run_dir,) = [p for p in results_tmp.iterdir() if p.is_dir()]
    record = json.loads((run_dir / "record.json").read_text())
    block = out[out.index(f"gpt2 nano (seed 0): ok"):]
    labels = [line.split()[0] for line in block[1:] if line.startswith("  ") and line[2] != " "]
    assert labels == ["training", "loss", "excess", "evaluation", "record"]
    excess = next(line for line in block if line.strip().startswith("excess"))
    assert f"{record['excess_loss']:.3f} nats/token over the entropy floor" in excess
    assert f"unigram baseline: {record['unigram_excess_loss']:.3f} excess, {record['unigram_val_loss']:.3f} nats/token loss" in excess
    evaluation = next(line for line in block if line.strip().startswith("evaluation"))
    assert "harness_facts" in evaluation and evaluation.endswith("n = 3")
    assert block[-1].split()[-1] == str(run_dir / "record.json")


def test_summary_of_a_text_run_labels_the_unigram_baseline_and_omits_what_is_missing():
    record = {"arch": "gpt2", "size": "nano", "seed": 1, "status": "ok", "steps": 5, "tokens": 5120.0,
              "flops_used": 1e10, "budget_flops": 1.1e10, "tokens_per_s": 900.0, "wall_s": 6.0, "mfu": 0.0123,
              "final_val_loss": 5.5, "val_bpb": 2.345, "unigram_val_bpb": 3.42, "unigram_val_loss": 5.9}
    text = run_summary(record, "results/x")
    assert "  bits/byte   2.345 bits/byte (unigram baseline: 3.420 bits/byte, 5.900 nats/token loss)" in text
    assert "MFU 1.23 % of peak" in text and "None" not in text
    assert "not evaluated (`python -m harness eval --run results/x` evaluates it)" in text
    lines = evaluation_lines({"arc_easy": {"acc": {"value": 0.25, "stderr": None, "n": 20}}})
    assert lines == ["arc_easy  acc  0.25  n = 20"]


def test_progress_off_a_terminal_is_a_periodic_line_and_lm_eval_is_quiet(tmp_path):
    """stderr piped (not a terminal): lines instead of bars, lm-eval's bars held back; the record's
    command can be pasted back."""
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(tmp_path / "results"), "HARNESS_PROGRESS_INTERVAL_S": "0",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "harness", *RUN], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("training gpt2-nano-")]
    assert len(lines) >= 2 and ": step 1 of " in lines[0] and "s elapsed" in lines[-1]
    assert " nats/token, " in lines[0] and " tokens/s, " in lines[0]
    assert "\r" not in done.stderr and "it/s]" not in done.stderr and "%|" not in done.stderr
    (record_file,) = (tmp_path / "results").glob("*/record.json")
    command = json.loads(record_file.read_text())["command"]
    assert command.startswith("python -m harness run --arch gpt2 ")
    assert "'synthetic?n_train=200000&n_val=20000'" in command  # quoted for the shell


def test_line_progress_prints_at_the_interval_and_a_last_line(capsys):
    import io

    stream = io.StringIO()
    bar = LineProgress(10, 0, desc="training x", stream=stream, interval_s=3600)
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert stream.getvalue() == ""  # shorter than the interval: nothing, not even a last line
    bar = LineProgress(4, 2, desc="training x", stream=stream, interval_s=0)
    bar.set_postfix(loss="4.100")
    bar.update(1)
    bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["training x: step 3 of 4 (75 %)", "training x: step 4 of 4 (100 %)"]
    assert "train loss 4.100 nats/token" in lines[0]


def test_small_messages_say_the_first_thing_wrong(results_tmp, capsys):
    assert cli_main(["run", "--arch", "gpt2", "--budget", "-3e11"]) == 2
    assert capsys.readouterr().err.startswith("error: --budget must be a positive finite number of training FLOPs")
    assert cli_main(["finetune", "--run", "no-such-run", "--data", "task:fact"]) == 2  # before the budget or the run
    assert capsys.readouterr().err == ("error: unknown task 'fact' in 'task:fact'; known: task:facts, task:recall, "
                                       "task:reverse_recall, task:translate, task:summarize.\n")
    from harness.sweeps.runs_file import write_runs_file

    write_runs_file(results_tmp.parent / "reports" / "planned", {"name": "planned", "mode": "runs",
                                                                   "run_ids": ["a-s0", "b-s0"], "command": None})
    assert cli_main(["report", "planned"]) == 2
    err = capsys.readouterr().err
    assert "lists 2 run(s) and not one has a readable finished record" in err and "none of the 0" not in err


def test_record_command_is_pasteable_under_python_and_torchrun(monkeypatch):
    from harness.runs.records import command_line

    main_py = str(REPO / "harness" / "__main__.py")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert command_line([main_py, "run", "--data", "a b.txt"]) == "python -m harness run --data 'a b.txt'"
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert command_line([main_py, "run"]) == "torchrun --nnodes=2 --nproc_per_node=8 -m harness run"
