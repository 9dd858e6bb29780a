"""Configuration: the SPEC's variables, clear one-line errors, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import AuthMode, LogFormat, load_settings
from syncd.errors import ConfigError
from syncd.models import OffsetMode

pytestmark = pytest.mark.usefixtures("clean_env")


def test_spec_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SPEC §4 variable lands in its typed field."""
    monkeypatch.setenv("SYNCD_API_KEY", "k-123456")
    monkeypatch.setenv("SYNCD_API_URL", "http://127.0.0.1:9999/")
    monkeypatch.setenv("SYNCD_DATABASE_URL", "postgresql://u:pw@db:5432/syncd")
    monkeypatch.setenv("SYNCD_POLL_INTERVAL_V1", "15")
    monkeypatch.setenv("SYNCD_POLL_INTERVAL_V2", "2.5")
    monkeypatch.setenv("SYNCD_LOG_FORMAT", "console")
    monkeypatch.setenv("SYNCD_HTTP_PORT", "9100")
    monkeypatch.setenv("SYNCD_AUTH_MODE", "api-key")
    monkeypatch.setenv("SYNCD_V2_OFFSET_MODE", "pages")
    s = load_settings()
    assert s.api_key is not None and s.api_key.get_secret_value() == "k-123456"
    assert s.api_url == "http://127.0.0.1:9999"
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "postgresql+asyncpg://u:pw@db:5432/syncd"
    assert (s.poll_interval_v1_s, s.poll_interval_v2_s) == (15.0, 2.5)
    assert s.log_format is LogFormat.CONSOLE and s.http_port == 9100
    assert s.auth_mode is AuthMode.API_KEY and s.v2_offset_mode is OffsetMode.PAGES0


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    """A .env file in the working directory configures syncd too."""
    (tmp_path / ".env").write_text("SYNCD_POLL_INTERVAL_V1=42\nSYNCD_API_KEY=from-dotenv\n")
    s = load_settings()
    assert s.poll_interval_v1_s == 42.0
    assert s.api_key is not None and s.api_key.get_secret_value() == "from-dotenv"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@h/db",
        "postgresql+asyncpg://u:pw@h/db",
        "postgres://u:pw@h/db",
        "postgresql+psycopg://u:pw@h/db",
    ],
)
def test_database_url_spellings_become_asyncpg(url: str) -> None:
    """Any Postgres URL spelling is accepted and driven through asyncpg."""
    s = load_settings(database_url=url)
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "postgresql+asyncpg://u:pw@h/db"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SYNCD_POLL_INTERVAL_V1", "0", "SYNCD_POLL_INTERVAL_V1: Input should be greater than 0"),
        ("SYNCD_POLL_INTERVAL_V2", "-3", "SYNCD_POLL_INTERVAL_V2: Input should be greater than 0"),
        (
            "SYNCD_POLL_INTERVAL_V2",
            "soon",
            "SYNCD_POLL_INTERVAL_V2: Input should be a valid number",
        ),
        ("SYNCD_DATABASE_URL", "not a url", "SYNCD_DATABASE_URL: Value error, must be a URL"),
        ("SYNCD_DATABASE_URL", "mysql://u@h/db", "must be a PostgreSQL URL"),
        ("SYNCD_AUTH_MODE", "cookie", "SYNCD_AUTH_MODE: Input should be 'bearer', 'api-key'"),
        ("SYNCD_API_URL", "ftp://x", "SYNCD_API_URL: Value error, must be an http"),
        ("SYNCD_V2_OFFSET_MODE", "rows", "SYNCD_V2_OFFSET_MODE"),
        ("SYNCD_LOG_FORMAT", "xml", "SYNCD_LOG_FORMAT"),
        ("SYNCD_HTTP_PORT", "70000", "SYNCD_HTTP_PORT"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    """A bad value stops start-up with one line naming the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert message in text and "\n" not in text


def test_secrets_never_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """repr hides the API key and DB password; so does a config error about the URL."""
    s = load_settings(api_key="sk-very-secret", database_url="postgresql://u:hunter2pw@h/db")
    assert "sk-very-secret" not in repr(s) and "hunter2pw" not in repr(s)
    assert set(s.secrets()) == {"sk-very-secret", "hunter2pw"}
    monkeypatch.setenv("SYNCD_DATABASE_URL", "mysql://u:hunter2pw@h/db")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter2pw" not in str(info.value)


def test_api_key_from_file(tmp_path: Path) -> None:
    """SYNCD_API_KEY_FILE (Docker secrets) supplies the key, whitespace trimmed."""
    key_file = tmp_path / "key"
    key_file.write_text("from-file-key\n")
    s = load_settings(api_key_file=str(key_file))
    key = s.resolved_api_key()
    assert key is not None and key.get_secret_value() == "from-file-key"


@pytest.mark.parametrize("content", [None, ""])
def test_unreadable_or_empty_key_file_is_a_config_error(
    tmp_path: Path, content: str | None
) -> None:
    """A missing or empty key file is reported with the variable's name."""
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    s = load_settings(api_key_file=str(key_file))
    with pytest.raises(ConfigError, match="SYNCD_API_KEY_FILE"):
        s.resolved_api_key()


def test_empty_path_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """SYNCD_API_KEY_FILE= (empty, as compose passes it) is not the current directory."""
    monkeypatch.setenv("SYNCD_API_KEY_FILE", "")
    monkeypatch.setenv("SYNCD_CA_BUNDLE", "")
    s = load_settings()
    assert s.api_key_file is None and s.ca_bundle is None and s.resolved_api_key() is None


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("SYNCD_RECONCILE_HOUR_UTC", "reconcile_hour_utc"),
        ("SYNCD_MAX_REQUESTS_PER_S", "max_requests_per_s"),
        ("SYNCD_DATABASE_URL_FILE", "database_url_file"),
    ],
)
def test_empty_optional_variables_mean_unset(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    """An optional variable passed empty (compose's unset) is unset, not a validation error."""
    monkeypatch.setenv(variable, "")
    assert getattr(load_settings(), field) is None


def test_defaults_follow_the_spec() -> None:
    """With nothing set: the vendor's URL, Bearer auth, the embedded database, offset detection,
    no rate ceiling and 60 s polls."""
    s = load_settings()
    assert s.api_url == "https://openapi.coreclaw.com"
    assert s.auth_mode is AuthMode.BEARER and s.database_url is None
    assert s.v2_offset_mode is OffsetMode.AUTO and s.max_requests_per_s is None
    assert (s.poll_interval_s("v1"), s.poll_interval_s("v2")) == (60.0, 60.0)


def test_each_stream_polls_on_its_own_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """SYNCD_POLL_INTERVAL_V1 paces the v1 stream and SYNCD_POLL_INTERVAL_V2 the v2 one."""
    monkeypatch.setenv("SYNCD_POLL_INTERVAL_V1", "15")
    monkeypatch.setenv("SYNCD_POLL_INTERVAL_V2", "2.5")
    s = load_settings()
    assert (s.poll_interval_s("v1"), s.poll_interval_s("v2")) == (15.0, 2.5)


@pytest.mark.parametrize(
    ("ceiling", "initial", "floor"),
    [
        (None, 10.0, 0.1),
        ("50", 10.0, 0.1),
        ("5", 5.0, 0.1),  # a ceiling below the initial rate starts there
        ("0.05", 0.05, 0.05),  # ... and one below the 0.1/s floor lowers the floor
    ],
)
def test_rate_policy_fits_under_any_ceiling(
    monkeypatch: pytest.MonkeyPatch, ceiling: str | None, initial: float, floor: float
) -> None:
    """Any positive SYNCD_MAX_REQUESTS_PER_S gives a valid policy capped at it."""
    if ceiling is not None:
        monkeypatch.setenv("SYNCD_MAX_REQUESTS_PER_S", ceiling)
    policy = load_settings().rate_policy()
    expected_ceiling = None if ceiling is None else float(ceiling)
    assert policy.max_rate_per_s == expected_ceiling
    assert (policy.initial_rate_per_s, policy.min_rate_per_s) == (initial, floor)


def test_webhook_token_is_scrubbed_like_the_api_key() -> None:
    """The webhook token is one of the secrets the log scrubber hides, and not in repr."""
    s = load_settings(api_key="sk-very-secret", webhook_token="whk-0123456789")
    assert "whk-0123456789" in s.secrets() and "whk-0123456789" not in repr(s)
