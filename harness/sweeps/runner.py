"""The sweep runner: hand every planned run to an executor, collect outcomes, retry failures.

``run_sweep(plan, options, executor, results_dir)`` keeps up to ``executor.capacity`` jobs
outstanding, in the plan's order (seed → budget → variant → architecture). Each run's state
(``harness.sweeps.state``: planned → queued/running → ok/failed/interrupted, with executor, job id,
host and attempts) goes to ``on_update`` whenever it changes, so ``runs.json`` is current after
every run. A failed attempt is submitted again up to ``retries`` times, then the run is
``failed`` with its error. An interrupted run (Ctrl-C, a killed worker) stops new submissions;
the jobs already running finish, and the same command resumes the sweep. A run the sweep's
previous driver left queued or running — its worker still alive, holding the run's lock, or its
Slurm job still queued — is waited for instead of being started twice. With ``committed`` (a report's
``data/runs`` folder, ``harness.runs.compact``), a run absent from ``results/`` whose committed compact copy
says ``ok`` is done: it is counted as reused and not trained again, so a study whose data were committed as
its runs landed resumes on another machine by training only what is missing.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.sweeps.job import JobOutcome, RunJob
from harness.sweeps.state import RunState, initial_states, now

POLL_S = 0.5


@dataclass
class SweepOutcome:
    run_ids: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: str | None = None
    states: dict[str, RunState] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every run has a final outcome (ok or failed) and none was interrupted."""
        return self.interrupted is None and all(s.state in ("ok", "failed") for s in self.states.values())


class LockWatch:
    """A run another live process holds (a previous driver's worker): done when its lock is released."""

    def __init__(self, run_dir: Path, job_id: str | None) -> None:
        self.run_dir, self.job_id = run_dir, job_id or "?"

    def done(self) -> bool:
        from harness.runs.lock import is_held

        return not is_held(self.run_dir)

    def outcome(self) -> dict[str, Any]:
        from harness.runs.records import load_record

        try:
            record = load_record(self.run_dir)
        except (OSError, ValueError) as error:
            return JobOutcome(self.run_dir.name, "failed", error=str(error)).to_dict()
        status = record.get("status")
        status = status if status in ("ok", "failed") else "interrupted"
        return JobOutcome(self.run_dir.name, status, error=record.get("error"), launcher=record.get("launcher") or {},
                          final_val_loss=record.get("final_val_loss")).to_dict()


def run_sweep(plan, options, executor, results_dir: str | Path, *, retries: int = 1,
              previous: dict[str, dict] | None = None, on_update: Callable[[SweepOutcome], None] | None = None,
              log: Callable[[str], None] | None = None, progress: bool | None = None,
              committed: Path | None = None) -> SweepOutcome:
    """Run every spec of ``plan`` (``SweepPlan``) on ``executor``; ``options``: the ``SweepOptions``.

    ``previous``: the ``runs`` states of this sweep's last ``runs.json`` (to find jobs still running);
    ``committed``: a report's ``data/runs`` folder whose finished compact copies count as done.
    """
    check_retries(retries)
    from tqdm.auto import tqdm

    root = Path(results_dir).resolve()
    outcome = SweepOutcome(run_ids=plan.run_ids, states=initial_states(plan.specs))
    order = {run_id: index for index, run_id in enumerate(outcome.run_ids, 1)}
    pending, active = deque(plan.specs), {}
    bar = tqdm(total=len(plan.specs), unit="run", disable=(progress is False) or None, dynamic_ncols=True)
    say = log or (lambda message: bar.write(message, file=sys.stderr))
    update = on_update or (lambda _: None)
    if committed is not None and not options.force:
        pending = _skip_committed(pending, Path(committed), root, outcome, say, order, bar)
        if len(pending) < len(plan.specs):
            update(outcome)
    stopping = False
    try:
        while active or (pending and not stopping):
            if not stopping and _submit(pending, active, executor, options, root, outcome, previous or {}):
                update(outcome)
            finished = [handle for handle in active if handle.done()]
            if not finished:
                try:
                    time.sleep(POLL_S)
                except KeyboardInterrupt:
                    if stopping:
                        raise
                    stopping = True
                    say("interrupted: waiting for the running jobs to save their checkpoints (Ctrl-C again to leave them)")
                continue
            for handle in finished:
                spec = active.pop(handle)
                if hasattr(executor, "release") and not isinstance(handle, LockWatch):
                    executor.release(handle)
                result = handle.outcome()
                retry = _settle(outcome, spec, result, retries, say, order)
                if retry:
                    pending.appendleft(spec)
                elif result["status"] == "interrupted":
                    stopping = True
                else:
                    bar.update(1)
            update(outcome)
    finally:
        bar.close()
        executor.close()
    return outcome


def committed_ok(committed: Path, results_root: Path, run_id: str) -> dict | None:
    """The committed compact record of ``run_id`` when it is finished ``ok`` and ``results/`` has no
    folder for the run (a run present there is reused or resumed the ordinary way); else None."""
    from harness.io import read_json
    from harness.runs.records import RECORD_NAME

    if (results_root / run_id).exists():
        return None
    try:
        record = read_json(committed / run_id / RECORD_NAME)
    except (OSError, ValueError):
        return None
    return record if record.get("status") == "ok" else None


