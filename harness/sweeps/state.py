"""Each run's state within a sweep, as ``runs.json`` keeps it under ``runs`` (one entry per run id).

``state``: ``planned`` (not yet handed to an executor), ``queued`` (submitted, not started),
``running``, ``ok``, ``failed`` (after every retry; ``error`` says why) or ``interrupted``
(resumable from its checkpoint). ``executor``, ``job_id`` and ``host``: where the last attempt
ran; ``attempts``: how many were made by this sweep; ``started`` / ``ended``: UTC times of the
last attempt; ``reused``: the run was already finished (trained earlier, by any executor).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any

STATES = ("planned", "queued", "running", "ok", "failed", "interrupted")


def now() -> str:
    """The current UTC time, ``2026-12-02T03:04:05Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class RunState:
    arch: str
    size: str
    seed: int
    budget_flops: float
    state: str = "planned"
    executor: str | None = None
    job_id: str | None = None
    host: str | None = None
    attempts: int = 0
    error: str | None = None
    started: str | None = None
    ended: str | None = None
    reused: bool = False

    def mark(self, state: str, **changes: Any) -> None:
        """Move to ``state``, setting the given fields (a None value clears ``error`` only)."""
        if state not in STATES:
            raise ValueError(f"a run's state must be one of {', '.join(STATES)}, got {state!r}.")
        self.state = state
        for key, value in changes.items():
            if value is not None or key == "error":
                setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def initial_states(specs) -> dict[str, RunState]:
    """Every run of a plan, ``planned``, by run id (in training order)."""
    return {spec.run_id(): RunState(spec.arch, spec.size, spec.seed, float(spec.budget_flops)) for spec in specs}


def states_payload(states: dict[str, RunState]) -> dict[str, dict[str, Any]]:
    """The ``runs`` entry of ``runs.json``."""
    return {run_id: state.to_dict() for run_id, state in states.items()}
