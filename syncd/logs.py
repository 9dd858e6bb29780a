"""structlog set-up: JSON or console lines on stderr, with secrets scrubbed from every event."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable, MutableMapping
from typing import Any

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


def configure_logging(
    *, fmt: str = "json", level: str = "INFO", secrets: Iterable[str] = (), stream: Any = None
) -> None:
    """Configure structlog once per process."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        SecretScrubber(secrets),
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries log through stdlib logging: keep their warnings, drop their chatter.
    logging.basicConfig(
        level=logging.WARNING,
        stream=stream or sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # "skipped: maximum number of running instances reached" is the designed
    # behaviour when a cycle outlasts its interval, not something to warn about.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); the fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
