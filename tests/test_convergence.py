"""Convergence: any interleaving of v1 and v2 observations ends in the lifecycle's state.

A property-based test (hypothesis) draws a few runs, each with a true lifecycle
path (ready -> running -> succeeded | failed | aborting -> aborted, possibly
still in flight), and snapshots of its stages as v1 or v2 list items, exactly
as upstream sends them: v1 cannot say `aborting` (it shows such a run as
running, `2`), now and then a status is unreadable (`9`), and for some runs
the endpoints spell a field differently (`origin`).  All observations of all
runs are shuffled, cut into single-endpoint batches and pushed through the
real normaliser and `Store.save_batch` on PostgreSQL with increasing
`observed_at`.  Then:

* each run holds the content of an observation at the highest STATUS_RANK
  seen (`unknown` never beats a known status; a run only ever seen as unknown
  is stored as unknown), with that observation's status_raw, source and time;
* history holds exactly the statuses observed, each with its first sighting;
* every worker is there; every unreadable status is kept as a reject;
* replaying every observation again, in another order, writes nothing.

Where the lifecycle cannot order what was observed (two different contents at
the top rank), the passing property only asks that the replay keeps the run's
status, and two strict-xfail properties pin what syncd does not (yet) do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.database import create_engine
from syncd.models import STATUS_RANK, Page, Run, Source, Status, StoreResult
from syncd.normalize import split_page
from syncd.storage import PageProgress, Store
from tests.support.truth import COMPARED, RUN_FIELDS

V1, V2 = Source.V1, Source.V2
T0 = dt.datetime(2026, 3, 12, 8, 0, tzinfo=dt.UTC)
EPOCH_START = 1_773_302_400  # 2026-03-12T08:00:00Z, when the runs start upstream

LIFECYCLES: dict[Status, tuple[Status, ...]] = {
    Status.SUCCEEDED: (Status.READY, Status.RUNNING, Status.SUCCEEDED),
    Status.FAILED: (Status.READY, Status.RUNNING, Status.FAILED),
    Status.ABORTED: (Status.READY, Status.RUNNING, Status.ABORTING, Status.ABORTED),
}
ABORT, SUCCEED = LIFECYCLES[Status.ABORTED], LIFECYCLES[Status.SUCCEEDED]
V1_STATUS_CODE = {
    Status.READY: 1,
    Status.RUNNING: 2,
    Status.ABORTING: 2,  # v1 has no "aborting": such a run shows as running
    Status.SUCCEEDED: 3,
    Status.FAILED: 4,
    Status.ABORTED: 5,
}
UNKNOWN_CODE = 9

# What each stage looks like upstream besides identity and status:
# (results, usage, traffic, duration, finished, err_msg).  Terminal stages are finished.
STAGE_CONTENT: dict[Status, tuple[int, str, int, int, bool, str]] = {
    Status.READY: (0, "0", 0, 0, False, ""),
    Status.RUNNING: (3, "0.012", 2_048, 60, False, ""),
    Status.ABORTING: (5, "0.019", 4_096, 95, False, "abort requested"),
    Status.SUCCEEDED: (40, "0.051", 65_536, 300, True, ""),
    Status.FAILED: (7, "0.024", 8_192, 120, True, "worker crashed"),
    Status.ABORTED: (5, "0.020", 4_096, 100, True, "aborted by user"),
}
TABLES = ("runs", "run_status_history", "workers", "sync_state", "sync_rejects")


@dataclass(frozen=True)
class Obs:
    """One snapshot of one run: stage `stage` of its path, as `source` reports it."""

    run: int
    stage: int
    source: Source
    unknown: bool = False


@dataclass(frozen=True)
class Batch:
    """One `save_batch` call: observations from one endpoint (a slug may repeat)."""

    source: Source
    obs: tuple[Obs, ...]


@dataclass(frozen=True)
class Scenario:
    paths: tuple[tuple[Status, ...], ...]  # run i's stages so far (a lifecycle prefix)
    apart: tuple[bool, ...]  # run i's origin reads "api" in v1 but "openapi" in v2
    batches: tuple[Batch, ...]
    replay: tuple[Batch, ...]  # the same observations again, in another order


def slug(run: int) -> str:
    return f"run-{run}"


def worker(run: int) -> str:
    return f"acme/worker-{run % 2}"


def raw_item(scenario: Scenario, obs: Obs) -> dict[str, Any]:
    """The list item upstream sends for this observation."""
    stage = scenario.paths[obs.run][obs.stage]
    results, usage, traffic, duration, finished, err_msg = STAGE_CONTENT[stage]
    started = EPOCH_START + 3_600 * obs.run
    if obs.unknown:
        status: int | str = UNKNOWN_CODE if obs.source is V1 else str(UNKNOWN_CODE)
    else:
        status = V1_STATUS_CODE[stage] if obs.source is V1 else stage.value
    return {
        "slug": slug(obs.run),
        "scraper_slug": worker(obs.run),
        "scraper_title": f"Worker {obs.run % 2}",
        "status": status,
        "err_msg": err_msg,
        "results": results + obs.run,
        "usage": usage,
        "traffic": traffic,
        "started_at": 0 if stage is Status.READY else started,
        "finished_at": started + duration if finished else 0,
        "duration": duration,
        "origin": "openapi" if scenario.apart[obs.run] and obs.source is V2 else "api",
        "version": "v1.4.2",
    }


def observed_status(scenario: Scenario, obs: Obs) -> Status:
    if obs.unknown:
        return Status.UNKNOWN
    stage = scenario.paths[obs.run][obs.stage]
    return Status.RUNNING if obs.source is V1 and stage is Status.ABORTING else stage


def batch_time(index: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=10 * index)


# -- scenarios -----------------------------------------------------------------


def cut_into_batches(draw: st.DrawFn, observations: Sequence[Obs]) -> tuple[Batch, ...]:
    """Consecutive observations of one endpoint, cut at random points into batches."""
    groups: list[list[Obs]] = []
    for obs in observations:
        if groups and groups[-1][0].source is obs.source and not draw(st.booleans()):
            groups[-1].append(obs)
        else:
            groups.append([obs])
    return tuple(Batch(group[0].source, tuple(group)) for group in groups)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    paths: list[tuple[Status, ...]] = []
    observations: list[Obs] = []
    for run in range(draw(st.integers(1, 5))):
        lifecycle = LIFECYCLES[draw(st.sampled_from(list(LIFECYCLES)))]
        path = lifecycle[: draw(st.integers(1, len(lifecycle)))]
        paths.append(path)
        snapshot = st.builds(
            Obs,
            run=st.just(run),
            stage=st.integers(0, len(path) - 1),
            source=st.sampled_from(Source),
            unknown=st.integers(0, 7).map(lambda n: n == 7),
        )
        observations += draw(st.lists(snapshot, min_size=1, max_size=6))
    apart = tuple(draw(st.integers(0, 3).map(lambda n: n == 3)) for _ in paths)
    batches = cut_into_batches(draw, draw(st.permutations(observations)))
    replay = cut_into_batches(draw, draw(st.permutations(observations)))
    return Scenario(tuple(paths), apart, batches, replay)


Planned = Sequence[tuple[Source, Sequence[tuple[int, int]]]]


def planned(batches: Planned) -> tuple[Batch, ...]:
    return tuple(
        Batch(source, tuple(Obs(run, stage, source) for run, stage in obs))
        for source, obs in batches
    )


def scenario(
    paths: Sequence[Sequence[Status]],
    batches: Planned,
    replay: Planned | None = None,
    apart: Sequence[bool] = (),
) -> Scenario:
    """An explicit scenario: batches of (run, stage); by default the replay is the reverse."""
    built = planned(batches)
    again = (
        planned(replay)
        if replay is not None
        else tuple(Batch(b.source, b.obs[::-1]) for b in built[::-1])
    )
    spelled = tuple(apart) + (False,) * (len(paths) - len(apart))
    return Scenario(tuple(tuple(p) for p in paths), spelled, built, again)


# -- expected state -----------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    obs: Obs
    at: dt.datetime
    run: Run

    @property
    def rank(self) -> int:
        return STATUS_RANK[self.run.status]

    @property
    def content(self) -> tuple[Any, ...]:
        return tuple(getattr(self.run, name) for name in COMPARED)


def sightings(scenario: Scenario) -> dict[int, list[Sighting]]:
    """Every observation of each run, normalised, in the order they were applied."""
    seen: dict[int, list[Sighting]] = {}
    for index, batch in enumerate(scenario.batches):
        for obs in batch.obs:
            runs, _ = split_page(Page([raw_item(scenario, obs)], 1, batch_time(index)), obs.source)
            assert len(runs) == 1 and runs[0].status is observed_status(scenario, obs)
            seen.setdefault(obs.run, []).append(Sighting(obs, batch_time(index), runs[0]))
    return seen


def at_top(seen: Sequence[Sighting]) -> list[Sighting]:
    """The sightings at the highest rank observed (`unknown` only if nothing else was seen)."""
    top = max(s.rank for s in seen)
    return [s for s in seen if s.rank == top]


def acceptable_rows(seen: Sequence[Sighting], *, by_stage: bool) -> list[dict[str, Any]]:
    """The rows the lifecycle allows: written by one of the sightings at the top rank.

    `by_stage` demands the furthest stage of the true path among those, which
    statuses alone cannot tell where v1 shows the running and the aborting
    stage both as `running` (a run seen only as unknown is left as it is).
    """
    best = at_top(seen)
    if by_stage and best[0].run.status is not Status.UNKNOWN:
        furthest = max(s.obs.stage for s in best)
        best = [s for s in best if s.obs.stage == furthest]
    return [row_of(s.run, s.at) for s in best]


def row_of(run: Run, at: dt.datetime) -> dict[str, Any]:
    values = {name: getattr(run, name) for name in RUN_FIELDS}
    values["status"] = run.status.value
    values["source"] = run.source.value
    values["updated_at"] = at
    return values


def expected_history(seen: Sequence[Sighting]) -> set[tuple[str, dt.datetime, str]]:
    first: dict[str, tuple[str, dt.datetime, str]] = {}
    for s in seen:
        first.setdefault(s.run.status.value, (s.run.status.value, s.at, s.run.source.value))
    return set(first.values())


def contents_at_top(seen: Sequence[Sighting]) -> dict[Source, set[tuple[Any, ...]]]:
    contents: dict[Source, set[tuple[Any, ...]]] = {}
    for s in at_top(seen):
        contents.setdefault(s.run.source, set()).add(s.content)
    return contents


# Which runs a replay may rewrite (keeping their status): three readings of "no-op".
Exempt = Callable[[Sequence[Sighting]], bool]


def several_contents_at_top(seen: Sequence[Sighting]) -> bool:
    """What syncd does today: only runs whose top rank holds one content are left alone."""
    return len(set().union(*contents_at_top(seen).values())) > 1


def one_endpoint_several_contents(seen: Sequence[Sighting]) -> bool:
    """storage.py's rule: a row is not rewritten with what the same endpoint reported last.

    So endpoints disagreeing with each other never make a replay write; only
    one endpoint reporting two contents the lifecycle cannot order may.
    """
    return any(len(c) > 1 for c in contents_at_top(seen).values())


def never(seen: Sequence[Sighting]) -> bool:
    """The issue's words: re-applying all observations changes no row."""
    return False


