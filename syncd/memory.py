"""Memory: freed heap handed back to the OS after a full scan (glibc only), and the
cycle collector's thresholds.

A full scan allocates and frees tens of MB of pages and rows.  glibc keeps
what was freed inside its heap for reuse, so the process's RSS stays at the
scan's peak; `malloc_trim(0)` returns the free pages (also those between live
blocks, with MADV_DONTNEED).  It walks the heap once, a few ms, so it runs
after each full scan, not every cycle.  Elsewhere (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import platform
import time
from collections.abc import Callable, Iterator

import structlog

log = structlog.get_logger("syncd.memory")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # the libc already loaded
    except (OSError, AttributeError):
        return None
    return trim


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_heap(reason: str) -> bool:
    """Give the free glibc heap back to the OS; False where that cannot be done."""
    trim = _malloc_trim()
    if trim is None:
        return False
    before, started = _rss_bytes(), time.perf_counter()
    trim(0)
    took_ms = (time.perf_counter() - started) * 1000
    after = _rss_bytes()
    log.info(
        "heap_trimmed",
        reason=reason,
        took_ms=round(took_ms, 1),
        rss_before_mb=None if before is None else round(before / 1e6, 1),
        rss_after_mb=None if after is None else round(after / 1e6, 1),
    )
    return True


# mallopt parameters (malloc.h) and the values the container image sets through
# MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_: glibc's own defaults, held fixed.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
FIXED_THRESHOLD_BYTES = 131_072


def hold_malloc_thresholds() -> bool:
    """Stop glibc raising its mmap threshold after a big free (what leaves holes in the
    heap and RSS creeping up for days), unless the environment already tunes it.

    The same as the image's environment variables, for installs without the image.
    """
    if platform.libc_ver()[0] != "glibc" or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    try:
        mallopt: Callable[[int, int], int] = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, FIXED_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, FIXED_THRESHOLD_BYTES)
    )


# CPython collects its youngest generation after every 700 net allocations of
# container objects.  A backfill allocates a dict per item and a tuple per row,
# nearly all freed by reference counting moments later, and still paid ~680 young
# and ~60 middle collections per 200,000 runs: 2.4 s of syncd's 18.3 s of CPU,
# measured.  During a full scan the young generation waits for 50,000; between
# scans CPython's own thresholds hold, so the daemon's steady cycles, which
# allocate little, still free their reference cycles promptly (with 50,000 all the
# time, a soak's RSS grew 3 MB per 1,000 cycles).
GC_THRESHOLDS = (50_000, 10, 10)


class _FullScans:
    """How many full scans run now (both streams' may overlap) and the thresholds
    to restore when the last one ends."""

    def __init__(self) -> None:
        self.running = 0
        self.saved = gc.get_threshold()

    @contextlib.contextmanager
    def collecting_less_often(self) -> Iterator[None]:
        if self.running == 0:
            self.saved = gc.get_threshold()
            gc.set_threshold(*GC_THRESHOLDS)
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self.running == 0:
                gc.set_threshold(*self.saved)


_full_scans = _FullScans()
during_full_scan = _full_scans.collecting_less_often
"""The block runs with the collector's young generation at GC_THRESHOLDS (nested
and overlapping blocks share it; the last one out restores the thresholds)."""
