"""Executors: where a sweep's runs execute. ``harness.sweeps.driver.make_executor(options, work_dir)`` picks one by name.

- ``inline``: in the sweep's own process, one after another (the harness's original behaviour);
- ``local``: ``jobs`` worker processes on this machine (``harness.sweeps.worker``), each with
  ``threads`` torch threads (default: CPU cores // jobs) and, on a machine with several GPUs, its
  own ``gpus_per_run`` of them (``CUDA_VISIBLE_DEVICES``); a run on several GPUs goes through torchrun;
- ``submitit-local`` and ``slurm``: submitit jobs (``harness.sweeps.submitit_executor``).

Every executor takes ``RunJob``s and returns handles: ``job_id``, ``done()`` and ``outcome()``
(a ``JobOutcome`` dict). ``capacity`` is how many jobs may be outstanding at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.sweeps.job import JobOutcome, RunJob
from harness.sweeps.worker import stop_with_parent

EXECUTORS = ("inline", "local", "submitit-local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources per run: ``partition``, ``time_min`` (time limit, minutes), ``gpus_per_run``,
    ``account``, ``array_parallelism`` (runs at once in the job array), ``cpus_per_task``."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_run: int = 0
    account: str | None = None
    array_parallelism: int = 32
    cpus_per_task: int | None = None

    KEYS = ("partition", "time_min", "gpus_per_run", "account", "array_parallelism", "cpus_per_task")

    def __post_init__(self) -> None:
        for name in ("time_min", "array_parallelism"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"slurm {name} must be a positive whole number, got {value!r}.")
        for name in ("gpus_per_run", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 0):
                raise ValueError(f"slurm {name} must be a whole number ≥ 0, got {value!r}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str = "the study file") -> "SlurmOptions":
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"`slurm` in {source} has unknown key(s) {', '.join(unknown)}; known: {', '.join(cls.KEYS)}.")
        return cls(**data)

    def merged(self, overrides: dict[str, Any]) -> "SlurmOptions":
        """These options with every non-None value of ``overrides`` (the command line) on top."""
        return SlurmOptions(**{**asdict(self), **{k: v for k, v in overrides.items() if v is not None}})


@dataclass(frozen=True)
class ExecutorOptions:
    """Which executor runs a sweep's jobs and with what resources (see the module docstring)."""

    kind: str = "inline"
    jobs: int = 1
    threads: int | None = None
    gpus_per_run: int = 1
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}.")
        for name in ("jobs", "gpus_per_run"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive whole number, got {value!r}.")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"--threads must be a positive whole number, got {self.threads!r}.")

    def threads_per_job(self) -> int:
        """Torch threads per worker: ``threads``, else this machine's CPU cores // ``jobs`` (at least 1)."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.jobs)


class FinishedHandle:
    """A job whose outcome is already known (or computed on the first ``done()``: inline jobs)."""

    def __init__(self, job_id: str, compute) -> None:
        self.job_id, self._compute, self._outcome = job_id, compute, None

    def done(self) -> bool:
        if self._outcome is None:
            self._outcome = self._compute()
        return True

    def outcome(self) -> dict[str, Any]:
        self.done()
        return self._outcome


class InlineExecutor:
    """Runs each job in this process when the sweep first polls it."""

    kind, capacity = "inline", 1

    def __init__(self, options: ExecutorOptions) -> None:
        self.threads = options.threads

    def submit(self, jobs: list[RunJob]) -> list[FinishedHandle]:
        for job in jobs:
            job.kind, job.threads = self.kind, self.threads
        return [FinishedHandle(str(os.getpid()), job) for job in jobs]

    def close(self) -> None:
        pass


class LocalHandle:
    """A worker process; its outcome file says how the run ended."""

    def __init__(self, process: subprocess.Popen, outcome_path: Path, run_id: str, slot: int) -> None:
        self.process, self.outcome_path, self.run_id, self.slot = process, outcome_path, run_id, slot
        self.job_id = str(process.pid)

    def done(self) -> bool:
        return self.process.poll() is not None

    def outcome(self) -> dict[str, Any]:
        from harness.io import read_json

        code = self.process.wait()
        try:
            return read_json(self.outcome_path)
        except (OSError, ValueError):
            error = f"the worker process (PID {self.job_id}) exited with code {code} without an outcome; see {self.outcome_path.with_suffix('.log')}"
            status = "interrupted" if code < 0 else "failed"
            return JobOutcome(self.run_id, status, error=error).to_dict()


class LocalExecutor:
    """``jobs`` worker processes on this machine, each with its threads and its own GPUs (see the module docstring)."""

    kind = "local"

    def __init__(self, options: ExecutorOptions, work_dir: Path) -> None:
        self.options, self.work_dir = options, Path(work_dir)
        self.capacity = options.jobs
        self.threads = options.threads_per_job()
        self.gpu_slots = gpu_slots(options.jobs, options.gpus_per_run, visible_gpus())
        self.free = list(range(options.jobs))

    def submit(self, jobs: list[RunJob]) -> list[LocalHandle]:
        return [self._start(job) for job in jobs]

    def _start(self, job: RunJob) -> LocalHandle:
        from harness.io import make_dirs, write_json_atomic

        slot = self.free.pop(0)
        job.kind, job.threads = self.kind, self.threads
        run_id = job.run_id
        folder = make_dirs(self.work_dir / "jobs")
        job_path, outcome_path = folder / f"{run_id}.job.json", folder / f"{run_id}.outcome.json"
        outcome_path.unlink(missing_ok=True)
        write_json_atomic(job_path, asdict(job))
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        gpus = self.gpu_slots[slot] if self.gpu_slots else None
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        command = worker_command(len(gpus) if gpus else 1) + [str(job_path), str(outcome_path)]
        with open(outcome_path.with_suffix(".log"), "ab") as log:
            # the worker (or torchrun) gets SIGTERM if this process dies: it checkpoints and stops
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=stop_with_parent)
        return LocalHandle(process, outcome_path, run_id, slot)

    def release(self, handle: LocalHandle) -> None:
        """The handle's slot (its GPUs) is free for the next job."""
        self.free.append(handle.slot)
        self.free.sort()

    def close(self) -> None:
        pass


def worker_command(gpus: int) -> list[str]:
    """The worker's command line: plain Python, or torchrun with one process per GPU."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                "-m", "harness.sweeps.worker"]
    return [sys.executable, "-m", "harness.sweeps.worker"]


def visible_gpus() -> list[int]:
    """The CUDA devices this process may use (indices as the workers will see them), [] without CUDA."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install: run on the CPU
        count = 0
    return list(range(count))


def gpu_slots(jobs: int, gpus_per_run: int, gpus: list[int]) -> list[list[int]] | None:
    """Each worker slot's GPUs: ``gpus_per_run`` each, disjoint; None on a machine with at most one GPU
    and one GPU per run (every worker then sees the machine as it is)."""
    if len(gpus) <= 1 and gpus_per_run == 1:
        return None
    if jobs * gpus_per_run > len(gpus):
        raise ValueError(f"--jobs {jobs} x --gpus-per-run {gpus_per_run} needs {jobs * gpus_per_run} GPUs, "
                         f"this machine has {len(gpus)}; lower --jobs or --gpus-per-run.")
    return [gpus[slot * gpus_per_run:(slot + 1) * gpus_per_run] for slot in range(jobs)]
