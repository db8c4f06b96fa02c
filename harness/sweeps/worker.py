"""A local sweep's worker process: ``python -m harness.sweeps.worker JOB.json OUTCOME.json``.

``JOB.json`` holds a ``RunJob``'s fields (``harness.sweeps.executors.LocalExecutor`` writes it);
the worker runs the job and writes its ``JobOutcome`` to ``OUTCOME.json`` (atomically; under
torchrun only rank 0 writes). On Linux every process the sweep starts (the worker, or torchrun) and
every torchrun rank asks for SIGTERM when its parent dies, so a killed sweep leaves its runs
``interrupted`` with a checkpoint, ready to resume.
"""

from __future__ import annotations

import signal
import sys


def stop_with_parent() -> None:
    """Linux: deliver SIGTERM to this process when its parent dies (prctl PR_SET_PDEATHSIG); else nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv: list[str]) -> int:
    from harness.io import read_json, write_json_atomic
    from harness.runs.pipeline import EvalOptions
    from harness.sweeps.job import RunJob
    from harness.training.distributed import env_rank

    stop_with_parent()
    if len(argv) != 2:
        print("usage: python -m harness.sweeps.worker JOB.json OUTCOME.json", file=sys.stderr)
        return 2
    fields = read_json(argv[0])
    fields["evaluation"] = EvalOptions(**fields["evaluation"])
    outcome = RunJob(**fields)()
    if env_rank() == 0:
        write_json_atomic(argv[1], outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
