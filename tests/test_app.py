"""The composition root's own decisions: which streams, demo mode or not, which streams are free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from syncd.app import DEMO_POLL_INTERVAL_S, all_streams, demo_upstream, is_demo, leased_streams
from syncd.config import load_settings
from syncd.models import Source
from syncd.storage import StreamLease


@pytest.mark.parametrize(
    ("choice", "streams"),
    [(None, [Source.V1, Source.V2]), ("", [Source.V1, Source.V2]), ("v2", [Source.V2])],
)
def test_all_streams_or_the_one_chosen(choice: str | None, streams: list[Source]) -> None:
    """No choice means every endpoint's stream; a choice means that one only."""
    assert all_streams(choice) == streams


def test_an_unknown_stream_is_refused() -> None:
    """A stream name that is no endpoint's is an error, not an empty list."""
    with pytest.raises(ValueError, match="v3"):
        all_streams("v3")


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("values", "demo"),
    [
        ({}, True),
        ({"api_key": SecretStr("")}, True),  # an empty key is no key
        ({"api_key": SecretStr("k" * 16)}, False),
        ({"database_url": SecretStr("postgresql://u@db/x")}, False),
    ],
)
def test_demo_only_without_key_and_database(values: dict[str, Any], demo: bool) -> None:
    """`run` syncs the built-in simulator only when neither a key nor a database is given."""
    assert is_demo(load_settings(**values)) is demo


@pytest.mark.usefixtures("clean_env")
def test_a_key_from_a_file_is_no_demo(tmp_path: Path) -> None:
    """SYNCD_API_KEY_FILE counts as a key: no demo."""
    (tmp_path / "key").write_text("k" * 16)
    assert not is_demo(load_settings(api_key_file=tmp_path / "key"))


@pytest.mark.usefixtures("clean_env")
async def test_demo_upstream_leaves_real_settings_alone() -> None:
    """With a key configured, demo_upstream yields the settings it was given."""
    settings = load_settings(api_key="k" * 16)
    async with demo_upstream(settings) as used:
        assert used is settings


@pytest.mark.usefixtures("clean_env")
async def test_demo_polls_often_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Demo mode syncs the simulator every few seconds; an explicit interval still wins."""
    monkeypatch.setenv("SYNCD_POLL_INTERVAL_V2", "42")
    async with demo_upstream(load_settings()) as demo:
        assert demo.api_url.startswith("http://127.0.0.1:")
        assert demo.resolved_api_key() is not None
        assert (demo.poll_interval_v1_s, demo.poll_interval_v2_s) == (DEMO_POLL_INTERVAL_S, 42.0)


async def test_leased_streams_are_those_no_other_process_holds(engine: AsyncEngine) -> None:
    """A second process gets only the streams the first does not hold, and says which it skips."""
    first, second = StreamLease(engine), StreamLease(engine)
    try:
        assert await leased_streams(first, [Source.V1]) == [Source.V1]
        with capture_logs() as logs:
            free = await leased_streams(second, [Source.V1, Source.V2])
        assert free == [Source.V2]
        skipped = [e for e in logs if e["event"] == "stream_skipped"]
        assert [e["stream"] for e in skipped] == ["v1"]
    finally:
        await first.release()
        await second.release()
