"""Settings for syncing a simulator into a database, in process.

`settings_for` sets what every such run needs (the simulator's URL and key,
the database, no HTTP port, no .env file) and takes everything else as
overrides; the presets below name the configurations that recur.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from syncd.config import Settings, load_settings

# A local simulator answers at once: let the limiter start and stay high.
LOCAL_RATE: dict[str, Any] = {"max_requests_per_s": 400.0, "initial_requests_per_s": 200.0}
# Above anything a local simulator turns into a bottleneck: figures measure syncd, not the limiter.
UNLIMITED_RATE: dict[str, Any] = {"max_requests_per_s": 1000.0, "initial_requests_per_s": 1000.0}
# A hostile upstream: many quick retries, short backoff.
# Small pages and 0.5 s intervals: several daemon cycles in well under a second, and a
# stream stale ten seconds later.
QUICK: dict[str, Any] = {
    "page_size_v1": 25, "page_size_v2": 25, "poll_interval_v1_s": 0.5,
    "poll_interval_v2_s": 0.5, "max_requests_per_s": 100.0, "initial_requests_per_s": 50.0,
}  # fmt: skip
FAULT_TOLERANT: dict[str, Any] = {
    "max_requests_per_s": 500.0,
    "initial_requests_per_s": 500.0,
    "max_retries": 12,
    "retry_after_floor_s": 0.01,
}


def settings_for(api_url: str, db_url: str | None, key: str, **overrides: Any) -> Settings:
    """Settings against the simulator at `api_url` (answering to `key`) and `db_url`."""
    values: dict[str, Any] = {
        "_env_file": None,
        "api_url": api_url,
        "api_key": SecretStr(key),
        "http_port": 0,
    }
    if db_url is not None:
        values["database_url"] = SecretStr(db_url)
    values.update(overrides)
    return load_settings(**values)
