"""What a sync cycle is and what it leaves behind: its kind, its report, the scan checkpoint.

Pure values shared by the incremental cycle (sync.py), the full scan
(fullscan.py) and the pager and writer both drive (pager.py, writer.py).

The checkpoint is the one piece of a cycle that outlives the process: a full
scan stores one with every batch (in `sync_state.checkpoint`, JSONB), and the
next cycle resumes from it.  `ScanCheckpoint.to_json` is its only writer and
`ScanCheckpoint.from_json` its only reader; the stored shape is

    {"kind": "scan", "purpose": "backfill" | "reconcile", "next_page": 12,
     "page_size": 100, "cycle_started_at": "2026-11-23T03:30:00+00:00"}

and stays readable across versions: a checkpoint a database already holds
must still resume.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from syncd.models import Source, StoreResult

CHECKPOINT_KIND = "scan"


class CycleKind(StrEnum):
    BACKFILL = "backfill"
    INCREMENTAL = "incremental"
    RECONCILE = "reconcile"


@dataclass(slots=True)
class CycleReport:
    """What one cycle did; `completed` is False when it was stopped part-way."""

    stream: Source
    kind: CycleKind = CycleKind.INCREMENTAL
    pages: int = 0
    requests: int = 0
    result: StoreResult = field(default_factory=StoreResult)
    resumed_from_page: int | None = None
    refreshed: int = 0
    vanished: int = 0
    completed: bool = False
    duration_s: float = 0.0

    def as_log(self) -> dict[str, Any]:
        r = self.result
        return {
            "stream": self.stream.value,
            "kind": self.kind.value,
            "pages": self.pages,
            "requests": self.requests,
            "seen": r.seen,
            "inserted": r.inserted,
            "updated": r.updated,
            "rejected": r.rejected,
            "refreshed": self.refreshed,
            "vanished": self.vanished,
            "completed": self.completed,
            "resumed_from_page": self.resumed_from_page,
            "duration_s": round(self.duration_s, 3),
        }


_SCAN_PURPOSES = frozenset({CycleKind.BACKFILL, CycleKind.RECONCILE})


@dataclass(frozen=True, slots=True)
class ScanCheckpoint:
    """Where an interrupted full scan resumes: page `next_page` (0-based) in pages of
    `page_size`, of a scan run for `purpose` that started at `cycle_started_at`.

    A stored checkpoint that is a scan's but unreadable in part (no usable page)
    still says a scan of that purpose was interrupted: it is finished first,
    from the top.
    """

    purpose: CycleKind
    next_page: int
    page_size: int
    cycle_started_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form (`sync_state.checkpoint`)."""
        return {
            "kind": CHECKPOINT_KIND,
            "purpose": self.purpose.value,
            "next_page": self.next_page,
            "page_size": self.page_size,
            "cycle_started_at": (
                None if self.cycle_started_at is None else self.cycle_started_at.isoformat()
            ),
        }

    @classmethod
    def from_json(cls, stored: object) -> ScanCheckpoint | None:
        """A stored checkpoint; None when there is none, or it is not a scan's."""
        if not isinstance(stored, dict) or stored.get("kind") != CHECKPOINT_KIND:
            return None
        purpose = stored.get("purpose", CycleKind.BACKFILL.value)
        return cls(
            purpose=CycleKind(purpose)
            if isinstance(purpose, str) and purpose in _SCAN_PURPOSES
            else CycleKind.BACKFILL,
            next_page=_int_or_0(stored.get("next_page")),
            page_size=_int_or_0(stored.get("page_size")),
            cycle_started_at=_parse_time(stored.get("cycle_started_at")),
        )

    def resume_page(self, page_size: int) -> int | None:
        """The page to resume from in today's page size; None to start from the top."""
        if self.next_page <= 0 or self.page_size <= 0:
            return None
        # Round down: re-reading a few runs is harmless, skipping one is not.
        return (self.next_page * self.page_size) // page_size


def _int_or_0(value: object) -> int:
    """An int as stored; 0 (no usable page) for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None