def _skip_committed(pending: deque, committed: Path, root: Path, outcome: SweepOutcome, say, order: dict, bar) -> deque:
    """``pending`` without the runs whose committed data say ``ok``; those are settled as reused."""
    left: deque = deque()
    for spec in pending:
        record = committed_ok(committed, root, spec.run_id())
        if record is None:
            left.append(spec)
            continue
        result = {"status": "ok", "reused": True, "committed": True, "final_val_loss": record.get("final_val_loss")}
        _settle(outcome, spec, result, 0, say, order)
        bar.update(1)
    return left


def check_retries(retries: int) -> int:
    """``retries`` if it is a whole number ≥ 0, else one ``ValueError``."""
    if isinstance(retries, bool) or not (isinstance(retries, int) and retries >= 0):
        raise ValueError(f"--retries must be a whole number ≥ 0, got {retries!r}.")
    return retries


def _submit(pending: deque, active: dict, executor, options, root: Path, outcome: SweepOutcome, previous: dict) -> bool:
    """Fill the executor up to its capacity (a run a live previous job holds is watched, not resubmitted);
    True when a run's state changed."""
    batch, watched_any = [], False
    while pending and len(active) + len(batch) < executor.capacity:
        spec = pending.popleft()
        run_id = spec.run_id()
        watched = _still_running(previous.get(run_id), executor, root / run_id, run_id)
        if watched is not None:
            active[watched] = spec
            outcome.states[run_id].mark("running", executor=previous[run_id].get("executor"), job_id=watched.job_id)
            watched_any = True
            continue
        batch.append((spec, RunJob(spec.to_dict(), options.evaluation, str(root), force=options.force, wait=options.wait)))
    if not batch:
        return watched_any
    handles = executor.submit([job for _, job in batch])
    for (spec, _), handle in zip(batch, handles):
        active[handle] = spec
        state = outcome.states[spec.run_id()]
        state.attempts += 1
        state.mark("running" if executor.kind in ("inline", "local") else "queued", executor=executor.kind,
                   job_id=handle.job_id, started=now(), error=None)
    return True


def _still_running(entry: dict | None, executor, run_dir: Path, run_id: str):
    """A handle on the previous driver's job for this run if it is still alive, else None."""
    if not entry or entry.get("state") not in ("queued", "running"):
        return None
    from harness.runs.lock import is_held

    if is_held(run_dir):
        return LockWatch(run_dir, entry.get("job_id"))
    if entry.get("executor") == executor.kind and entry.get("job_id") and hasattr(executor, "attach"):
        return executor.attach(entry["job_id"], run_id)
    return None


def _settle(outcome: SweepOutcome, spec, result: dict, retries: int, say, order: dict) -> bool:
    """Record one finished attempt; True when the run should be tried again."""
    run_id = spec.run_id()
    state = outcome.states[run_id]
    launcher = result.get("launcher") or {}
    state.mark(result["status"], ended=now(), host=launcher.get("host"), job_id=launcher.get("job_id") or state.job_id,
               error=result.get("error"), reused=bool(result.get("reused")))
    what = f"[{order[run_id]}/{len(order)}] {_describe(spec)}"
    where = f" ({state.executor} job {state.job_id})" if state.executor else ""
    if result["status"] == "failed":
        if state.attempts <= retries:
            state.mark("queued")
            say(f"{what}: FAILED{where} ({result.get('error')}); retrying (attempt {state.attempts + 1} of {retries + 1})")
            return True
        outcome.failed[run_id] = str(result.get("error"))
        say(f"{what}: FAILED{where} after {state.attempts} attempt(s): {result.get('error')}")
        return False
    if result["status"] == "interrupted":
        outcome.interrupted = run_id
        say(f"{what}: interrupted{where}; checkpoint kept, run the same command again to resume the sweep")
        return False
    (outcome.reused if result.get("reused") else outcome.trained).append(run_id)
    if result.get("evaluated"):
        outcome.evaluated.append(run_id)
    if result.get("evaluation_error"):
        outcome.failed[run_id] = f"evaluation failed: {result['evaluation_error']}"
        state.error = outcome.failed[run_id]
        say(f"{what}: evaluation failed ({result['evaluation_error']}); the trained run is kept")
    loss = result.get("final_val_loss")
    verb = "reused (committed data)" if result.get("committed") else "reused" if result.get("reused") else "trained"
    say(f"{what}: {verb} {run_id}"
        f"{f', val loss {loss:.4f} nats/token' if isinstance(loss, (int, float)) else ''}{where}")
    return False


def _describe(spec) -> str:
    """``gpt2 nano d_model=64 seed 1`` (for progress lines)."""
    overrides = ",".join(f"{k}={v}" for k, v in sorted(spec.overrides.items()))
    return f"{spec.arch} {spec.size}{' ' + overrides if overrides else ''} seed {spec.seed}"