# -- the database ---------------------------------------------------------------


async def fetch(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql))).mappings()]


async def snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    return {
        "runs": await fetch(engine, "SELECT *, xmin::text AS xmin FROM runs ORDER BY slug"),
        "history": await fetch(
            engine, "SELECT *, xmin::text AS xmin FROM run_status_history ORDER BY 1, 2"
        ),
        "workers": await fetch(engine, "SELECT *, xmin::text AS xmin FROM workers ORDER BY slug"),
        "rejects": await fetch(
            engine, "SELECT *, xmin::text AS xmin FROM sync_rejects ORDER BY id"
        ),
    }


async def apply(
    store: Store,
    scenario: Scenario,
    batches: Sequence[Batch],
    first_index: int,
    *,
    skip_known: bool = True,
) -> list[StoreResult]:
    """Each batch through the real normaliser and one `save_batch`, as a poll would."""
    results = []
    for index, batch in enumerate(batches, start=first_index):
        items = [raw_item(scenario, obs) for obs in batch.obs]
        runs, rejects = split_page(Page(items, len(items), batch_time(index)), batch.source)
        results.append(
            await store.save_batch(
                batch.source,
                runs,
                rejects,
                observed_at=batch_time(index),
                progress=PageProgress(),
                seen=len(items),
                skip_known=skip_known,
            )
        )
    return results


