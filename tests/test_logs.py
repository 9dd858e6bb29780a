"""Logging: structured events on stderr, secrets scrubbed whatever the code passes in."""

from __future__ import annotations

import io
import json

import structlog

from syncd.logs import SecretScrubber, configure_logging


def test_scrubber_replaces_secrets_everywhere() -> None:
    """Secrets inside strings, nested containers and exceptions become ***."""
    scrub = SecretScrubber(["sk-secret-1", "dbpass99"])
    event = scrub(None, "info", {
        "event": "x", "url": "https://h/?token=sk-secret-1",
        "nested": {"list": ["dbpass99", 3]}, "error": ValueError("bad sk-secret-1"),
    })  # fmt: skip
    assert event["url"] == "https://h/?token=***"
    assert event["nested"] == {"list": ["***", 3]}
    assert event["error"] == "ValueError: bad ***"


def test_short_values_are_not_treated_as_secrets() -> None:
    """A 1-3 character 'secret' would shred every log line, so it is ignored."""
    assert SecretScrubber(["ab"])(None, "info", {"event": "abc"}) == {"event": "abc"}


def test_json_lines_carry_event_level_and_time_without_secrets() -> None:
    """The JSON format writes one parseable object per event, scrubbed."""
    out = io.StringIO()
    configure_logging(fmt="json", level="INFO", secrets=["sk-secret-1"], stream=out)
    try:
        structlog.get_logger("t").info("cycle_finished", stream="v1", note="key sk-secret-1")
        structlog.get_logger("t").debug("hidden_below_level")
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "cycle_finished" and event["level"] == "info"
    assert event["note"] == "key ***" and "timestamp" in event
