"""Thread policy: how many threads BLAS (and the fast Adam) use for a training run.

`thread_limits(threads, n_inputs, n_hidden, batch)` is a context manager that sets NumPy's
BLAS thread count through threadpoolctl for the duration of a run and restores it after;
it yields the count in force. threads is a positive integer, or "auto": small products run
single-threaded (waking a second BLAS thread costs more than it saves), large ones use every
core the process may run on.
"""
from __future__ import annotations

import contextlib
import os

from ..errors import ConfigError

AUTO_MIN_FLOPS = 2e7
"""Below this many flops per matrix product of the step (2 * batch * n_inputs * n_hidden),
"auto" runs BLAS single-threaded."""


def available_cores():
    """The cores this process may run on (its CPU affinity), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_threads(threads):
    """"auto", None (auto) or a positive integer (also as a string, from the command line)."""
    if threads is None or threads == "auto":
        return "auto"
    if isinstance(threads, str) and threads.strip().isdigit():
        threads = int(threads)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer or 'auto', got {threads!r}")
    return threads


def choose_threads(threads, n_inputs, n_hidden, batch):
    """The BLAS thread count for a step of this size: `threads` itself when it is a number,
    else the auto policy."""
    threads = parse_threads(threads)
    if threads != "auto":
        return threads
    flops = 2.0 * batch * n_inputs * n_hidden
    return 1 if flops < AUTO_MIN_FLOPS else available_cores()


@contextlib.contextmanager
def thread_limits(threads, n_inputs, n_hidden, batch):
    """Limit NumPy's BLAS to the chosen thread count inside the block; yields that count."""
    n = choose_threads(threads, n_inputs, n_hidden, batch)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=n, user_api="blas"):
        yield n
