"""What this process stored lately: a batch leaves out runs the database holds exactly so.

In a backfill every run arrives twice, once from each endpoint and usually
seconds apart, and the second copy is nearly always what the first one stored.
The merge finds that out only after COPY, an index probe and a sort for the
row: about a third of what storing the run cost, and half of a backfill's rows.
So the store remembers, for each slug it wrote, a fingerprint of the content
it wrote, and leaves out a staged run whose content is exactly that.  For such
a run the merge would write nothing, add no history and move no timestamp
(storage.py), so leaving it out changes nothing in the database.

What keeps that true:

* a slug is forgotten before a batch that carries it is sent: while that
  transaction is in flight the stored row may change, and the other stream must
  not skip against the old content; it is remembered again only for runs the
  batch wrote, once the batch committed (a failed batch leaves it forgotten);
* a slug that appears twice in one batch is not remembered (the merge picks
  which copy wins);
* marking runs vanished forgets them (their next observation must clear
  `vanished_at`);
* an entry lasts between `ttl_s / 2` and `ttl_s` (two generations) and at most
  `capacity` slugs are kept: memory stays bounded, and a row someone else
  deleted or changed is written again within minutes, as it was before.

The two streams page the same list at about the same pace, so their batches
carry the same runs at the same time: with both in flight at once, neither could
leave anything out (and PostgreSQL would make the second wait on the first's
row locks anyway).  `PendingWrites` makes a batch that shares runs with one
being written wait for it first, and then leave out what that one stored.

No I/O: the caller passes the monotonic time.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import Iterable, Iterator

from syncd.models import CONTENT_FIELDS, Run, StageRow

# Content as the stage holds it.  The fingerprint is Python's hash of that tuple:
# equal content, equal hash; two different contents share one with odds of about
# 2**-64 per comparison, since no field mixes values whose hashes collide by
# construction (ints are validated non-negative and far below 2**61).
_content = operator.itemgetter(*(Run._fields.index(f) for f in CONTENT_FIELDS))

CAPACITY = 100_000  # slugs: about 16 MB; a backfill's two streams stay far closer
TTL_S = 300.0


def _repeated(slugs: list[str]) -> frozenset[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for slug in slugs:
        if slug in seen:
            twice.add(slug)
        seen.add(slug)
    return frozenset(twice)


def fingerprint(row: StageRow) -> int:
    """The hash of a stage row's content (`models.CONTENT_FIELDS`, what the merge compares)."""
    return hash(_content(row))


class RecentlyStored:
    """Slug -> fingerprint of what this process last wrote for it, bounded in time and size."""

    def __init__(self, *, capacity: int = CAPACITY, ttl_s: float = TTL_S) -> None:
        self._half_capacity = max(1, capacity // 2)
        self._half_ttl_s = ttl_s / 2
        self._current: dict[str, int] = {}
        self._previous: dict[str, int] = {}
        self._current_since: float | None = None

    def __len__(self) -> int:
        return len(self._current.keys() | self._previous.keys())

    def to_send(self, rows: list[StageRow], now: float) -> list[StageRow]:
        """`rows` minus those stored exactly as they are; the slugs sent are forgotten."""
        self._age(now)
        current, previous = self._current, self._previous
        if not current and not previous:
            return rows
        slugs = [row[0] for row in rows]
        twice = _repeated(slugs) if len(set(slugs)) < len(slugs) else frozenset()
        send: list[StageRow] = []
        for slug, row in zip(slugs, rows, strict=True):
            known = current.get(slug)
            if known is None:
                known = previous.get(slug)
            if known is not None:
                # A slug twice in the batch goes whole: which copy wins is the merge's call.
                if known == fingerprint(row) and slug not in twice:
                    continue
                current.pop(slug, None)
                previous.pop(slug, None)
            send.append(row)
        return send

    def remember(self, sent: Iterable[StageRow], written: frozenset[str], now: float) -> None:
        """After `sent` committed: keep the content of the runs it wrote (`written` slugs)."""
        self._age(now)
        if not written:
            return
        once: dict[str, StageRow | None] = {}
        for row in sent:
            slug = row[0]
            if slug in written:
                once[slug] = None if slug in once else row
        current = self._current
        for slug, kept in once.items():
            if kept is not None:
                current[slug] = fingerprint(kept)
        if len(current) >= self._half_capacity:
            self._rotate(now)

    def forget(self, slugs: Iterable[str]) -> None:
        """Drop what is remembered of these slugs (their next batch is sent whole)."""
        for slug in slugs:
            self._current.pop(slug, None)
            self._previous.pop(slug, None)

    def _age(self, now: float) -> None:
        if self._current_since is None:
            self._current_since = now
            return
        age = now - self._current_since
        if age >= self._half_ttl_s:
            self._rotate(now)
            if age >= 2 * self._half_ttl_s:  # the old current generation is past ttl_s too
                self._previous = {}

    def _rotate(self, now: float) -> None:
        self._previous, self._current = self._current, {}
        self._current_since = now


class PendingWrites:
    """The slugs of the batches being written now, so that a batch sharing runs with one
    waits for it.  A batch only ever waits for batches registered before it: no cycles."""

    def __init__(self) -> None:
        self._batches: list[tuple[set[str], asyncio.Event]] = []

    async def wait_for(self, slugs: set[str]) -> None:
        """Return once no batch being written carries any of `slugs`."""
        while overlapping := [
            done for pending, done in self._batches if not pending.isdisjoint(slugs)
        ]:
            await overlapping[0].wait()

    @contextlib.contextmanager
    def writing(self, slugs: set[str]) -> Iterator[None]:
        """Register a batch of `slugs` for the block; whoever waits on it resumes after."""
        entry = (slugs, asyncio.Event())
        self._batches.append(entry)
        try:
            yield
        finally:
            self._batches.remove(entry)
            entry[1].set()
