"""Wall time of one sweep on ``--executor local --jobs N`` against ``--executor inline``, and the same losses.

    python benchmarks/sweep_parallel.py                       # 8 nano runs: gpt1-gpt4 x 2 seeds at 1e11 FLOPs
    python benchmarks/sweep_parallel.py --budget 3e9 --seeds 1 --archs gpt2,gpt3   # a quick smoke check

Each executor runs the same `harness compare ... --no-eval` in a fresh results folder, in both
orders (inline, local, local, inline) so drift in the machine's load hits both; the figure is
mean(local) / mean(inline) of the whole command's wall time (seconds, `time.perf_counter`
around the subprocess). Inline runs with ``--inline-threads`` torch threads (default 1, the
fastest for these small models on a shared CPU, as ``harness check`` uses), local with
cores / jobs per worker; the final validation losses (nats/token) must agree within 1e-5 (bit
for bit when the thread counts are equal). The load average before and after is printed:
measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 1e-5  # nats/token, for worker thread counts that differ from inline's


def sweep(kind: str, args: argparse.Namespace, root: Path) -> tuple[float, dict[str, float]]:
    """Wall seconds of one `harness compare` on ``kind`` in a fresh folder, and its final losses by run id."""
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=root))
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(folder / "results"), "HARNESS_REPORTS_DIR": str(folder / "reports")}
    env.pop("OMP_NUM_THREADS", None)  # each executor sets its own thread count
    executor = ["--executor", "inline", "--threads", str(args.inline_threads)] if kind == "inline" else \
        ["--executor", "local", "--jobs", str(args.jobs)]
    command = [sys.executable, "-m", "harness", "compare", "--archs", args.archs, "--size", args.size,
               "--budget", args.budget, "--seeds", str(args.seeds), "--no-eval", "--name", "bench", *executor]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    runs = json.loads((folder / "reports" / "bench" / "runs.json").read_text())
    losses = {run_id: json.loads((folder / "results" / run_id / "record.json").read_text())["final_val_loss"]
              for run_id in runs["run_ids"]}
    return wall, losses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="gpt1,gpt2,gpt3,gpt4")
    parser.add_argument("--size", default="nano")
    parser.add_argument("--budget", default="1e11", help="training FLOPs per run (2 per multiply-add)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--inline-threads", type=int, default=1, help="torch threads of the inline sweep")
    args = parser.parse_args()
    load_before = os.getloadavg()
    walls: dict[str, list[float]] = {"inline": [], "local": []}
    losses: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as root:
        for kind in ("inline", "local", "local", "inline"):
            wall, losses[kind] = sweep(kind, args, Path(root))
            walls[kind].append(wall)
            print(f"{kind:6s} {wall:7.1f} s", flush=True)
    load_after = os.getloadavg()
    worst = max(abs(losses["local"][r] - losses["inline"][r]) for r in losses["inline"])
    inline, local = (sum(w) / len(w) for w in (walls["inline"], walls["local"]))
    print(f"{len(losses['inline'])} runs of {args.size} at {args.budget} training FLOPs (2 per multiply-add), --no-eval")
    print(f"inline mean {inline:.1f} s, local --jobs {args.jobs} mean {local:.1f} s: ratio {local / inline:.2f}x "
          f"(wall time of the whole command)")
    print(f"largest final-loss difference {worst:.2e} nats/token (tolerance {TOLERANCE:g})")
    print(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; {os.cpu_count()} CPUs")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
