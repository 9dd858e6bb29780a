"""How far a full scan has got: rate and ETA (pure), and a one-line terminal rendering."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Progress:
    """One stream's full scan.  Times are monotonic seconds; items are upstream records."""

    stream: str
    started_s: float
    start_items: int = 0  # items before a resumed scan's first page: done, not done now
    done: int = 0
    total: int | None = None
    pages: int = 0
    finished: bool = False
    _logged_s: float = field(default=0.0, repr=False)

    def rate(self, now_s: float) -> float:
        elapsed = now_s - self.started_s
        return (self.done - self.start_items) / elapsed if elapsed > 0 else 0.0

    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    def eta_s(self, now_s: float) -> float | None:
        rate = self.rate(now_s)
        if self.total is None or rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def due_for_log(self, now_s: float, every_s: float) -> bool:
        """True at most once per `every_s` (the first call included), for steady log cadence."""
        if self._logged_s and now_s - self._logged_s < every_s:
            return False
        self._logged_s = now_s
        return True


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _count(n: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def render(progresses: Sequence[Progress], now_s: float, width: int = 20) -> str:
    """`v1 [########------]  52% 520.0k/1.0M 18.2k/s ETA 26s | v2 ...` on one line."""
    parts = []
    for p in progresses:
        fraction = 1.0 if p.finished else p.fraction()
        filled = round((fraction or 0.0) * width)
        bar = "#" * filled + "-" * (width - filled)
        percent = f"{fraction * 100:3.0f}%" if fraction is not None else "  ?%"
        total = _count(p.total) if p.total is not None else "?"
        eta = "done" if p.finished else f"ETA {_duration(p.eta_s(now_s))}"
        parts.append(
            f"{p.stream} [{bar}] {percent} {_count(p.done)}/{total} {_count(p.rate(now_s))}/s {eta}"
        )
    return " | ".join(parts)


class StatusLine(Protocol):
    """A terminal's one redrawn line (`syncd.logs.TerminalSink`)."""

    def show_status(self, line: str) -> None: ...

    def end_status(self) -> None: ...


class ProgressLine:
    """A progress bar per stream on the terminal's status line, redrawn a few times a second."""

    def __init__(self, out: StatusLine) -> None:
        self.out = out
        self.progress: dict[str, Progress] = {}
        self.drawn_s = 0.0

    def update(self, progress: Progress) -> None:
        self.progress[progress.stream] = progress
        now_s = time.monotonic()
        if now_s - self.drawn_s >= 0.2 or progress.finished:
            self.drawn_s = now_s
            self.out.show_status(
                render(sorted(self.progress.values(), key=lambda p: p.stream), now_s)
            )

    def close(self) -> None:
        self.out.end_status()