def check_runs(scenario: Scenario, state: dict[str, Any], *, by_stage: bool) -> None:
    seen = sightings(scenario)
    rows = {row["slug"]: row for row in state["runs"]}
    assert set(rows) == {slug(run) for run in seen}
    for run, sightings_of_run in seen.items():
        row = rows[slug(run)]
        got = {name: row[name] for name in (*RUN_FIELDS, "updated_at")}
        assert got in acceptable_rows(sightings_of_run, by_stage=by_stage), slug(run)
        assert row["first_seen_at"] == sightings_of_run[0].at
        assert row["last_seen_at"] == row["updated_at"]
        if row["status"] == Status.UNKNOWN:
            assert all(s.run.status is Status.UNKNOWN for s in sightings_of_run)
            assert row["status_raw"] == str(UNKNOWN_CODE)

    history: dict[str, set[tuple[str, dt.datetime, str]]] = {}
    for h in state["history"]:
        history.setdefault(h["run_slug"], set()).add((h["status"], h["observed_at"], h["source"]))
    assert history == {slug(run): expected_history(s) for run, s in seen.items()}


def check_workers_and_rejects(scenario: Scenario, state: dict[str, Any]) -> None:
    seen = sightings(scenario)
    first_seen: dict[str, dt.datetime] = {}
    for run, sightings_of_run in seen.items():
        at = sightings_of_run[0].at
        first_seen[worker(run)] = min(first_seen.get(worker(run), at), at)
    last_written: dict[str, dt.datetime] = {}
    for row in state["runs"]:
        w = row["worker_slug"]
        last_written[w] = max(last_written.get(w, row["updated_at"]), row["updated_at"])
    assert {w["slug"]: (w["first_seen_at"], w["last_seen_at"]) for w in state["workers"]} == {
        w: (first_seen[w], last_written[w]) for w in first_seen
    }
    assert all(w["title"] == f"Worker {w['slug'][-1]}" for w in state["workers"])

    unknown = {(b.source, o.run, o.stage) for b in scenario.batches for o in b.obs if o.unknown}
    assert len(state["rejects"]) == len(unknown)  # one per distinct payload and stream
    assert all("unknown value '9'" in r["reason"] for r in state["rejects"])


