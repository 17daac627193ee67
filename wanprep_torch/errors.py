"""Exit statuses of the `wanprep` commands and the one error type the run reports them with.

One home for the numbers: the command line returns them, ``batch`` records them, the README's
table lists them.
"""

from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_BUG", "EXIT_USER", "EXIT_INCOMPLETE", "EXIT_WRITE", "EXIT_INTERRUPTED", "RunError", "one_line"]

EXIT_OK = 0  # every frame processed
EXIT_BUG = 1  # an unexpected internal error (the traceback is printed)
EXIT_USER = 2  # a user error: bad options, inputs, models, a busy or finished --out
EXIT_INCOMPLETE = 3  # truncated or corrupt input: the frames decoded are kept, gaps filled and flagged
EXIT_WRITE = 74  # an output could not be written (disk full, permissions): sysexits' EX_IOERR
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class RunError(Exception):
    """A problem the user can act on: printed as one line, the command exits with ``status``.

    ``status`` is :data:`EXIT_USER` unless said otherwise (:data:`EXIT_WRITE` for write errors).
    """

    def __init__(self, message: str, status: int = EXIT_USER):
        super().__init__(" ".join(str(message).split()))
        self.status = status

    @classmethod
    def write_failed(cls, path, exc: OSError) -> "RunError":
        """A write error (disk full, read-only, permissions) naming the path, :data:`EXIT_WRITE`."""
        reason = exc.strerror or one_line(exc)
        return cls(f"cannot write {path}: {reason}; the folder keeps its last consistent state", EXIT_WRITE)
