"""Progress display: a bar with ETA on a terminal, plain periodic log lines otherwise.

``Progress(total, initial)`` is updated after each step with ``update(step, metrics)``.
On a TTY (``stream.isatty()``, stderr by default) it redraws one line at most every
``min_interval`` seconds::

    step  120/1000 [###.......]  12% 0.52 s/step ETA 7m40s g_loss 1.234 d_loss 0.500

Otherwise (a log file, a batch job) it prints a plain line every ``every`` steps and at the
last step::

    step 120/1000 (12.0%) 0.52 s/step ETA 7m40s g_loss=1.234 d_loss=0.500

The speed is measured from the steps run in this process (a resumed run does not count the
restored steps as fast).
"""

import sys
import time
from typing import Mapping, Optional


def format_duration(seconds: float) -> str:
    """``"1h02m"``, ``"7m40s"``, ``"12s"``; ``"?"`` if unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _fmt(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


class Progress:
    """Progress bar (TTY) or periodic plain lines (not a TTY).

    Args:
        total: total number of steps of the run.
        initial: the step the run starts from (restored step on resume).
        every: plain-line interval in steps when not a TTY.
        stream: where to write (default ``sys.stderr``).
        tty: force the mode (default ``stream.isatty()``).
        width: bar width in characters.
        min_interval: minimum seconds between redraws on a TTY.
        clock: time function (tests).
    """

    def __init__(self, total: int, initial: int = 0, every: int = 50, stream=None,
                 tty: Optional[bool] = None, width: int = 20, min_interval: float = 0.2,
                 clock=time.monotonic):
        self.total = int(total)
        self.initial = int(initial)
        self.every = max(1, int(every))
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(self.stream.isatty()) if tty is None else bool(tty)
        self.width = int(width)
        self.min_interval = float(min_interval)
        self.clock = clock
        self._t0 = clock()
        self._last_draw = -1e30
        self._drawn = False
        self.step = self.initial

    def seconds_per_step(self) -> Optional[float]:
        done = self.step - self.initial
        if done <= 0:
            return None
        return (self.clock() - self._t0) / done

    def eta(self) -> Optional[float]:
        sps = self.seconds_per_step()
        return None if sps is None else sps * max(0, self.total - self.step)

    def line(self, metrics: Optional[Mapping[str, object]] = None) -> str:
        """The text for the current state (plain form unless drawing on a TTY)."""
        sps = self.seconds_per_step()
        speed = "? s/step" if sps is None else f"{sps:.3g} s/step"
        frac = self.step / self.total if self.total > 0 else 0.0
        metrics = metrics or {}
        if self.tty:
            filled = int(round(self.width * min(1.0, frac)))
            bar = "#" * filled + "." * (self.width - filled)
            m = " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
            n = len(str(self.total))
            return (f"step {self.step:>{n}}/{self.total} [{bar}] {100 * frac:3.0f}% {speed} "
                    f"ETA {format_duration(self.eta())} {m}").rstrip()
        m = " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        return (f"step {self.step}/{self.total} ({100 * frac:.1f}%) {speed} "
                f"ETA {format_duration(self.eta())} {m}").rstrip()

    def update(self, step: int, metrics: Optional[Mapping[str, object]] = None, force: bool = False):
        """Records that ``step`` steps are done; draws or prints when due."""
        self.step = int(step)
        last = self.step >= self.total
        if self.tty:
            now = self.clock()
            if force or last or now - self._last_draw >= self.min_interval:
                self._last_draw = now
                self.stream.write("\r\x1b[2K" + self.line(metrics))
                self.stream.flush()
                self._drawn = True
        elif force or last or self.step % self.every == 0:
            self.stream.write(self.line(metrics) + "\n")
            self.stream.flush()

    def write(self, message: str):
        """Prints a message without breaking the bar."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[2K")
        self.stream.write(message.rstrip("\n") + "\n")
        self.stream.flush()
        self._drawn = False

    def close(self):
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
