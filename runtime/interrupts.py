"""Signals for the command-line tools: SIGTERM handled like Ctrl-C, signals held over a write.

The trainer and the exporter share these (they import runtime, never the reverse). Both are
no-ops off the main thread, where Python cannot install signal handlers.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a service stop, a CI timeout) raises KeyboardInterrupt like Ctrl-C, so
    the caller saves or cleans up and exits 130 instead of dying with nothing written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """SIGINT and SIGTERM during the block are noted, not acted on, so a write finishes whole;
    yields the list of those caught. An ignored signal stays ignored.

    Python-level handlers, not a signal mask: the mask is per thread, and onnxruntime's or
    BLAS's threads would still take the signal.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda number, frame: caught.append(number))
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
