"""What the fuzz tests share: hypothesis settings and a bound on each call.

``fuzz_settings(n)`` runs ``n`` examples with no deadline and no example database (no
saved examples in the work tree: every run starts afresh); ``bounded(seconds)`` fails a
call that runs too long (SIGALRM), and ends the process with every thread's traceback
if even that cannot get through (faulthandler).
"""

from __future__ import annotations

import faulthandler
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings

#: Seconds one registry call may take before it counts as hung.
CALL_TIMEOUT = 60


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for ``examples`` mutated inputs."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Hung(AssertionError):
    """A call outlived its bound."""


@contextmanager
def bounded(seconds: float = CALL_TIMEOUT) -> Iterator[None]:
    """Fail with Hung if the block runs longer than ``seconds`` (SIGALRM: it interrupts
    Python loops and blocking system calls alike, and the test fails with a traceback);
    should the alarm never get through (a loop in C holding the GIL), faulthandler ends
    the process after twice that, printing every thread's traceback."""

    def hung(signum: int, frame: Any) -> None:
        raise Hung(f"a call ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(2 * seconds, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
