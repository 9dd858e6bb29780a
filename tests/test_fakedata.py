"""The simulator's dataset: listings computed by arithmetic agree with a plain filter over
every run, newest first, deterministic per seed, with churn at the head."""

from __future__ import annotations

import hashlib

import pytest

from syncd.fakedata import CYCLE, IN_FLIGHT, TERMINAL, Dataset, hasher, mix, ulid

RUNS = 2 * CYCLE + 300  # more than one period of the tables, so the arithmetic wraps


@pytest.fixture(scope="module")
def data() -> Dataset:
    return Dataset(runs=RUNS, seed=7, workers=5, in_flight=40)


def brute_force(data: Dataset, worker: int | None, statuses: frozenset[str] | None) -> list[int]:
    """Every good run matching the filter, newest first, by looking at each one."""
    return [
        g
        for g in reversed(range(data.total))
        if (worker is None or data.worker_of(g) is data.workers[worker])
        and (statuses is None or data.status(g) in statuses)
    ]


@pytest.mark.parametrize(
    ("worker", "statuses"),
    [
        (None, None),
        (0, None),
        (3, None),
        (None, frozenset({"failed"})),
        (None, IN_FLIGHT),
        (1, frozenset({"succeeded", "aborted"})),
        (4, TERMINAL),
    ],
)
def test_listing_agrees_with_a_plain_filter(
    data: Dataset, worker: int | None, statuses: frozenset[str] | None
) -> None:
    """count and entries of a filtered listing are exactly the matching runs, newest first."""
    listing = data.select(worker, statuses)
    expected = brute_force(data, worker, statuses)
    assert listing.count == len(expected)
    assert listing.entries(0, listing.count) == expected
    assert listing.entries(5, 17) == expected[5:17]  # any window, not only from the top
    assert listing.entries(listing.count - 3, listing.count + 50) == expected[-3:]  # clipped


def test_bad_items_sit_after_every_bad_every_good_runs() -> None:
    """With bad records on, the unfiltered listing has one bad entry after every
    `bad_every` good runs of the static region; filtered listings and truth have none."""
    data = Dataset(runs=100, seed=1, workers=2, in_flight=0, bad_every=9)
    entries = data.select().entries(0, data.select().count)
    assert entries[9] < 0 and entries[19] < 0 and all(e >= 0 for e in entries[:9])
    assert [e for e in entries if e >= 0] == list(reversed(range(100)))
    assert len([e for e in entries if e < 0]) == 100 // 9
    assert all(e >= 0 for e in data.select(0, None).entries(0, 100))
    assert len(data.truth()) == 100


def test_truth_is_newest_first_with_ties_broken_by_slug(data: Dataset) -> None:
    """Runs are listed by started_at descending, then slug descending; slugs are unique."""
    truth = data.truth()
    keys = [(r["started_at"], r["slug"]) for r in truth]
    assert keys == sorted(keys, reverse=True)
    assert len({r["slug"] for r in truth}) == len(truth) == RUNS


def test_the_dataset_is_a_function_of_its_seed() -> None:
    """The same seed gives the same runs; another seed other ones."""
    one, again = (Dataset(runs=50, seed=3, workers=3, in_flight=5) for _ in range(2))
    other = Dataset(runs=50, seed=4, workers=3, in_flight=5)
    assert one.truth() == again.truth()
    assert [r["slug"] for r in one.truth()] != [r["slug"] for r in other.truth()]


def test_a_tick_adds_runs_at_the_head_and_leaves_the_static_region_alone() -> None:
    """Churn adds runs at the head of the list and moves in-flight ones on; the terminal runs
    of the static region never change."""
    data = Dataset(runs=200, seed=5, workers=3, in_flight=10)
    before = data.truth()
    for _ in range(30):
        data.tick(add=2, advance=3)
    after = data.truth()
    assert len(after) == 260 and after[0]["started_at"] > before[0]["started_at"]
    assert after[-190:] == before[-190:]
    assert {r["slug"] for r in before} <= {r["slug"] for r in after}
    moved = {r["slug"] for r in before[:10]} - {
        r["slug"] for r in after if r["status"] in IN_FLIGHT
    }
    assert moved  # some of the initially in-flight runs have finished


def _ulid_by_five_bits(ms: int, rand: int) -> str:
    n = ((ms & ((1 << 48) - 1)) << 80) | (rand & ((1 << 80) - 1))
    return "".join(
        "0123456789ABCDEFGHJKMNPQRSTVWXYZ"[(n >> (5 * i)) & 31] for i in range(25, -1, -1)
    )


@pytest.mark.parametrize(
    ("ms", "rand"),
    [(0, 0), ((1 << 48) - 1, (1 << 80) - 1), (1 << 48, 1 << 80), (1_700_000_000_123, 0xABCDEF)],
)
def test_ulid_is_crockford_base32_of_time_and_randomness(ms: int, rand: int) -> None:
    """26 characters, 5 bits each, time first; bits beyond 48 and 80 are dropped."""
    got = ulid(ms, rand)
    assert len(got) == 26 and got == _ulid_by_five_bits(ms, rand)


def _served(data: Dataset, entries: list[int]) -> str:
    digest = hashlib.sha256()
    for api in ("v1", "v2"):
        for entry in entries:
            digest.update(data.item(entry, api) + b"\n")
    return digest.hexdigest()


def test_what_the_simulator_serves_is_pinned_by_its_seed() -> None:
    """Every item both endpoints serve, bad ones and churned ones too, is byte for byte
    what it was when this digest was taken: the simulator's speed-ups (it renders every
    item of a million-run backfill) must not change its data.  A change meant to change
    the data updates the digests."""
    data = Dataset(runs=3 * CYCLE + 500, seed=7, workers=5, in_flight=40, bad_every=97)
    listing = data.select()
    assert listing.count == 12_919
    assert (
        _served(data, listing.entries(0, listing.count))
        == "d6502bfaabc0afe35cb91d62e428150a1d0cb9c57c341bba2b891c574d0f789a"
    )
    data.tick(add=30, advance=20)
    assert (
        _served(data, data.select().entries(0, 200))
        == "7a86710b68068bb8a7d2afb39fcab52c6a3cb36fc7138c1aadfe09125c16e2ea"
    )


def _splitmix(seed: int, g: int, salt: int) -> int:
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + g * 0xBF58476D1CE4E5B9 + salt * 0x94D049BB133111EB) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


@pytest.mark.parametrize("salt", [0, 1, 11, 99])
def test_mix_and_a_hasher_are_splitmix64_of_seed_index_and_salt(salt: int) -> None:
    indices = (0, 1, 4095, 10**9, 2**40 + 3)
    assert [hasher(7, salt)(g) for g in indices] == [_splitmix(7, g, salt) for g in indices]
    assert [mix(7, g, salt) for g in indices] == [_splitmix(7, g, salt) for g in indices]
