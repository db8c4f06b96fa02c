"""How busy the machine was: load averages recorded with each run, so throughput can be trusted or discounted.

A run's tokens/s measures the machine as much as the model. Each record keeps
``machine_load`` = {"start": ..., "end": ...}, each with the 1/5/15-minute load averages
(runnable processes, as ``os.getloadavg``), the CPU count and the torch threads the run
used. ``is_contended`` calls a run contended when the 5-minute load at its end exceeds the
cores by more than half a core: other jobs then shared the CPU and its throughput is a
lower bound. Losses are unaffected (the FLOP budget, not the clock, ends a run).
``describe_machine`` names the hardware and software a timing was measured on.
"""

from __future__ import annotations

import os
import platform
from typing import Any

CONTENDED_MARGIN = 0.5  # runnable processes above the core count that mark a run as contended


def machine_load() -> dict[str, Any]:
    """Load averages now, the CPU count and this process's torch threads (None where unknown)."""
    import torch

    try:
        one, five, fifteen = os.getloadavg()
    except (OSError, AttributeError):  # not available on this platform
        one = five = fifteen = None
    return {
        "loadavg_1m": one,
        "loadavg_5m": five,
        "loadavg_15m": fifteen,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def is_contended(load: dict[str, Any] | None) -> bool | None:
    """True when the 5-minute load exceeded the cores by more than ``CONTENDED_MARGIN``; None if unknown."""
    if not load or load.get("loadavg_5m") is None or not load.get("cpu_count"):
        return None
    return load["loadavg_5m"] > load["cpu_count"] + CONTENDED_MARGIN


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """The machine a timing belongs to: device name (CPU model and threads, or the GPU), cores, OS, Python, torch."""
    import torch

    from harness.device import device_name

    return {
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
    }
