"""One run of a sweep as a job: the picklable callable every executor runs, and what it reports back.

``RunJob(spec, evaluation, results_dir, kind)()`` trains and evaluates one ``RunSpec`` through
``harness.runs.pipeline.run`` (a finished run is reused by id, an interrupted one resumes from its
checkpoint) and returns a ``JobOutcome`` as a dict. It runs in the sweep's own process
(``inline``), in a worker process (``local``, ``harness.sweeps.worker``) or in a submitit job
(``submitit-local``, ``slurm``). A run it trained gets ``launcher`` = {kind, job_id, host} in its
record; a reused run keeps the launcher that trained it.

Preemption under submitit: submitit's signal (USR2) first asks the training loop to stop at the
next step boundary (as SIGTERM does: checkpoint saved, record ``interrupted``), then submitit's own
handler calls ``RunJob.checkpoint``, which requeues the same job; the requeued job resumes the run
from that checkpoint. If the loop has not stopped within ``PREEMPT_GRACE_S``, submitit's handler
runs at once (the run then resumes from its last periodic checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.runs.pipeline import EvalOptions
from harness.threads import torch_threads

PREEMPT_GRACE_S = 30.0
SUBMITIT_KINDS = ("submitit-local", "slurm")


@dataclass
class JobOutcome:
    """What one attempt at a run ended as: ``status`` ok / failed / interrupted, and why (``error``)."""

    run_id: str
    status: str
    reused: bool = False
    evaluated: bool = False
    error: str | None = None
    evaluation_error: str | None = None
    final_val_loss: float | None = None
    launcher: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_id_here(kind: str) -> str:
    """This process's job id as the sweep knows it: submitit's job id, else the worker's (torchrun's) PID."""
    if kind in SUBMITIT_KINDS:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    if kind == "local" and "TORCHELASTIC_RUN_ID" in os.environ:
        return str(os.getppid())  # the process the sweep started is torchrun
    return str(os.getpid())


@dataclass
class RunJob:
    """Train and evaluate one run (see the module docstring); ``threads``: torch threads (None: as is)."""

    spec: dict[str, Any]
    evaluation: EvalOptions
    results_dir: str
    kind: str = "inline"
    threads: int | None = None
    force: bool = False
    wait: bool = False

    @property
    def run_id(self) -> str:
        from harness.runs.spec import RunSpec

        return RunSpec.from_dict(self.spec).run_id()

    def __call__(self) -> dict[str, Any]:
        if self.kind in SUBMITIT_KINDS:
            _export_submitit_ranks()
        preemption = _Preemption.install() if self.kind in SUBMITIT_KINDS else None
        try:
            outcome = self._run()
        finally:
            if preemption is not None:
                preemption.uninstall()
        if preemption is not None and preemption.requested and outcome.status == "interrupted":
            preemption.requeue()  # submitit's own handler: checkpoint() → requeue, then exit
        return outcome.to_dict()

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's checkpoint hook: requeue this job; it resumes the run from its checkpoint."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)

    def _run(self) -> JobOutcome:
        from harness.runs import pipeline
        from harness.runs.lock import RunLocked
        from harness.runs.spec import RunSpec
        from harness.training.distributed import is_main_process
        from harness.training.trainer import TrainingFailed

        spec = RunSpec.from_dict(self.spec)
        run_id = spec.run_id()
        launcher = {"kind": self.kind, "job_id": job_id_here(self.kind), "host": socket.gethostname()}
        try:
            with torch_threads(self.threads) if self.threads else contextlib.nullcontext():
                result = pipeline.run(spec, self.evaluation, self.results_dir, force=self.force, progress=False,
                                      wait=self.wait, eval_errors="record")
        except (TrainingFailed, RunLocked) as failure:
            _stamp_launcher(Path(self.results_dir) / run_id, launcher)
            return JobOutcome(run_id, "failed", error=str(failure), launcher=launcher)
        if not result.reused and is_main_process():
            _stamp_launcher(result.run_dir, launcher)
        loss = result.record.get("final_val_loss")
        return JobOutcome(run_id, result.status, result.reused, result.evaluation is not None,
                          result.record.get("error") if result.status != "ok" else None, result.evaluation_error,
                          float(loss) if isinstance(loss, (int, float)) else None, launcher)


def _stamp_launcher(run_dir: Path, launcher: dict[str, Any]) -> None:
    """Write ``launcher`` into the run's record (nothing when the run left no record)."""
    from harness.runs.records import update_record

    try:
        update_record(run_dir, launcher=launcher)
    except (FileNotFoundError, ValueError):
        pass


def _export_submitit_ranks() -> None:
    """A submitit job of several tasks (one per GPU): export torchrun's RANK/WORLD_SIZE/... for the trainer."""
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


class _Preemption:
    """Turn submitit's preemption signal into a graceful stop first (see the module docstring)."""

    def __init__(self, signum: int, previous) -> None:
        self.signum, self.previous, self.requested, self.timer = signum, previous, False, None

    @classmethod
    def install(cls) -> "_Preemption | None":
        import submitit

        usr_sig = submitit.JobEnvironment._usr_sig()
        previous = signal.getsignal(usr_sig)
        if not callable(previous):
            return None
        handler = cls(usr_sig, previous)
        signal.signal(usr_sig, handler)
        return handler

    def __call__(self, signum, frame) -> None:
        if self.requested:  # the grace period passed, or a second signal: submitit's own handler now
            self.previous(signum, frame)
            return
        self.requested = True
        os.kill(os.getpid(), signal.SIGTERM)  # the training loop stops at the next step, checkpoint saved
        self.timer = threading.Timer(PREEMPT_GRACE_S, os.kill, (os.getpid(), signum))
        self.timer.daemon = True
        self.timer.start()

    def uninstall(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        signal.signal(self.signum, self.previous)

    def requeue(self) -> None:
        self.previous(self.signum, None)
