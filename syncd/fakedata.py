"""The simulator's run history: a pure function of (seed, index), materialised lazily.

Every good run has a global index ``g``; ``g`` grows with ``started_at``, so a
listing (newest first) is ``g`` descending, ties on ``started_at`` broken by
slug descending (the slug is a ULID whose time part grows with ``g``).

    g:  0 .................. S-1 | S ............ N-1 | N ......... total-1
        static region            | initial in-flight   | added by churn
        terminal, never changes  | live region: explicit state per run (small)

Worker and terminal status of ``g`` come from tables that repeat every
``CYCLE`` indices, so counting or slicing the static region under any
(worker, status) filter is arithmetic, never a scan: one million runs cost
nothing until a page is asked for.  The live region holds the only mutable
state and an index of the runs still in flight.

With bad records on, the unfiltered listing of the static region carries one
bad item after every ``bad_every`` good runs (counted from the newest static
run, so churn never moves them relative to their neighbours).  Bad items are
not runs: they are absent from :meth:`Dataset.truth` and from filtered lists.
"""

from __future__ import annotations

import functools
import random
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Api = Literal["v1", "v2"]

STEP_S = 30  # seconds between consecutive run starts
CYCLE = 4096  # period of the worker / terminal-status tables
HEAD_STARTED_AT = 1_780_000_000  # started_at of the newest initial run (fixed: deterministic)
V1_STATUS: dict[str, int] = {
    "ready": 1,
    "running": 2,
    "aborting": 2,  # v1 has no code for aborting
    "succeeded": 3,
    "failed": 4,
    "aborted": 5,
}
TERMINAL = frozenset({"succeeded", "failed", "aborted"})
IN_FLIGHT = frozenset({"ready", "running", "aborting"})
PATHS: dict[str, tuple[str, ...]] = {
    "succeeded": ("ready", "running", "succeeded"),
    "failed": ("ready", "running", "failed"),
    "aborted": ("ready", "running", "aborting", "aborted"),
}
BAD_KINDS = (
    "missing_slug",
    "unknown_status",
    "usage_na",
    "string_timestamps",
    "negative_timestamps",
    "huge_err_msg",
    "extra_fields",
)
_V1_FIELDS = (
    "status",
    "err_msg",
    "slug",
    "scraper_title",
    "scraper_slug",
    "results",
    "usage",
    "started_at",
    "finished_at",
    "duration",
    "origin",
    "traffic",
    "version",
)
_V2_FIELDS = tuple(sorted(_V1_FIELDS))  # the v2 page prints its keys alphabetically


@dataclass(frozen=True, slots=True)
class _Shape:
    """How one endpoint spells a run: its keys in order, its status values."""

    fields: tuple[str, ...]
    status: Callable[[str], int | str]  # canonical status -> as this endpoint sends it
    unknown_status: int | str  # a status value no reader knows ("badrecords")
    # orjson options that print a record (built in v1's key order) in this shape's order.
    dump_option: int = 0


_SHAPES: dict[Api, _Shape] = {
    "v1": _Shape(_V1_FIELDS, V1_STATUS.__getitem__, unknown_status=9),
    "v2": _Shape(_V2_FIELDS, str, unknown_status="exploded", dump_option=orjson.OPT_SORT_KEYS),
}
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MASK64 = (1 << 64) - 1
_ERRORS = (
    "Navigation timeout of 30000 ms exceeded",
    "HTTP 403 Forbidden from target site",
    "Proxy connection failed: ECONNRESET",
    "Worker ran out of memory (limit 1024 MB)",
    "Selector '.price' not found",
)
_TITLES = (
    "News Collection",
    "Amazon Product Scraper",
    "Google Maps Places",
    "Job Board Crawler",
    "Real Estate Listings",
    "Hotel Prices",
    "Social Profiles",
    "Price Monitor",
)
_OWNERS = ("acme", "globex", "initech", "umbrella")


def mix(seed: int, g: int, salt: int) -> int:
    """A 64-bit hash of (seed, g, salt): splitmix64's finaliser."""
    return hasher(seed, salt)(g)


