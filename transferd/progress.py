"""A small dependency-free terminal progress bar for one-shot commands (bytes done / total, rate, ETA).

    with Progress(total_bytes, "upload") as bar:
        bar.advance(n)

Drawn on stderr, redrawn at most ~10 times a second, and silent when stderr is not a terminal or when
`enabled=False` (`--no-progress`). The rate is measured over the last few seconds, so it follows changes.
Safe to call from several threads.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import deque
from typing import TextIO

from transferd.units import format_size

REDRAW_INTERVAL = 0.1
RATE_WINDOW = 5.0  # seconds of history behind the displayed rate


def human_duration(seconds: float) -> str:
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(
        self,
        total_bytes: int,
        label: str = "",
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _isatty(self.stream)
        self.enabled = enabled
        self.total = max(0, total_bytes)
        self.label = label
        self.done = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._history: deque[tuple[float, int]] = deque([(self._started, 0)])
        self._closed = False
        self._drawn = False

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            if not self.enabled or self._closed:
                return
            now = time.monotonic()
            if now - self._last_draw >= REDRAW_INTERVAL:
                self._draw(now)

    def set_total(self, total_bytes: int) -> None:
        with self._lock:
            self.total = max(0, total_bytes)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.enabled:
                self._draw(time.monotonic(), final=True)
                self.stream.write("\n")
                self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rendering -----------------------------------------------------------------------------------------
    def rate(self, now: float | None = None) -> float:
        """Bytes per second over the recent window (overall when the window is young)."""
        now = time.monotonic() if now is None else now
        while len(self._history) > 1 and now - self._history[0][0] > RATE_WINDOW:
            self._history.popleft()
        t0, d0 = self._history[0]
        return (self.done - d0) / (now - t0) if now > t0 else 0.0

    def render(self, now: float, width: int, final: bool = False) -> str:
        rate = self.rate(now) if not final else self.done / max(now - self._started, 1e-9)
        frac = min(1.0, self.done / self.total) if self.total else (1.0 if final else 0.0)
        left = max(0, self.total - self.done)
        if final:
            tail = f"in {human_duration(now - self._started)}"
        else:
            tail = f"ETA {human_duration(left / rate)}" if rate > 0 and left else "ETA --:--"
        text = f"{format_size(self.done)} / {format_size(self.total)}  {format_size(rate)}/s  {tail}"
        head = f"{self.label} " if self.label else ""
        pct = f"{frac * 100:3.0f}% "
        bar_width = width - len(head) - len(pct) - len(text) - 4
        if bar_width >= 10:
            filled = int(frac * bar_width)
            bar = "[" + "#" * filled + "." * (bar_width - filled) + "] "
        else:
            bar = ""
        return (head + pct + bar + text)[: max(width - 1, 1)]

    def _draw(self, now: float, final: bool = False) -> None:
        self._history.append((now, self.done))
        width = shutil.get_terminal_size((80, 20)).columns
        line = self.render(now, width, final)
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._last_draw = now
        self._drawn = True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