def settled_view(state: dict[str, Any], loose: set[str]) -> dict[str, Any]:
    """What a replay must leave alone: everything, bar the content of `loose` runs."""
    runs = [
        {k: r[k] for k in ("slug", "status", "worker_slug", "first_seen_at")}
        if r["slug"] in loose
        else r
        for r in state["runs"]
    ]
    moved = {r["worker_slug"] for r in state["runs"] if r["slug"] in loose}
    workers = [
        {k: w[k] for k in ("slug", "title", "first_seen_at")} if w["slug"] in moved else w
        for w in state["workers"]
    ]
    return {**state, "runs": runs, "workers": workers}


async def converge(db_url: str, scenario: Scenario, *, by_stage: bool, exempt: Exempt) -> None:
    """Apply the scenario to an emptied database, check the state, replay, check nothing moved."""
    # Durability is not under test: not waiting for fsync makes each example much cheaper.
    engine = create_engine(db_url, connect_args={"server_settings": {"synchronous_commit": "off"}})
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
        store = Store(engine)
        await apply(store, scenario, scenario.batches, 0)
        settled = await snapshot(engine)
        check_runs(scenario, settled, by_stage=by_stage)
        check_workers_and_rejects(scenario, settled)

        seen = sightings(scenario)
        loose = {slug(run) for run, s in seen.items() if exempt(s)}
        replayed = await apply(store, scenario, scenario.replay, len(scenario.batches))
        assert all(r.inserted == 0 and r.history_added == 0 for r in replayed)
        assert all(r.changed_slugs <= loose for r in replayed), "a replay rewrote a run"
        after = await snapshot(engine)
        assert settled_view(after, loose) == settled_view(settled, loose)
        for row in after["runs"]:
            if row["slug"] in loose:
                top = at_top(seen[int(row["slug"].removeprefix("run-"))])
                assert tuple(row[f] for f in COMPARED) in {s.content for s in top}
    finally:
        await engine.dispose()


