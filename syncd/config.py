"""Typed settings, read once from the environment (and `.env`), then passed down.

Nothing else in syncd reads `os.environ`.  Secrets are `SecretStr`, so the
API key and the database password never show in `repr`, logs or errors.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import platformdirs
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from syncd.endpoints import ENDPOINTS, V1_RUN_LIST, V2_WORKER_RUNS
from syncd.errors import ConfigError
from syncd.models import OffsetMode, Source
from syncd.ratemath import RatePolicy

DEFAULT_API_URL = "https://openapi.coreclaw.com"
_V1_CAP, _V2_CAP = V1_RUN_LIST.max_page_size, V2_WORKER_RUNS.max_page_size


class AuthMode(StrEnum):
    BEARER = "bearer"
    API_KEY = "api-key"
    QUERY = "query"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def _env(name: str) -> Any:
    """Bind a field to exactly one documented variable name."""
    return AliasChoices(name)


class Settings(BaseSettings):
    """All of syncd's configuration. Build it with `load_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix="SYNCD_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    api_url: str = DEFAULT_API_URL
    auth_mode: AuthMode = AuthMode.BEARER
    ca_bundle: Path | None = None
    database_url: SecretStr | None = None
    database_url_file: Path | None = None  # read at start-up when database_url is unset
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("syncd")))

    poll_interval_v1_s: float = Field(60.0, gt=0, validation_alias=_env("SYNCD_POLL_INTERVAL_V1"))
    poll_interval_v2_s: float = Field(60.0, gt=0, validation_alias=_env("SYNCD_POLL_INTERVAL_V2"))
    # Each stream's fields are named by its Endpoint (endpoints.py), which also caps the size.
    page_size_v1: int = Field(100, ge=1, le=_V1_CAP)
    page_size_v2: int = Field(_V2_CAP, ge=1, le=_V2_CAP)
    v2_offset_mode: OffsetMode = OffsetMode.AUTO
    max_pages: int = Field(100_000, ge=1)

    # Incremental cycles: stop paging the head after this many stored, terminal,
    # unchanged runs in a row; a full reconciliation scan every so often.
    head_overlap: int = Field(20, ge=1)
    reconcile_interval_s: float = Field(86_400.0, ge=0)  # 0: never
    reconcile_hour_utc: int | None = Field(None, ge=0, le=23)  # start reconciliations in this hour
    backfill_batch_rows: int = Field(2_000, ge=1)
    webhook_token: SecretStr | None = None

    # The request controller finds the rate and the requests in flight upstream grants
    # (ratelimit.py); these only bound it.  No ceiling unless one is set.
    max_requests_per_s: float | None = Field(None, gt=0)
    initial_requests_per_s: float = Field(10.0, gt=0)
    max_concurrency: int = Field(32, ge=1, le=256)

    http_timeout_s: float = Field(30.0, gt=0)
    # How long a lost database connection is retried before a cycle fails.
    db_retry_s: float = Field(60.0, ge=0)
    max_retries: int = Field(8, ge=0)
    max_backoff_s: float = Field(120.0, gt=0)
    retry_after_floor_s: float = Field(0.5, ge=0)

    log_format: LogFormat | None = None  # None: console on a terminal, JSON otherwise
    log_level: str = "INFO"
    http_port: int = Field(8080, ge=0, le=65535)
    http_host: str = "0.0.0.0"

    @field_validator(
        "api_key_file",
        "ca_bundle",
        "database_url_file",
        "reconcile_hour_utc",
        "max_requests_per_s",
        mode="before",
    )
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        # Compose and shells pass unset variables as "": that means "not set", not ".".
        return None if value == "" else value

    @model_validator(mode="before")
    @classmethod
    def _database_url_from_file(cls, data: Any) -> Any:
        # SYNCD_DATABASE_URL wins; the file (a Docker secret) only fills it in.
        # Read here, once, so everything downstream (and the log scrubber) sees the URL.
        if not isinstance(data, dict):
            return data
        current = data.get("database_url")
        if isinstance(current, SecretStr):
            current = current.get_secret_value()
        path = data.get("database_url_file")
        if current or path is None or path == "":
            return data
        variable = "SYNCD_DATABASE_URL_FILE"
        text = read_secret_file(variable, Path(path))
        try:
            url = normalise_database_url(text)
        except ValueError as exc:
            raise ConfigError(f"{variable}: {path} holds no usable URL: {exc}") from None
        return {**data, "database_url": url}

    @field_validator("v2_offset_mode", mode="before")
    @classmethod
    def _pages_means_pages0(cls, value: Any) -> Any:
        # "pages" was the only page reading before 1-based pages were known.
        return OffsetMode.PAGES0 if isinstance(value, str) and value.lower() == "pages" else value

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        return SecretStr(normalise_database_url(value.get_secret_value()))

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    def resolved_api_key(self) -> SecretStr | None:
        """The API key, from SYNCD_API_KEY or the file SYNCD_API_KEY_FILE names."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key
        if self.api_key_file is not None:
            return SecretStr(read_secret_file("SYNCD_API_KEY_FILE", self.api_key_file))
        return None

    def rate_policy(self) -> RatePolicy:
        ceiling = self.max_requests_per_s
        initial = self.initial_requests_per_s
        return RatePolicy(
            max_rate_per_s=ceiling,
            initial_rate_per_s=initial if ceiling is None else min(initial, ceiling),
            min_rate_per_s=0.1 if ceiling is None else min(0.1, ceiling),
            max_concurrency=self.max_concurrency,
        )

    def poll_interval_s(self, stream: Source | str) -> float:
        """Seconds between cycles of `stream` (its endpoint names the setting)."""
        return float(getattr(self, ENDPOINTS[Source(stream)].poll_interval_setting))

    def page_size(self, stream: Source | str) -> int:
        """Items per request of `stream` (its endpoint names the setting)."""
        return int(getattr(self, ENDPOINTS[Source(stream)].page_size_setting))

    def secrets(self) -> list[str]:
        """Every secret value in this config, also URL-encoded, for the log scrubber."""
        try:
            key = self.resolved_api_key()  # from SYNCD_API_KEY_FILE too
        except ConfigError:
            key = None  # reported when the key is needed, not by the log set-up
        found: list[str] = []
        for secret in (key, self.webhook_token):
            if secret is not None and secret.get_secret_value():
                found.append(secret.get_secret_value())
        if self.database_url is not None:
            password = make_url(self.database_url.get_secret_value()).password
            if password:
                found.append(str(password))
        return list(dict.fromkeys(form for value in found for form in _encoded_forms(value)))


def normalise_database_url(raw: str) -> str:
    """Accept any Postgres URL spelling and return the asyncpg one SQLAlchemy needs."""
    try:
        url: URL = make_url(raw)
    except ArgumentError:
        raise ValueError("must be a URL like postgresql://user:password@host:5432/dbname") from None
    backend = url.get_backend_name()
    if backend not in {"postgresql", "postgres"}:
        raise ValueError(f"must be a PostgreSQL URL, not {backend!r}")
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def read_secret_file(variable: str, path: Path) -> str:
    """The stripped text of a secret file; unreadable or empty is a ConfigError naming `variable`.

    The file's content never appears in the error.
    """
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}: {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{variable}: {path} is empty")
    return text


def _encoded_forms(secret: str) -> list[str]:
    """A secret as it may appear inside URLs and URL-quoting error messages."""
    forms = [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        quote(secret, safe=" +"),  # SQLAlchemy's rendering of a password
        quote(secret, safe="/?:@"),  # close to how a query string carries it
    ]
    return list(dict.fromkeys(forms))


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and status output."""
    return make_url(url).render_as_string(hide_password=True)


def _field_env_name(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"SYNCD_{name.upper()}" if not name.startswith("SYNCD_") else name


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"{_field_env_name(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
