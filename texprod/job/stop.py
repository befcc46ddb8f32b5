"""Stopping a job at a safe point when SIGTERM or SIGINT arrives.

Python runs a signal handler between bytecodes wherever the main thread is, often inside
a libvips callback, where an exception is swallowed ("Exception ignored from cffi
callback") and the job ran on and exited 0. So the handler only notes the signal, and the
job checks for it at safe points of its own (after each tile, each exported band, each
stage): there it raises `JobInterrupted`, the job removes what it wrote, and the command
exits 128 + the signal number.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from texprod.errors import JobFailure

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_pending: list[int] = []  # signals noted and not yet acted on


class JobInterrupted(JobFailure):
    """The job was asked to stop (SIGTERM, SIGINT) and stopped at a safe point."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at a safe point; nothing "
                         "of the job's output was left behind")
        self.exit_code = 128 + signum


def _note(signum: int, frame) -> None:
    _pending.append(signum)


def check() -> None:
    """Raise JobInterrupted if a stop signal arrived since `stop_on_signals` began."""
    if _pending:
        raise JobInterrupted(_pending[0])


def pending() -> int | None:
    return _pending[0] if _pending else None


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Note SIGTERM and SIGINT instead of acting on them at once (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _note) for s in SIGNALS}
    _pending.clear()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending.clear()  # acted on: a later job in this process starts afresh
