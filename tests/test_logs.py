"""Logging: structured events on stderr, secrets scrubbed whatever the code passes in."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import sys
import warnings

import pytest
import structlog

from syncd.logs import SecretScrubber, TerminalSink, configure_logging


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
        structlog.get_logger("syncd.t").info("cycle_finished", stream="v1", note="key sk-secret-1")
        structlog.get_logger("syncd.t").debug("hidden_below_level")
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "cycle_finished" and event["level"] == "info"
    assert event["note"] == "key ***" and "timestamp" in event


def _configured(fmt: str, secrets: list[str] | None = None) -> io.StringIO:
    logging.captureWarnings(False)  # pytest swaps warnings.showwarning between tests
    out = io.StringIO()
    configure_logging(fmt=fmt, level="INFO", secrets=secrets or [], stream=out)
    return out


def test_library_records_are_json_scrubbed_and_structured() -> None:
    """A library's stdlib record (APScheduler's job error, with its traceback), a Python
    warning and syncd's own event: each one JSON object on one line, secrets scrubbed,
    the exception as data rather than a plain-text traceback."""
    out = _configured("json", ["sk-secret-1"])
    try:
        try:
            raise RuntimeError("lock timeout sk-secret-1")
        except RuntimeError as exc:
            logging.getLogger("apscheduler.executors.default").error(
                "Job raised an exception", exc_info=exc
            )
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # this suite otherwise turns warnings into errors
            warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
        logging.getLogger("aiohttp.access").info("chatter below WARNING is dropped")
        structlog.get_logger("syncd.t").info("cycle_finished")
    finally:
        structlog.reset_defaults()
        logging.captureWarnings(False)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events][0::2] == ["Job raised an exception", "cycle_finished"]
    job = events[0]
    assert job["logger"] == "apscheduler.executors.default" and job["level"] == "error"
    assert job["exception"][0]["exc_type"] == "RuntimeError"
    assert job["exception"][0]["exc_value"] == "lock timeout ***"
    assert "sk-secret-1" not in out.getvalue()
    assert events[1]["logger"] == "py.warnings" and "deprecated thing" in events[1]["event"]


def test_console_lines_for_people() -> None:
    """The console format: one readable line per event, secrets scrubbed, no JSON."""
    out = _configured("console", ["sk-secret-1"])
    try:
        structlog.get_logger("syncd.t").warning("upstream_slow", key="sk-secret-1")
    finally:
        structlog.reset_defaults()
    (line,) = out.getvalue().splitlines()
    assert "upstream_slow" in line and "key=***" in line and not line.startswith("{")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _screen(raw: str) -> list[str]:
    """What a terminal shows: "\\r\\033[K" clears the line, "\\n" starts a new one."""
    lines = [""]
    for chunk in re.split(r"(\r\x1b\[K|\n)", raw):
        if chunk == "\r\x1b[K":
            lines[-1] = ""
        elif chunk == "\n":
            lines.append("")
        else:
            lines[-1] += chunk
    return lines


def test_log_lines_never_run_into_the_status_line() -> None:
    """A log line written while a progress bar is drawn lands on its own line, and the bar
    is drawn again below it; ending the bar leaves its last state on screen."""
    sink = TerminalSink(_Terminal())
    sink.show_status("v1 [####    ] 50%")
    sink.write("2026-12-01 [info] cycle_started\n")
    sink.show_status("v1 [########] 100%")
    sink.end_status()
    sink.write("done\n")
    screen = _screen(sink.stream.getvalue())  # type: ignore[attr-defined]
    assert screen == ["2026-12-01 [info] cycle_started", "v1 [########] 100%", "done", ""]


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
def test_format_follows_the_terminal_unless_set(tty: bool) -> None:
    """With SYNCD_LOG_FORMAT unset, a command's error is a plain line on a terminal and a
    JSON object otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(SYNCD_POLL_INTERVAL_V2="0")  # a bad setting: fails before anything runs
    command = [sys.executable, "-m", "syncd", "status"]
    if tty:
        primary, secondary = pty.openpty()
        try:
            proc = subprocess.run(command, env=env, stderr=secondary, timeout=60, check=False)
            os.close(secondary)
            err = os.read(primary, 65536).decode()
        finally:
            os.close(primary)
    else:
        proc = subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)
        err = proc.stderr.decode()
    assert proc.returncode == 2
    (line,) = err.strip().splitlines()
    if tty:
        assert line.startswith("syncd: ") and "SYNCD_POLL_INTERVAL_V2" in line
    else:
        assert json.loads(line)["event"] == "command_failed"


def test_an_uncaught_exception_is_one_json_object() -> None:
    """Even a bug's traceback, in JSON mode, is one parseable line with the frames as data."""
    code = (
        "from syncd.logs import configure_logging\n"
        "configure_logging(fmt='json')\n"
        "raise RuntimeError('a bug')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 1
    (line,) = proc.stderr.decode().strip().splitlines()
    event = json.loads(line)
    assert event["event"] == "uncaught_exception" and event["level"] == "critical"
    assert event["exception"][0]["exc_value"] == "a bug" and event["exception"][0]["frames"]