def features(scenario: Scenario) -> set[str]:
    """The disagreements a scenario holds, to see that the strategy reaches them."""
    found: set[str] = set()
    for seen in sightings(scenario).values():
        statuses = [s.run.status for s in seen]
        if any(
            s.run.status is Status.RUNNING and s.obs.stage == ABORT.index(Status.ABORTING)
            for s in seen
        ):
            found.add("v1 showed an aborting run as running")
        if any(STATUS_RANK[a] > STATUS_RANK[b] for a, b in itertools.pairwise(statuses)):
            found.add("a stale observation after a newer one")
        if len({s.run.source for s in seen}) == 2:
            found.add("both endpoints saw one run")
        if set(statuses) == {Status.UNKNOWN}:
            found.add("a run only ever seen as unknown")
        if several_contents_at_top(seen):
            found.add("two contents at the top rank")
        if scenario.apart[seen[0].obs.run] and len({s.run.origin for s in seen}) == 2:
            found.add("the endpoints spelled one run differently")
    if any(len({o.run for o in b.obs}) < len(b.obs) for b in scenario.batches):
        found.add("a slug twice in one batch")
    return found


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis/ in the checkout; the regressions are explicit below
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the properties ---------------------------------------------------------------


@PROPERTY
@given(scenarios())
@example(  # v2 says aborting, then v1 (which cannot say aborting) says running: stays aborting
    scenario([ABORT], [(V2, [(0, 2)]), (V1, [(0, 2)])])
)
@example(  # v1 says aborted, then v2 says aborting: stays aborted
    scenario([ABORT], [(V1, [(0, 3)]), (V2, [(0, 2)])])
)
@example(  # terminal seen before ready: stays terminal, history has both
    scenario([SUCCEED], [(V2, [(0, 2)]), (V1, [(0, 0)])])
)
@example(  # the same within one batch, the slug twice; another run aborted before running
    scenario([SUCCEED, ABORT], [(V1, [(0, 2), (1, 3), (0, 0), (1, 1)])])
)
def test_any_interleaving_converges_to_the_lifecycle_state(db_url: str, scenario: Scenario) -> None:
    for feature in features(scenario):
        event(feature)  # shown by --hypothesis-show-statistics
    asyncio.run(converge(db_url, scenario, by_stage=False, exempt=several_contents_at_top))


@PROPERTY
@given(scenarios())
@example(  # v2 and v1 spell `origin` differently: replaying the v2 item rewrites the row
    scenario(
        [[Status.READY]], [(V2, [(0, 0)]), (V1, [(0, 0)])], [(V2, [(0, 0)]), (V1, [(0, 0)])], [True]
    )
)
def test_endpoints_that_disagree_never_rewrite_a_row_on_replay(
    db_url: str, scenario: Scenario
) -> None:
    asyncio.run(converge(db_url, scenario, by_stage=False, exempt=one_endpoint_several_contents))


