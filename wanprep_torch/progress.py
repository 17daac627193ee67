"""One progress report for every front end: a tqdm bar on a terminal, plain lines elsewhere.

Logs and CI captures get no ``\\r`` redraws or escape codes: off a terminal the report is a
line every ``interval`` seconds and one at the end (``wanprep: 40/96 frames (42%), ETA
0:01:10, 0.80 frames/s, 0:00:50 elapsed``). Fed with absolute counts (:meth:`set`, or called
as the Preprocessor's ``progress_callback(stage, done, total)``) or increments
(:meth:`update`); ``callback`` forwards the counts to a host application.

    >>> import io
    >>> log = io.StringIO()
    >>> p = Progress(4, stream=log, interval=0)
    >>> p.update(2); p.set(4); p.close()
    >>> log.getvalue().splitlines()[-1].startswith("wanprep: 4/4 frames (100%)")
    True
"""

from __future__ import annotations

import sys
import time
from typing import Callable

__all__ = ["Progress", "hms"]


def hms(seconds: float) -> str:
    """``H:MM:SS``."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Progress over ``total`` items (None: unknown).

    Args:
        total: the count expected, or None.
        enabled: show anything at all (``callback`` is called either way).
        stream: where to write (default: stderr); a bar only when it is a terminal.
        interval: seconds between plain lines.
        desc, unit: the bar's label and the items' name ("frame", "video").
        callback: ``callback("frames", done, total)`` on every change, for host applications.
    """

    def __init__(self, total: int | None, enabled: bool = True, stream=None, interval: float = 10.0,
                 desc: str = "wanprep", unit: str = "frame", callback: Callable | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.enabled = enabled
        self.interval = interval
        self.unit = unit
        self.callback = callback
        self.done = 0
        self.extra = ""
        self.bar = None
        self.t0 = time.perf_counter()
        self.last = self.t0
        if enabled and (getattr(self.stream, "isatty", lambda: False)() or "ipykernel" in sys.modules):
            try:  # a terminal's bar, or a notebook's widget (tqdm.auto picks)
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    # -- counts --------------------------------------------------------------------------
    def __call__(self, _stage, done, _total=None) -> None:
        """The Preprocessor's ``progress_callback`` signature: ``done`` is absolute."""
        self.set(done)

    def update(self, n: int) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        step = done - self.done
        self.done = done
        if self.callback is not None:
            self.callback("frames", done, self.total)
        if not self.enabled:
            return
        if self.bar is not None:
            if step:
                self.bar.update(step)
            return
        now = time.perf_counter()
        if step and now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def postfix(self, text: str) -> None:
        """Text shown after the counts (e.g. "12.5 frames/s")."""
        self.extra = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def note(self, line: str, log: Callable = print) -> None:
        """A message line: above the bar on a terminal, else through ``log``."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            log(line)

    # -- output --------------------------------------------------------------------------
    def _line(self, now: float) -> None:
        el = now - self.t0
        rate = self.done / el if el > 0 else 0.0
        text = f"wanprep: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit}s ({100 * self.done / self.total:.0f}%)"
            if rate > 0 and self.done < self.total:
                text += f", ETA {hms((self.total - self.done) / rate)}"
        else:
            text += f" {self.unit}s"
        text += f", {self.extra or f'{rate:.2f} {self.unit}s/s'}, {hms(el)} elapsed"
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """End the report (a final plain line off a terminal). Idempotent."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.done:
            self._line(time.perf_counter())
        self.enabled = False
