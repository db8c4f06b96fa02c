"""Sweeps through submitit: ``slurm`` (``submitit.AutoExecutor`` on a Slurm cluster) and ``submitit-local``
(submitit's ``LocalExecutor``: the same code path on one machine, for tests and users without Slurm).

Each run is one submitit job running a ``RunJob``; runs submitted together go out as one job array
(``array_parallelism`` at once). A job preempted or out of time is requeued by submitit through
``RunJob.checkpoint`` and resumes from its checkpoint. ``slurm_parameters`` builds the parameters
from ``SlurmOptions`` (command line over the study file), so they can be checked without a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.sweeps.executors import ExecutorOptions, SlurmOptions
from harness.sweeps.job import JobOutcome, RunJob

SIGNAL_DELAY_S = 120  # the preemption signal comes this long before the time limit: time to checkpoint


def slurm_parameters(options: SlurmOptions, name: str = "harness") -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for one run per job (one task per GPU, one node)."""
    gpus = options.gpus_per_run
    parameters: dict[str, Any] = {
        "name": name,
        "timeout_min": options.time_min,
        "nodes": 1,
        "tasks_per_node": max(1, gpus),
        "gpus_per_node": gpus,
        "slurm_array_parallelism": options.array_parallelism,
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
    }
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.account:
        parameters["slurm_account"] = options.account
    if options.cpus_per_task:
        parameters["cpus_per_task"] = options.cpus_per_task
    return parameters


def local_parameters(options: ExecutorOptions, name: str = "harness") -> dict[str, Any]:
    """The same for submitit's ``LocalExecutor`` (no partition or account; the time limit still applies,
    with submitit's own 30 s warning before it)."""
    return {"name": name, "timeout_min": options.slurm.time_min, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 0}


class SubmititHandle:
    """A submitit job; its result is the ``JobOutcome`` dict (a job that raised is a failed outcome)."""

    def __init__(self, job, run_id: str) -> None:
        self.job, self.run_id, self.job_id = job, run_id, str(job.job_id)

    def done(self) -> bool:
        return self.job.done()

    def outcome(self) -> dict[str, Any]:
        try:
            return self.job.result()
        except Exception as error:  # submitit raises UncompletedJobError / FailedJobError with the job's traceback
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            return JobOutcome(self.run_id, "failed", error=f"submitit job {self.job_id}: {lines[-1] if lines else error}"
                              ).to_dict()


class SubmititExecutor:
    """``slurm`` or ``submitit-local`` (see the module docstring); job files go to ``work_dir/submitit``."""

    def __init__(self, options: ExecutorOptions, work_dir: Path, name: str = "harness") -> None:
        import shutil

        import submitit

        self.kind = options.kind
        cluster = "slurm" if options.kind == "slurm" else "local"
        if cluster == "slurm" and shutil.which("srun") is None:
            raise ValueError("--executor slurm needs a Slurm cluster (no `srun` on PATH here); "
                             "use --executor submitit-local or local on this machine.")
        self.executor = submitit.AutoExecutor(folder=Path(work_dir) / "submitit" / "%j", cluster=cluster)
        parameters = slurm_parameters(options.slurm, name) if cluster == "slurm" else local_parameters(options, name)
        self.executor.update_parameters(**parameters)
        # Slurm throttles the array itself (array_parallelism): every run is submitted at once
        self.capacity = 10**9 if cluster == "slurm" else options.jobs
        self.threads = options.threads or (options.slurm.cpus_per_task if cluster == "slurm" else options.threads_per_job())

    def submit(self, jobs: list[RunJob]) -> list[SubmititHandle]:
        for job in jobs:
            job.kind, job.threads = self.kind, self.threads
        if len(jobs) == 1:
            return [SubmititHandle(self.executor.submit(jobs[0]), jobs[0].run_id)]
        with self.executor.batch():  # one job array
            submitted = [self.executor.submit(job) for job in jobs]
        return [SubmititHandle(job, run.run_id) for job, run in zip(submitted, jobs)]

    def attach(self, job_id: str, run_id: str) -> SubmititHandle | None:
        """A Slurm job of an earlier driver of this sweep, still queued or running; None otherwise."""
        if self.kind != "slurm":
            return None
        import submitit

        job = submitit.SlurmJob(folder=self.executor.folder, job_id=job_id)
        return None if job.state in ("UNKNOWN", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else SubmititHandle(job, run_id)

    def close(self) -> None:
        pass
