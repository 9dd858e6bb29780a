"""Handing the free heap back: RSS falls after a burst is freed (glibc), a no-op elsewhere."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys

import pytest
from structlog.testing import capture_logs

from syncd import memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


@glibc_only
def test_trim_returns_the_freed_heap_of_a_burst() -> None:
    """After 100 MB of small blocks are freed (a few kept), the trim gives most of it back."""
    burst = [bytes(1000) for _ in range(100_000)]
    kept = burst[::50]  # live blocks scattered through the heap, as after a full scan
    del burst
    with capture_logs() as logs:
        assert memory.release_free_heap("test") is True
    [event] = [e for e in logs if e["event"] == "heap_trimmed"]
    assert event["rss_before_mb"] - event["rss_after_mb"] > 50
    assert len(kept) == 2_000


def test_trim_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where malloc_trim does not exist nothing is called and nothing is logged."""
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    with capture_logs() as logs:
        assert memory.release_free_heap("test") is False
    assert logs == []


@glibc_only
@pytest.mark.parametrize(
    ("env", "held"),
    [({}, True), ({"MALLOC_MMAP_THRESHOLD_": "262144"}, False)],
    ids=["untuned", "tuned-by-environment"],
)
def test_malloc_thresholds_held_unless_the_environment_tunes_them(
    env: dict[str, str], held: bool
) -> None:
    """Outside the image syncd fixes glibc's thresholds itself; an operator's own
    MALLOC_*_ variables win."""
    code = "from syncd.memory import hold_malloc_thresholds as h; print(h())"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, timeout=60
    )
    assert out.stdout.decode().strip() == str(held)


def test_cycles_are_still_collected_at_the_raised_thresholds() -> None:
    """During a full scan the young generation is collected less often, yet reference
    cycles (what only the collector frees) are still freed as they pile up, with no
    explicit gc.collect(); after it CPython's thresholds are back."""
    code = """
import gc, weakref
from syncd.memory import GC_THRESHOLDS, during_full_scan
before = gc.get_threshold()
class Node:
    pass
freed = 0
def count():
    global freed
    freed += 1
made = 400_000
with during_full_scan():
    assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()
    for _ in range(made):
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: reference counting never frees it
        weakref.finalize(a, count)
    print(freed, made)
assert gc.get_threshold() == before, (gc.get_threshold(), before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    freed, made = map(int, out.stdout.split())
    # All but the last young generation's worth (at most 50,000 objects) were freed.
    assert freed >= made - memory.GC_THRESHOLDS[0], (freed, made)


def test_overlapping_full_scans_restore_the_thresholds_when_the_last_ends() -> None:
    """Both streams' scans overlap: the first to end leaves the raised thresholds to
    the other; the last restores what was set before (even one an operator set)."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(900, 11, 12)
        first, second = memory.during_full_scan(), memory.during_full_scan()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert gc.get_threshold() == memory.GC_THRESHOLDS
        second.__exit__(None, None, None)
        assert gc.get_threshold() == (900, 11, 12)
        with pytest.raises(RuntimeError), memory.during_full_scan():
            raise RuntimeError("a scan that fails")
        assert gc.get_threshold() == (900, 11, 12)
    finally:
        gc.set_threshold(*before)
