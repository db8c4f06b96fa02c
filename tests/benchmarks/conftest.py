"""Shared by the benchmark suites."""

from __future__ import annotations

import pytest

from harness.threads import torch_threads


@pytest.fixture(autouse=True)
def one_thread_when_not_timing(request):
    """As plain tests (--benchmark-disable) run on one thread: fast and immune to other
    processes' load (two OpenMP threads on a busy 2-core CPU can be 10x slower). Timed runs
    (--benchmark-enable) keep torch's default thread count."""
    config = request.config
    if not config.getoption("benchmark_disable", default=False) or config.getoption("benchmark_enable", default=False):
        yield
        return
    with torch_threads(1):
        yield