def hasher(seed: int, salt: int) -> Callable[[int], int]:
    """``mix(seed, ., salt)``, with the part that does not depend on ``g`` done once:
    the simulator hashes every run it serves several times."""
    base = seed * 0x9E3779B97F4A7C15 + salt * 0x94D049BB133111EB

    def hashed(g: int) -> int:
        z = (base + g * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    return hashed


def rand80(seed: int, g: int, salt: int) -> int:
    """80 hashed bits for the random half of a ULID."""
    return (mix(seed, g, salt) << 16) | (mix(seed, g, salt + 1) & 0xFFFF)


# Two characters (ten bits) at a time: half the steps of one per five bits, for a slug
# made per run served (1.3 against 2.7 us).
_CROCKFORD_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_PAIR_SHIFTS = tuple(range(120, -1, -10))


def ulid(ms: int, rand: int) -> str:
    """26 Crockford base-32 characters: 48-bit millisecond time, 80 random bits."""
    n = ((ms & ((1 << 48) - 1)) << 80) | (rand & ((1 << 80) - 1))
    return "".join([_CROCKFORD_PAIRS[(n >> shift) & 1023] for shift in _PAIR_SHIFTS])


@dataclass(frozen=True, slots=True)
class Worker:
    slug: str
    title: str
    path: str  # owner~name, the other form worker_id accepts
    version: str


@dataclass(slots=True)
class _LiveRun:
    path: tuple[str, ...]
    stage: int
    finished_at: int = 0

    @property
    def status(self) -> str:
        return self.path[self.stage]


@dataclass(frozen=True)
class Listing:
    """One filtered, newest-first view of the dataset at one moment.

    Entries are run indices ``g >= 0``, or ``-(j + 1)`` for bad record ``j``.
    """

    live: list[int]  # matching live runs, newest first
    static_count: int  # S
    pattern: list[int] | None  # matching residues mod CYCLE; None = every run
    bad_every: int  # 0 = no bad records in this view

    @functools.cached_property
    def _static_len(self) -> int:
        s = self.static_count
        if self.pattern is None:
            return s + (s // self.bad_every if self.bad_every else 0)
        return (s // CYCLE) * len(self.pattern) + bisect_left(self.pattern, s % CYCLE)

    @property
    def count(self) -> int:
        return len(self.live) + self._static_len

    def entries(self, start: int, stop: int) -> list[int]:
        """Entries at listing positions [start, stop), clipped to the listing."""
        start, stop = max(start, 0), min(stop, self.count)
        out = self.live[start:stop]
        first = max(start - len(self.live), 0)
        out.extend(self._static_at(m) for m in range(first, stop - len(self.live)))
        return out

    def _static_at(self, m: int) -> int:
        s = self.static_count
        if self.pattern is None:
            if not self.bad_every:
                return s - 1 - m
            block, r = divmod(m, self.bad_every + 1)
            return s - 1 - (block * self.bad_every + r) if r < self.bad_every else -(block + 1)
        k = self._static_len - 1 - m
        cycles, r = divmod(k, len(self.pattern))
        return cycles * CYCLE + self.pattern[r]


class Dataset:
    """The good runs (and the bad items mixed among them) of one simulated account."""

    def __init__(
        self, *, runs: int, seed: int, workers: int, in_flight: int, bad_every: int = 0
    ) -> None:
        self.seed = seed
        self.bad_every = bad_every
        # The hashes every served run needs, by salt (see _fields, slug, _tie).
        self._h1, self._h2, self._h3, self._h4, self._h10, self._h11 = (
            hasher(seed, salt) for salt in (1, 2, 3, 4, 10, 11)
        )
        in_flight = max(0, min(in_flight, runs))
        self.static_count = runs - in_flight
        self._inflight_cap = max(in_flight, 1)
        self._t0 = HEAD_STARTED_AT - STEP_S * (runs - 1)
        self._now = HEAD_STARTED_AT + STEP_S  # simulated clock, advanced by ticks
        self._rng = random.Random(mix(seed, 0, 99))
        self.workers = [self._make_worker(i) for i in range(max(1, workers))]
        weights = [1.0 / (i + 1) for i in range(len(self.workers))]  # a few busy workers
        rng = random.Random(mix(seed, 0, 98))
        self._worker_of = rng.choices(range(len(self.workers)), weights, k=CYCLE)
        self._final_of = rng.choices(("succeeded", "failed", "aborted"), (85, 10, 5), k=CYCLE)
        self._patterns: dict[tuple[int | None, frozenset[str] | None], list[int]] = {}
        self._live: list[_LiveRun] = []
        self._inflight: list[int] = []  # live runs not yet terminal, ascending g
        self._live_views: dict[tuple[int | None, frozenset[str] | None], list[int]] = {}
        for g in range(self.static_count, runs):
            path = self._path(g)
            self._add_live(_LiveRun(path, mix(seed, g, 6) % (len(path) - 1)))
        # Both streams page the same runs at about the same time, and polls re-read the
        # head: a static run is rendered for both endpoints at once, and kept a while.
        self._static_items = functools.lru_cache(maxsize=65_536)(self._render_both)

    # ---- shape ---------------------------------------------------------------

    @property
    def total(self) -> int:
        """Number of good runs."""
        return self.static_count + len(self._live)

    def started_at(self, g: int) -> int:
        return self._t0 + STEP_S * (g - self._tie(g))

    def _tie(self, g: int) -> int:
        """1 when run g starts in the same second as run g-1 (about one run in nine)."""
        return 1 if g > 0 and self._h3(g) & 7 == 0 else 0

    def slug(self, g: int) -> str:
        return self._slug(g, self._tie(g))

    def _slug(self, g: int, tie: int) -> str:
        ms = self._h4(g) % 500 + (500 if tie else 0)
        started = self._t0 + STEP_S * (g - tie)
        rand = (self._h10(g) << 16) | (self._h11(g) & 0xFFFF)  # rand80(seed, g, 10)
        return ulid(started * 1000 + ms, rand)

    def status(self, g: int) -> str:
        if g < self.static_count:
            return self._final_of[g % CYCLE]
        return self._live[g - self.static_count].status

    def worker_of(self, g: int) -> Worker:
        return self.workers[self._worker_of[g % CYCLE]]

    def find_worker(self, ident: str, *, paths: bool) -> int | None:
        """Index of the worker with this slug (or, if ``paths``, owner~name / owner/name)."""
        for i, w in enumerate(self.workers):
            if ident == w.slug or (paths and ident.replace("/", "~") == w.path):
                return i
        return None

    def select(self, worker: int | None = None, statuses: frozenset[str] | None = None) -> Listing:
        """The listing for one filter; bad items only appear in the unfiltered one."""
        key = (worker, statuses)
        live = self._live_views.get(key)
        if live is None:
            pool: Iterable[int] = (
                self._inflight
                if statuses is not None and statuses <= IN_FLIGHT
                else range(self.static_count, self.total)
            )
            live = [g for g in pool if self._matches(g, worker, statuses)]
            live.reverse()
            self._live_views[key] = live
        unfiltered = worker is None and statuses is None
        return Listing(
            live,
            self.static_count,
            None if unfiltered else self._pattern(key),
            self.bad_every if unfiltered else 0,
        )

    def _matches(self, g: int, worker: int | None, statuses: frozenset[str] | None) -> bool:
        return (worker is None or self._worker_of[g % CYCLE] == worker) and (
            statuses is None or self.status(g) in statuses
        )

    def _pattern(self, key: tuple[int | None, frozenset[str] | None]) -> list[int]:
        if key not in self._patterns:
            worker, statuses = key
            self._patterns[key] = [
                r
                for r in range(CYCLE)
                if (worker is None or self._worker_of[r] == worker)
                and (statuses is None or self._final_of[r] in statuses)
            ]
        return self._patterns[key]

    # ---- time ----------------------------------------------------------------

    def tick(self, *, add: int, advance: int) -> None:
        """One step: ``add`` new ready runs at the head, then ``advance`` random in-flight
        runs move one stage on (plus the oldest ones while more than the initial number
        are in flight, so a long churn keeps a steady concurrency)."""
        self._now += STEP_S * max(1, add)
        for _ in range(add):
            self._add_live(_LiveRun(self._path(self.total), 0))
        picked = set(self._rng.sample(self._inflight, min(advance, len(self._inflight))))
        excess = len(self._inflight) - self._inflight_cap
        picked.update(self._inflight[: max(excess, 0)])
        for g in sorted(picked):
            run = self._live[g - self.static_count]
            run.stage += 1
            if run.status in TERMINAL:
                run.finished_at = max(self._now, self.started_at(g) + 1)
                self._inflight.remove(g)
        self._live_views.clear()

    def _add_live(self, run: _LiveRun) -> None:
        self._inflight.append(self.total)
        self._live.append(run)

    def _path(self, g: int) -> tuple[str, ...]:
        roll = mix(self.seed, g, 8) % 100
        return PATHS["succeeded" if roll < 80 else "failed" if roll < 92 else "aborted"]

    # ---- records -------------------------------------------------------------

    def record(self, g: int) -> dict[str, Any]:
        """Run ``g`` with the canonical status (plus what v1 and v2 each send)."""
        rec = self._fields(g)
        rec["status_v1"] = V1_STATUS[rec["status"]]
        rec["status_v2"] = rec["status"]
        return rec

    def truth(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Good runs at newest-first positions [start, stop)."""
        listing = Listing(self.select().live, self.static_count, None, 0)
        return [
            self.record(g) for g in listing.entries(start, listing.count if stop is None else stop)
        ]

    def item(self, entry: int, api: Api) -> bytes:
        """One list item, serialised as that endpoint sends it."""
        if entry < 0:
            return orjson.dumps(self.bad_item(-entry - 1, api))
        if entry < self.static_count:
            return self._static_items(entry)[api == "v2"]
        return self._render(self._fields(entry), api)

    def _render_both(self, g: int) -> tuple[bytes, bytes]:
        rec = self._fields(g)
        v2 = orjson.dumps(rec, option=_SHAPES["v2"].dump_option)  # v2 sends the status as is
        rec["status"] = V1_STATUS[rec["status"]]
        return orjson.dumps(rec), v2

    @staticmethod
    def _render(rec: dict[str, Any], api: Api) -> bytes:
        # `rec` holds exactly the shape's fields, in v1's order (see `_fields`): with this
        # endpoint's status, printed in its key order, it is the item.
        shape = _SHAPES[api]
        rec["status"] = shape.status(rec["status"])
        return orjson.dumps(rec, option=shape.dump_option)

    def _fields(self, g: int) -> dict[str, Any]:
        """Run ``g``'s fields as both endpoints name them, the status canonical (a new dict:
        callers change it)."""
        h1, h2 = self._h1(g), self._h2(g)
        worker = self.workers[self._worker_of[g % CYCLE]]
        tie = self._tie(g)
        started = self._t0 + STEP_S * (g - tie)
        status = self.status(g)
        rec: dict[str, Any] = {  # v1's key order (_V1_FIELDS): `_render` relies on it
            "status": status,
            "err_msg": "",
            "slug": self._slug(g, tie),
            "scraper_title": worker.title,
            "scraper_slug": worker.slug,
            "results": 0,
            "usage": "0",
            "started_at": started,
            "finished_at": 0,
            "duration": 0,
            "origin": ("api", "api", "api", "web", "web", "openapi")[h1 % 6],
            "traffic": 0,
            "version": worker.version,
        }
        if status not in TERMINAL:
            return rec
        if g < self.static_count:  # finished before the simulated "now"
            finished = started + min(1 + (h1 >> 8) % 600, max(1, HEAD_STARTED_AT - started))
        else:
            finished = self._live[g - self.static_count].finished_at
        results = (1 + (h1 >> 20) % 2000) if status == "succeeded" else (h1 >> 20) % 40
        milli = 5 + (h2 % 90) + results * (1 + (h2 >> 8) % 7) // 4
        whole, frac = divmod(milli, 1000)
        rec.update(
            finished_at=finished,
            duration=finished - started,
            results=results,
            usage=f"{whole}.{frac:03d}" if (h2 >> 16) % 4 else f"{whole}.{frac // 10:02d}",
            traffic=results * (1000 + (h2 >> 20) % 50_000) + (h1 >> 40) % 4096,
        )
        if status == "failed":
            rec["err_msg"] = _ERRORS[(h2 >> 32) % len(_ERRORS)]
        elif status == "aborted" and h2 & 1:
            rec["err_msg"] = "Aborted by user"
        return rec

    def _make_worker(self, i: int) -> Worker:
        h = mix(self.seed, i, 50)
        name = _TITLES[i % len(_TITLES)]
        title = f"{name} {20260101 + (h % 12) * 100 + (h >> 8) % 28}"
        slug = ulid(1_770_000_000_000 + (h >> 16) % 10**9, rand80(self.seed, i, 51))
        owner = _OWNERS[(h >> 4) % len(_OWNERS)]
        path = f"{owner}~{name.lower().replace(' ', '-')}-{i}"
        return Worker(slug, title, path, "latest" if h % 3 == 0 else f"v1.{h % 4}.{(h >> 3) % 10}")

    # ---- bad records ---------------------------------------------------------

    def bad_kind(self, j: int) -> str:
        return BAD_KINDS[j % len(BAD_KINDS)]

    def bad_item(self, j: int, api: Api) -> dict[str, Any]:
        """Bad record ``j``: a run-shaped object broken in one way (see BAD_KINDS)."""
        anchor = self.static_count - 1 - (j * self.bad_every + self.bad_every - 1)
        rec = self._fields(anchor)
        rec["slug"] = "BAD" + ulid(mix(self.seed, j, 60), rand80(self.seed, j, 61))[3:]
        shape = _SHAPES[api]
        rec["status"] = shape.status(rec["status"])
        kind = self.bad_kind(j)
        if kind == "missing_slug":
            del rec["slug"]
        elif kind == "unknown_status":
            rec["status"] = shape.unknown_status
        elif kind == "usage_na":
            rec["usage"] = "n/a"
        elif kind == "string_timestamps":
            rec["started_at"], rec["finished_at"] = str(rec["started_at"]), str(rec["finished_at"])
        elif kind == "negative_timestamps":
            rec["started_at"], rec["finished_at"] = -rec["started_at"], -1
        elif kind == "huge_err_msg":
            rec["err_msg"] = ("Stack trace: " + "at Object.<anonymous> (worker.js:1:1)\n" * 3000)[
                :100_000
            ]
        else:  # extra_fields
            rec.update(priority=3, labels={"team": "growth"}, _internal_shard="eu-7")
        return rec
