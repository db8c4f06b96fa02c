"""``torch_threads(n)``: run a block (or a function, as a decorator) with ``n`` torch intra-op threads."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads, restoring the previous count after.

    One thread makes small CPU work fast and immune to other processes' load: on a shared
    2-core machine OpenMP's spinning barriers made two-thread steps up to 15x slower.
    Usable as a decorator (``@torch_threads(1)``).
    """
    import torch

    if not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"the torch thread count must be a positive whole number, got {threads!r}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
