"""The GPU check's FSDP2 section (``benchmarks/gpu_check.py``): 2 ranks, ``--parallel ddp`` against ``fsdp2``.

Runs only with 2 or more GPUs (skipped, and says so, on one); the dry run does the same on the
CPU with gloo at the nano size. Each strategy trains the same spec (same run id) into its own
results folder under ``torchrun --standalone --nproc_per_node=2``; the section reports both
runs' final validation loss (nats/token), their difference, tokens/s (global batch), the
parallel record, and whether fsdp2's ``checkpoint.pt`` loads with ``load_run_model``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

# gpt2 124m, a short bf16 run (about 20 optimizer steps of 64 Ki tokens); the nano dry run on gloo
GPU_RUN = ["--arch", "gpt2", "--size", "124m", "--budget", "1e15", "--batch-tokens", "65536", "--dtype", "bf16"]
DRY_RUN = ["--arch", "gpt2", "--size", "nano", "--budget", "3e9", "--micro-batch", "8", "--dtype", "fp32"]
RECORD_KEYS = ("status", "steps", "final_val_loss", "tokens_per_s", "mfu", "wall_s", "parallel", "run_id")


def fsdp2(out: Path, device: str, dry_run: bool, timeout: float, env: dict) -> dict:
    """The section's entry for gpu_check.json (``env``: the subprocess environment without the results folder)."""
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if device == "cuda" and gpus < 2:
        return {"status": "skipped", "note": f"{gpus} GPU visible: the FSDP2 check needs 2 or more"}
    spec = DRY_RUN if dry_run else GPU_RUN
    runs, logs = {}, []
    for strategy in ("ddp", "fsdp2"):
        results = out / "fsdp_check" / strategy
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "harness",
                   "run", *spec, "--device", device, "--no-eval", "--parallel", strategy]
        try:
            done = subprocess.run(command, env={**env, "HARNESS_RESULTS_DIR": str(results)}, capture_output=True,
                                  text=True, timeout=timeout / 2)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "error": f"--parallel {strategy} did not finish in {timeout / 2:.0f} s"}
        log = f"fsdp_check_{strategy}.log"
        (out / log).write_text(done.stdout + done.stderr)
        logs.append(log)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            return {"status": "failed", "error": f"--parallel {strategy}: {last}", "logs": logs}
        (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
        record = json.loads((run_dir / "record.json").read_text())
        runs[strategy] = {key: record.get(key) for key in RECORD_KEYS}
        if strategy == "fsdp2":
            runs[strategy]["checkpoint_loads"] = _checkpoint_loads(run_dir)
    difference = abs(runs["fsdp2"]["final_val_loss"] - runs["ddp"]["final_val_loss"])
    return {"status": "ok", "command": " ".join(["torchrun --nproc_per_node=2 -m harness run", *spec]), "runs": runs,
            "val_loss_difference_nats": difference, "logs": logs}


def _checkpoint_loads(run_dir: Path) -> bool:
    from harness.runs.run_dir import load_run_model

    model, _, _ = load_run_model(run_dir)
    return sum(p.numel() for p in model.parameters()) > 0


def fsdp2_markdown(section: dict) -> list[str]:
    """The section's table for gpu_check.md (nothing unless it ran)."""
    if section.get("status") != "ok":
        return []
    lines = ["", f"## DDP against FSDP2 on 2 ranks: `{section['command']}`", "",
             "| strategy | status | steps | final val loss (nats/token) | tokens/s (global batch) | MFU |",
             "|---|---|---|---|---|---|"]
    for strategy, run in section["runs"].items():
        mfu = f"{100 * run['mfu']:.1f} %" if run.get("mfu") else "—"
        lines.append(f"| {strategy} | {run['status']} | {run['steps']} | {run['final_val_loss']:.4f} | "
                     f"{run['tokens_per_s']:,.0f} | {mfu} |")
    lines += ["", f"Validation loss difference {section['val_loss_difference_nats']:.2g} nats/token; fsdp2's "
                  f"checkpoint.pt loads with load_run_model: {section['runs']['fsdp2']['checkpoint_loads']}."]
    return lines
