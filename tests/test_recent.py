"""What the store remembers it wrote: which staged runs a batch may leave out, for how long,
and how batches that carry the same runs wait for each other."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from syncd.models import CONTENT_FIELDS, Run, Source, StageRow, Status, stage_row
from syncd.recent import PendingWrites, RecentlyStored, fingerprint

T0 = dt.datetime(2026, 3, 12, 8, 0, tzinfo=dt.UTC)


def row(slug: str = "R1", **changes: Any) -> StageRow:
    run = Run(
        slug=slug, worker_slug="w-1", worker_title="Worker One", status=Status.RUNNING,
        status_raw="running", err_msg="", results=0, usage_usd=Decimal("0.010"),
        traffic_bytes=100, started_at=T0, finished_at=None, duration_s=0, origin="api",
        version="v1.0.0", source=Source.V2,
    )  # fmt: skip
    return stage_row(run._replace(**changes))


def remembered(rows: list[StageRow], now: float = 0.0, **kw: Any) -> RecentlyStored:
    recent = RecentlyStored(**kw)
    recent.remember(rows, frozenset(r[0] for r in rows), now)
    return recent


def slugs(rows: list[StageRow]) -> list[str]:
    return [r[0] for r in rows]


@pytest.mark.parametrize(
    ("change", "left_out"),
    [
        ({}, True),
        # v1 spells the status 2 where v2 says "running", and says which endpoint it is:
        # not content (what the merge compares), so the stored row is what it would write.
        ({"status_raw": "2", "source": Source.V1}, True),
        ({"status": Status.SUCCEEDED}, False),
        ({"results": 1}, False),
        ({"usage_usd": Decimal("0.011")}, False),
        ({"finished_at": T0}, False),
        ({"err_msg": None}, False),  # '' and NULL differ in the table too
        ({"worker_title": "Worker 1"}, False),
        ({"version": "latest"}, False),
    ],
)
def test_a_run_stored_just_so_is_left_out_and_any_content_change_is_sent(
    change: dict[str, Any], left_out: bool
) -> None:
    recent = remembered([row()])
    seen = row(**change)
    assert recent.to_send([seen, row("R2")], 1.0) == (
        [row("R2")] if left_out else [seen, row("R2")]
    )


def test_the_fingerprint_covers_exactly_the_content_fields() -> None:
    assert len(CONTENT_FIELDS) == len(Run._fields) - 3
    assert fingerprint(row()) == fingerprint(row(status_raw="2", source=Source.V1))
    assert fingerprint(row()) != fingerprint(row(traffic_bytes=101))


def test_a_slug_sent_is_forgotten_until_its_batch_is_remembered() -> None:
    """A run whose content moved is sent; until that batch commits nothing stands for it,
    so a third copy equal to the first is sent too (the stored row is in question)."""
    recent = remembered([row()])
    assert slugs(recent.to_send([row(results=5)], 1.0)) == ["R1"]
    assert slugs(recent.to_send([row()], 1.0)) == ["R1"]
    recent.remember([row(results=5)], frozenset({"R1"}), 1.0)
    assert recent.to_send([row(results=5)], 2.0) == []


def test_only_runs_the_batch_wrote_are_remembered() -> None:
    """A run the merge did not write (too old, lower rank) may be stored otherwise."""
    recent = RecentlyStored()
    recent.remember([row("R1"), row("R2")], frozenset({"R2"}), 0.0)
    assert slugs(recent.to_send([row("R1"), row("R2")], 1.0)) == ["R1"]


def test_a_slug_twice_in_a_batch_is_neither_remembered_nor_left_out() -> None:
    """Which copy wins is the merge's call (rank, then order): it gets every copy."""
    recent = RecentlyStored()
    recent.remember([row(), row(status=Status.SUCCEEDED)], frozenset({"R1"}), 0.0)
    assert len(recent) == 0
    for batch in ([row(), row(status=Status.READY)], [row(status=Status.READY), row()]):
        assert remembered([row()]).to_send(batch, 1.0) == batch


def test_forgotten_slugs_are_sent() -> None:
    recent = remembered([row("R1"), row("R2")])
    recent.forget(["R1", "nope"])
    assert slugs(recent.to_send([row("R1"), row("R2")], 1.0)) == ["R1"]


@pytest.mark.parametrize(
    ("later_s", "left_out"),
    [(0.0, True), (49.9, True), (50.0, True), (99.9, True), (100.0, False), (500.0, False)],
)
def test_what_is_remembered_lasts_at_least_half_the_ttl_and_never_the_whole(
    later_s: float, left_out: bool
) -> None:
    """Two generations of ttl/2: remembered at 0, an entry is good until the second
    rotation, at ttl (the first comes at ttl/2 at the earliest)."""
    recent = remembered([row()], now=0.0, ttl_s=100.0)
    recent.to_send([row("other")], 50.0)  # a batch between: the first rotation
    assert (recent.to_send([row()], later_s) == []) is left_out


def test_an_entry_made_late_in_a_generation_lasts_half_the_ttl() -> None:
    recent = RecentlyStored(ttl_s=100.0)
    recent.to_send([row("other")], 0.0)  # the generation starts
    recent.remember([row()], frozenset({"R1"}), 49.0)
    assert recent.to_send([row()], 99.0) == []  # rotated at 99: in the previous generation
    assert slugs(recent.to_send([row()], 149.0)) == ["R1"]  # rotated again: gone


def test_memory_is_bounded_by_the_capacity() -> None:
    recent = RecentlyStored(capacity=1_000)
    for start in range(0, 10_000, 100):
        batch = [row(f"R{i}") for i in range(start, start + 100)]
        recent.remember(batch, frozenset(slugs(batch)), 0.0)
        assert len(recent) <= 1_000
    assert len(recent) >= 500  # the newest half at least
    assert recent.to_send([row("R9999")], 0.0) == []


async def test_a_batch_that_shares_runs_waits_for_the_one_being_written() -> None:
    pending = PendingWrites()
    order: list[str] = []
    release = asyncio.Event()

    async def first() -> None:
        with pending.writing({"R1", "R2"}):
            order.append("first writing")
            await release.wait()
            order.append("first stored")

    async def second(runs: set[str], name: str) -> None:
        await pending.wait_for(runs)
        order.append(name)

    writer = asyncio.create_task(first())
    await asyncio.sleep(0)
    sharing = asyncio.create_task(second({"R2", "R3"}, "sharing may go"))
    disjoint = asyncio.create_task(second({"R3", "R4"}, "disjoint may go"))
    await asyncio.wait_for(disjoint, 1)
    assert not sharing.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(writer, sharing), 1)
    assert order == ["first writing", "disjoint may go", "first stored", "sharing may go"]


async def test_a_failed_write_releases_whoever_waits_on_it() -> None:
    pending = PendingWrites()

    async def failing() -> None:
        with pending.writing({"R1"}):
            await asyncio.sleep(0)
            raise RuntimeError("the database went away")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(pending.wait_for({"R1"}))
    with pytest.raises(RuntimeError):
        await task
    await asyncio.wait_for(waiter, 1)