@pytest.mark.xfail(
    strict=True,
    reason=(
        "syncd orders observations by status only; v1 shows an aborting run as running (2), "
        "so the running and the aborting stage tie and the stale one can win: v1 "
        "aborting-as-running then v2 running stores the running stage (usage 0.019 -> 0.012), "
        "and replaying v1 running, v1 aborting-as-running rewrites the row each time"
    ),
)
@PROPERTY
@given(scenarios())
@example(  # the stale stage's content wins
    scenario([ABORT], [(V1, [(0, 2)]), (V2, [(0, 1)])])
)
@example(  # replaying the same two v1 polls rewrites the row, twice
    scenario([ABORT], [(V1, [(0, 1)]), (V1, [(0, 2)])], [(V1, [(0, 1)]), (V1, [(0, 2)])])
)
def test_furthest_stage_wins_and_a_replay_writes_nothing(db_url: str, scenario: Scenario) -> None:
    asyncio.run(converge(db_url, scenario, by_stage=True, exempt=never))


def test_the_examples_say_what_they_claim() -> None:
    """The explicit examples above are the disagreements their comments name."""
    seen = sightings(scenario([ABORT], [(V2, [(0, 2)]), (V1, [(0, 2)])]))[0]
    assert [(s.run.status, s.run.status_raw) for s in seen] == [
        (Status.ABORTING, "aborting"),
        (Status.RUNNING, "2"),
    ]
    assert {r["status"] for r in acceptable_rows(seen, by_stage=False)} == {"aborting"}

    seen = sightings(scenario([ABORT], [(V1, [(0, 3)]), (V2, [(0, 2)])]))[0]
    assert [(s.run.status, s.run.status_raw) for s in seen] == [
        (Status.ABORTED, "5"),
        (Status.ABORTING, "aborting"),
    ]
    (row,) = acceptable_rows(seen, by_stage=False)
    assert (row["status"], row["status_raw"], row["source"]) == ("aborted", "5", "v1")
    assert row["finished_at"] is not None and row["usage_usd"] == Decimal("0.020")

    seen = sightings(scenario([SUCCEED], [(V2, [(0, 2)]), (V1, [(0, 0)])]))[0]
    assert {r["status"] for r in acceptable_rows(seen, by_stage=False)} == {"succeeded"}
    assert {h[0] for h in expected_history(seen)} == {"succeeded", "ready"}

    apart = scenario([[Status.READY]], [(V2, [(0, 0)]), (V1, [(0, 0)])], apart=[True])
    seen = sightings(apart)[0]
    assert [s.run.origin for s in seen] == ["openapi", "api"]
    assert several_contents_at_top(seen) and not one_endpoint_several_contents(seen)

    seen = sightings(scenario([ABORT], [(V1, [(0, 2)]), (V2, [(0, 1)])]))[0]
    assert [s.run.status for s in seen] == [Status.RUNNING, Status.RUNNING]
    (row,) = acceptable_rows(seen, by_stage=True)
    assert row["usage_usd"] == Decimal("0.019")  # the aborting stage's


async def tables_after(engine: AsyncEngine, scenario: Scenario, *, skip_known: bool) -> Any:
    """Every table after the scenario and its replay (xmin aside: it counts transactions)."""
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
    store = Store(engine)
    await apply(store, scenario, scenario.batches, 0, skip_known=skip_known)
    await apply(store, scenario, scenario.replay, len(scenario.batches), skip_known=skip_known)
    tables = await snapshot(engine)
    return {name: [{k: v for k, v in row.items() if k != "xmin"} for row in rows]
            for name, rows in tables.items()}  # fmt: skip


@PROPERTY
@given(scenarios())
@example(  # v1 and v2 alike, then v2 moves on, then v1's older copy, all replayed
    scenario([SUCCEED], [(V1, [(0, 1)]), (V2, [(0, 1)]), (V2, [(0, 2)]), (V1, [(0, 1)])])
)
def test_leaving_out_runs_stored_just_so_changes_no_table(db_url: str, scenario: Scenario) -> None:
    """The store leaves out runs it stored exactly as observed (recent.py): every table
    ends as it does when every run goes to the merge."""

    async def both() -> tuple[Any, Any]:
        engine = create_engine(
            db_url, connect_args={"server_settings": {"synchronous_commit": "off"}}
        )
        try:
            return (
                await tables_after(engine, scenario, skip_known=True),
                await tables_after(engine, scenario, skip_known=False),
            )
        finally:
            await engine.dispose()

    skipping, sending = asyncio.run(both())
    assert skipping == sending
