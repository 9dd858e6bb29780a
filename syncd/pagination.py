"""Pure paging rules of the run-list endpoints: the end rule and v2's `offset` reading.

Callers speak of 0-based page numbers only; an endpoint's `page_params`
(endpoints.py) turns one into that endpoint's parameters (v1's 1-based
`page_index`, v2's `offset` under the reading in force, `v2_offset` here), so
a checkpoint means the same thing on either stream and under any reading of
`offset`.  What v2's `offset` means is detected from data (`detect_reading`)
and held by an `OffsetReading`, which never settles an answer the data could
not decide.

End rule (SPEC: `count` is not promised exact or stable, pages may be short
before the end):
  * an empty page ends the walk;
  * a short page ends it only when `count` is known and the items seen so far
    reach it;
  * otherwise keep going: the next page, empty, ends it;
  * `max_pages` pages without an end raises `PagingError` (a misbehaving
    server must not keep us paging forever).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from syncd.models import OffsetMode


def is_last_page(n_items: int, *, page_size: int, count: int | None, seen: int) -> bool:
    """The end rule, on its own so it can be tested as a table."""
    if n_items == 0:
        return True
    if n_items >= page_size:
        # A full page says nothing: `count` may be stale while new runs arrive.
        return False
    return count is not None and seen >= count


def v2_offset(page_number: int, limit: int, mode: OffsetMode) -> int:
    """v2's `offset` for a 0-based page number, under one reading of `offset`."""
    if mode is OffsetMode.ITEMS:
        return page_number * limit
    if mode is OffsetMode.PAGES0:
        return page_number
    if mode is OffsetMode.PAGES1:
        return page_number + 1
    raise ValueError("OffsetMode.AUTO has no offset; detect the reading first")


# -- detecting the reading ------------------------------------------------------
#
# Three requests: a first page `offset=0&limit=4`, a probe `offset=1&limit=2`,
# and the first page again.  The probe is `first[1:3]` under ITEMS (item 1 on),
# `first[2:4]` under PAGES0 (the second page of two) and `first[0:2]` under
# PAGES1 (page 1 is the first page).  Runs arriving meanwhile push the list
# down; the re-read says by how much, so the probe is matched against every
# shift that happened between the first read and the re-read.

PROBE_FIRST = (0, 4)  # (offset, limit)
PROBE_SECOND = (1, 2)
# Where each reading's probe starts in the first page, and how far the echoed
# `page_index` moves from the first request to the probe.
PROBE_START = {OffsetMode.ITEMS: 1, OffsetMode.PAGES0: 2, OffsetMode.PAGES1: 0}
PROBE_ECHO_STEP = {OffsetMode.ITEMS: 0, OffsetMode.PAGES0: 1, OffsetMode.PAGES1: 0}
# Preference among readings the data cannot tell apart: ITEMS reads page 0 at
# offset 0, which is page 0 under every reading.
FALLBACK_ORDER = (OffsetMode.ITEMS, OffsetMode.PAGES0, OffsetMode.PAGES1)
REDETECT_MIN_RUNS = 2  # with two runs, the three readings' probes all differ


@dataclass(frozen=True, slots=True)
class Detection:
    """What one probe said: the reading to use, how it was decided, and whether it is final.

    `settled` is True only when the data fits exactly one reading; otherwise
    the reading is provisional, and `known_count` (how many runs the list had)
    says when asking again can tell more.
    """

    mode: OffsetMode | None  # None: the list moved too much to read the probe
    decided_by: str
    settled: bool
    known_count: int = 0


def readings_fitting(
    first: Sequence[object],
    probe: Sequence[object],
    reread: Sequence[object],
    count: int | None = None,
) -> frozenset[OffsetMode] | None:
    """The readings under which `probe` is what the server would have answered.

    None when the re-read shows the head moved by more than the first page
    can account for (the shift cannot be bounded).  A run repeated within a
    page counts once; a short first page is taken for the whole list only
    when `count` does not say otherwise.
    """
    first, probe, reread = _unique(first), _unique(probe), _unique(reread)
    shift = _shift(first, reread)
    if shift is None:
        return None
    # The list as known at the re-read: the runs that arrived, then the first page.
    merged = reread[:shift] + first
    whole = len(first) < PROBE_FIRST[1] and (count is None or len(reread) >= count)
    fitting = set()
    for mode, start in PROBE_START.items():
        for arrived in range(shift + 1):  # runs that had arrived when the probe was answered
            at = shift - arrived + start
            expected = merged[at : at + PROBE_SECOND[1]]
            complete = whole or at + PROBE_SECOND[1] <= len(merged)
            if complete and probe == expected:
                fitting.add(mode)
    return frozenset(fitting)


def _unique(slugs: Sequence[object]) -> list[object]:
    return list(dict.fromkeys(slugs))


def _shift(first: list[object], reread: list[object]) -> int | None:
    """How many runs arrived at the head between reading `first` and `reread`."""
    if not first:
        return 0 if not reread else None
    try:
        shift = reread.index(first[0])
    except ValueError:
        return None
    overlap = min(len(reread) - shift, len(first))
    if reread[shift : shift + overlap] != first[:overlap]:
        return None  # not a pure push-down (deletions, reordering)
    return shift


def detect_reading(
    first: Sequence[object],
    probe: Sequence[object],
    reread: Sequence[object],
    *,
    echo_step: int | None,
    count: int | None,
) -> Detection:
    """Decide what `offset` means from the three probe answers (pure).

    The data decides when exactly one reading fits.  When several fit (too
    few runs), the echoed `page_index` breaks the tie, provisionally.
    """
    known = max(len(reread), len(first), count or 0)
    fitting = readings_fitting(first, probe, reread, count)
    if fitting is None:
        return Detection(None, "list_moved", settled=False, known_count=known)
    if not fitting:
        return Detection(None, "no_reading_fits", settled=False, known_count=known)
    if len(fitting) == 1:
        (mode,) = fitting
        return Detection(mode, "probe_slugs", settled=True, known_count=known)
    candidates = [m for m in FALLBACK_ORDER if m in fitting]
    if echo_step is not None:
        echoed = [m for m in candidates if PROBE_ECHO_STEP[m] == echo_step]
        if len(echoed) == 1:
            return Detection(echoed[0], "echoed_page_index", settled=False, known_count=known)
    return Detection(candidates[0], "too_few_runs", settled=False, known_count=known)


@dataclass(slots=True)
class OffsetReading:
    """The reading of v2 `offset` in force, and when to ask again.

    A forced (setting) or data-settled reading stays; a provisional one is
    detected again once the list is seen to hold more runs than it did.
    """

    mode: OffsetMode | None = None
    settled: bool = False
    known_count: int = 0
    stale: bool = True  # detect before the next v2 request

    @classmethod
    def forced(cls, mode: OffsetMode) -> OffsetReading:
        if mode is OffsetMode.AUTO:
            return cls()
        return cls(mode=mode, settled=True, stale=False)

    def adopt(self, detection: Detection) -> None:
        """Take a detection's answer; one that decided nothing keeps the reading in use."""
        if detection.mode is not None:
            self.mode = detection.mode
        self.settled = detection.settled
        self.known_count = detection.known_count
        self.stale = self.mode is None

    def observe(self, count: int | None) -> None:
        """A v2 answer's `count`: a list grown enough since the last detection may now decide.

        "Enough" doubles each time (from 2 runs, the fewest that decide), so a
        list that keeps defeating the probe costs a logarithmic number of them.
        """
        if self.settled or count is None:
            return
        if count >= max(REDETECT_MIN_RUNS, 2 * self.known_count):
            self.stale = True
