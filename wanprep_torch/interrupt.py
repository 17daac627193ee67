"""Stopping a run promptly: a stop flag set by signals, checked before every model batch.

The run loop cannot be interrupted safely at an arbitrary byte (a KeyboardInterrupt in the
middle of an encoder or a JSON write leaves broken files), so the first SIGINT/SIGTERM only sets
a flag. :func:`checkpoint` raises :class:`StopRequested` where stopping is safe: the model
runner calls it before each batch (``runtime.OrtModel.run``), so a run stops within one model
batch, not one chunk. A second signal raises KeyboardInterrupt at once (abort).

    >>> stop = StopFlag()
    >>> with stop.watch():
    ...     checkpoint()          # nothing requested: returns
    ...     stop.request("SIGINT")
    ...     try:
    ...         checkpoint()
    ...     except StopRequested as exc:
    ...         print(exc.reason)
    SIGINT
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

__all__ = ["StopRequested", "StopFlag", "SignalStop", "checkpoint"]


class StopRequested(Exception):
    """Raised by :func:`checkpoint` once a stop was requested; ``reason`` names the signal."""

    def __init__(self, reason: str):
        super().__init__(f"stopped ({reason})")
        self.reason = reason
        self.finished: list = []  # work already final when it was raised (a host keeps it)


_local = threading.local()


def checkpoint() -> None:
    """Raise StopRequested when the stop flag watched by this thread is set; else return."""
    flag = getattr(_local, "flag", None)
    if flag is not None and flag.requested is not None:
        raise StopRequested(flag.requested)


class StopFlag:
    """A stop request (``requested``: its reason, or None) that :func:`checkpoint` sees while
    :meth:`watch` is active in the running thread."""

    def __init__(self):
        self.requested: str | None = None

    def request(self, reason: str = "stop") -> None:
        if self.requested is None:
            self.requested = reason

    @contextlib.contextmanager
    def watch(self):
        previous = getattr(_local, "flag", None)
        _local.flag = self
        try:
            yield self
        finally:
            _local.flag = previous


class SignalStop(StopFlag):
    """The first SIGINT/SIGTERM sets the flag (and says so on stderr); a second raises
    KeyboardInterrupt (abort at once). :meth:`install` only in the main thread (elsewhere the
    handlers cannot be set; the flag still works)."""

    def __init__(self, stream=None, what: str = "stopping at the next model batch"):
        super().__init__()
        self.stream = stream
        self.what = what
        self._previous: dict = {}

    def _handle(self, signum, _frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.request(signal.Signals(signum).name)
        print(f"wanprep: {self.requested}: {self.what} (again to abort at once)", file=self.stream or sys.stderr, flush=True)

    def install(self) -> "SignalStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
