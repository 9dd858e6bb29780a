"""Security requirements, each an automated check.

1. The API key and the database password never appear in output, errors, reprs or metrics.
2. TLS is verified, cannot be switched off, and trusts SYNCD_CA_BUNDLE; clear-text http warns.
3. Query-string auth warns.
4. Upstream strings are data: hostile text is stored verbatim, SQL stays intact.
5. Secrets can come from files (SYNCD_API_KEY_FILE, SYNCD_DATABASE_URL_FILE).

Every server listens on 127.0.0.1 and is stopped by its fixture.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs
from yarl import URL

from syncd.client import CoreClawClient, _ssl_context
from syncd.config import AuthMode, Settings, load_settings
from syncd.database import migrate, open_database
from syncd.errors import ConfigError, StorageError, SyncdError, UpstreamError
from syncd.fakeapi import FakeApi, FakeApiConfig, start_fake_api
from syncd.models import OffsetMode, Source
from syncd.storage import Store
from syncd.sync import StreamSync
from syncd.web import create_app
from tests.support.processes import env_for, run_syncd

# Both secrets hold characters that URL encoding changes, so an encoded leak is caught too.
KEY = "sk-Sec+Key/9876=zz"
WRONG_KEY = "sk-Wrong+Key/5432=yy"
DB_PASSWORD = "pw-Sekr3t-9876/@x+"
HOSTILE_TITLE = "Robert'); DROP TABLE runs; --"
PIECE = 8  # this much of a secret is a leak too


# --------------------------------------------------------------------------- helpers


pytestmark = pytest.mark.usefixtures("clean_env")


def secret_forms(secret: str) -> set[str]:
    """The secret as sent, and as URL quoting of every flavour would spell it."""
    query = URL("http://h/").with_query(t=secret).raw_query_string.partition("=")[2]
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret, safe=" +"), query}
    return forms | {json.dumps(form)[1:-1] for form in forms}


def assert_no_secrets(text: str, *secrets: str, where: str = "output") -> None:
    """No secret, whole or cut short (any 8 characters of it), in any encoding."""
    for secret in secrets:
        for form in secret_forms(secret):
            for start in range(max(len(form) - PIECE + 1, 1)):
                piece = form[start : start + PIECE]
                assert piece not in text, f"{piece!r} of {form!r} in {where}:\n{text[-3000:]}"


def assert_error_chain_clean(error: BaseException, *secrets: str) -> None:
    """str/repr of the error and of everything a printed traceback would show."""
    chain: BaseException | None = error
    while chain is not None:
        assert_no_secrets(f"{chain}\n{chain!r}", *secrets, where=f"{type(chain).__name__}")
        context = None if chain.__suppress_context__ else chain.__context__
        chain = chain.__cause__ or context
    printed = "".join(traceback.format_exception(error))
    assert_no_secrets(printed, *secrets, where="the printed traceback")


def with_password(url: str, password: str = DB_PASSWORD) -> str:
    """The URL with a password: the test server trusts local connections and ignores it."""
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return runner


def port_of(runner: web.AppRunner) -> int:
    port: int = runner.addresses[0][1]
    return port


def sync_env(
    api_url: str, db_url: str, mode: AuthMode, key: str = KEY, **extra: str
) -> dict[str, str]:
    values = {
        "SYNCD_API_URL": api_url,
        "SYNCD_API_KEY": key,
        "SYNCD_AUTH_MODE": mode.value,
        "SYNCD_DATABASE_URL": db_url,
        "SYNCD_LOG_LEVEL": "DEBUG",  # the most output there is to leak into
        "SYNCD_MAX_RETRIES": "1",
        "SYNCD_MAX_BACKOFF_S": "0.05",
        "SYNCD_RETRY_AFTER_FLOOR_S": "0",
        "SYNCD_HTTP_TIMEOUT_S": "10",
        "SYNCD_DB_RETRY_S": "0",
    }
    return env_for(**{**values, **extra})


# --------------------------------------------------------------------------- servers


@pytest.fixture
async def fake_url() -> AsyncIterator[str]:
    """The simulator, accepting KEY in every auth form."""
    _, runner, url = await start_fake_api(FakeApiConfig(runs=120, api_key=KEY, offset_mode="pages"))
    yield url
    await runner.cleanup()


def _offered_key(request: web.Request) -> str:
    _, _, bearer = request.headers.get("Authorization", "").partition(" ")
    return bearer or request.headers.get("api-key") or request.query.get("token") or "-"


def echo_app(received: list[str]) -> web.Application:
    """A hostile upstream that echoes the key and the raw request target back in its errors.

    Under /echo: v1 answers HTTP 500, v2 HTTP 422.  Under /unauthorized: 401.  Under /long:
    400 with the key where long messages are cut.  Under /redirect: a 302 whose Location
    carries the key in its path and query.
    """

    async def handle(request: web.Request) -> web.Response:
        key = _offered_key(request)
        received.append(key)
        echoed = f"token {key} rejected for {request.raw_path} ({request.url})"
        behaviour = request.match_info["behaviour"]
        if behaviour == "redirect":
            location = f"https://elsewhere.invalid/{quote(key)}?token={quote(key, safe='')}"
            return web.Response(status=302, headers={"Location": location})
        if behaviour == "long":  # the key straddles the point where messages are cut
            echoed = "." * (200 - len(key) // 2) + key
            status, code = 400, 11000
        elif behaviour == "unauthorized":
            status, code = 401, 12001
        elif request.method == "POST":
            status, code = 500, 10000
        else:
            status, code = 422, 11000
        body = {"code": code, "message": echoed, "request_id": key, "data": None}
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{behaviour}/api/{tail:.*}", handle)
    return app


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[str]]]:
    """(base URL, keys received)."""
    received: list[str] = []
    runner = await serve(echo_app(received))
    yield f"http://127.0.0.1:{port_of(runner)}", received
    await runner.cleanup()


# --------------------------------------------------------------------------- 1. secrets


async def test_no_secret_in_any_cli_output(
    fake_url: str,
    echo_server: tuple[str, list[str]],
    db_url: str,
    make_db: Callable[[], Awaitable[str]],
) -> None:
    """migrate, sync --once (ok, wrong key, closed port, echoing 500/422) in every auth mode,
    then status and status --json showing the stored errors, print neither the API key nor
    the database password, in any encoding."""
    echo_url, received = echo_server
    db = with_password(db_url)
    closed = f"http://127.0.0.1:{closed_port()}"
    syncs = [
        (0, fake_url, KEY, ["--stream", "v1"], AuthMode.BEARER),
        (0, fake_url, KEY, ["--stream", "v2"], AuthMode.API_KEY),
        (0, fake_url, KEY, [], AuthMode.QUERY),
        *[(3, fake_url, WRONG_KEY, ["--stream", "v2"], mode) for mode in AuthMode],
        *[(1, closed, KEY, [], mode) for mode in AuthMode],
        *[(1, f"{echo_url}/echo", KEY, [], mode) for mode in AuthMode],
    ]
    # one database each: syncd lets one process at a time sync a stream of a database
    dbs = [with_password(await make_db()) for _ in syncs]
    runs = await asyncio.gather(
        run_syncd("migrate", env=sync_env(fake_url, db, AuthMode.BEARER)),
        *(run_syncd("sync", "--once", *args, env=sync_env(url, sync_db, mode, key=key))
          for (_, url, key, args, mode), sync_db in zip(syncs, dbs, strict=True)),
    )  # fmt: skip
    assert [code for code, _, _ in runs] == [0, *(code for code, *_ in syncs)], [
        err[-800:] for _, _, err in runs
    ]
    assert KEY in received, "the echo server never saw the key: nothing was tested"
    failed_db = dbs[3]  # a wrong-key run: its database keeps the error
    statuses = await asyncio.gather(
        run_syncd("status", env=sync_env(fake_url, failed_db, AuthMode.QUERY)),
        run_syncd("status", "--json", env=sync_env(fake_url, failed_db, AuthMode.QUERY)),
    )
    assert [code for code, _, _ in statuses] == [0, 0]
    report = json.loads(statuses[1][1])
    assert any(s["last_error"] for s in report["streams"]), "no stored error was shown"
    for code, out, err in [*runs, *statuses]:
        assert out or err
        assert_no_secrets(out + err, KEY, WRONG_KEY, DB_PASSWORD, where=f"exit {code} output")


async def test_no_password_when_the_database_is_not_there(
    fake_url: str, db_url: str, tmp_path: Path
) -> None:
    """migrate and sync against a socket directory with no server, and status against a
    database that does not exist, fail with exit 1, never printing the password or key."""
    gone = f"postgresql://syncd:{quote(DB_PASSWORD, safe='')}@/syncd?host={tmp_path}&port=5"
    # (status retries a vanished server for a minute; a missing database fails at once)
    missing = with_password(make_url(db_url).set(database="no_such_db").render_as_string(False))
    runs = await asyncio.gather(
        run_syncd("migrate", env=sync_env(fake_url, gone, AuthMode.QUERY)),
        run_syncd("sync", "--once", env=sync_env(fake_url, gone, AuthMode.QUERY)),
        run_syncd("status", "--json", env=sync_env(fake_url, missing, AuthMode.QUERY)),
    )
    for code, out, err in runs:
        assert code == 1, err[-1500:]
        assert "failed" in err and '"command_failed"' in err
        assert_no_secrets(out + err, KEY, DB_PASSWORD)


@pytest.mark.parametrize("mode", list(AuthMode))
async def test_no_secret_in_errors_reprs_or_logs(
    mode: AuthMode,
    fake_url: str,
    echo_server: tuple[str, list[str]],
) -> None:
    """Every syncd exception of those failures, its chain, the logs, repr(settings) and
    repr(client) are free of the key and the password."""
    echo_url, received = echo_server
    db = f"postgresql://u:{quote(DB_PASSWORD, safe='')}@127.0.0.1:{closed_port()}/db"
    base = {"api_key": KEY, "auth_mode": mode, "database_url": db, "max_retries": 1,
            "max_backoff_s": 0.01, "retry_after_floor_s": 0.0, "max_requests_per_s": 500.0,
            "initial_requests_per_s": 500.0}  # fmt: skip
    targets = {
        "closed port": (f"http://127.0.0.1:{closed_port()}", KEY),
        "echo": (f"{echo_url}/echo", KEY),
        "echo 401": (f"{echo_url}/unauthorized", KEY),
        "echo long": (f"{echo_url}/long", KEY),
        "redirect": (f"{echo_url}/redirect", KEY),
        "wrong key": (fake_url, WRONG_KEY),
    }
    errors: list[SyncdError] = []
    with capture_logs() as logs:
        for api_url, key in targets.values():
            settings = load_settings(**{**base, "api_url": api_url, "api_key": key})
            assert_no_secrets(repr(settings) + str(settings), KEY, WRONG_KEY, DB_PASSWORD)
            async with CoreClawClient(settings) as client:
                assert_no_secrets(repr(client) + str(client), KEY, WRONG_KEY)
                for call in (client.list_v1(page_index=1, page_size=5),
                             client.list_v2(offset=0, limit=5)):  # fmt: skip
                    with pytest.raises(UpstreamError) as caught:
                        await call
                    errors.append(caught.value)
        with pytest.raises(StorageError) as storage_error:
            async with open_database(load_settings(**base)) as database:
                await migrate(database.engine)
        errors.append(storage_error.value)
    assert received.count(KEY) >= 6, "the echo server never saw the key: nothing was tested"
    assert {type(e).__name__ for e in errors} >= {
        "UpstreamUnavailable", "RequestRejected", "AuthError", "StorageError",
    }  # fmt: skip
    for error in errors:
        assert_error_chain_clean(error, KEY, WRONG_KEY, DB_PASSWORD)
    assert_no_secrets(repr(logs), KEY, WRONG_KEY, DB_PASSWORD, where="log events")


async def test_no_secret_in_metrics(
    fake_url: str, echo_server: tuple[str, list[str]], db_url: str, store: Store
) -> None:
    """/metrics after a query-auth sync and after failed requests holds no secret."""
    echo_url, _ = echo_server
    settings = load_settings(
        api_url=fake_url, api_key=KEY, auth_mode=AuthMode.QUERY,
        database_url=with_password(db_url), max_retries=0, http_port=0,
        max_requests_per_s=100.0, initial_requests_per_s=50.0,
    )  # fmt: skip
    async with CoreClawClient(settings) as client:
        for stream in (Source.V1, Source.V2):
            await StreamSync(stream, client, store, settings).run_cycle()
    failing = settings.model_copy(update={"api_url": f"{echo_url}/echo"})
    async with CoreClawClient(failing) as client:
        with pytest.raises(UpstreamError):
            await StreamSync(Source.V2, client, store, failing).run_cycle()
    app = create_app(store, settings, [Source.V1, Source.V2])
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        metrics = await (await http.get("/metrics")).text()
    assert 'syncd_rows_total{outcome="inserted",stream="v2"}' in metrics
    assert 'http_status="422"' in metrics
    assert_no_secrets(metrics, KEY, DB_PASSWORD, where="/metrics")


def test_scrubber_knows_the_key_from_a_file_and_encoded_forms(tmp_path: Path) -> None:
    """settings.secrets() (the log scrubber's list) covers a file-borne key and URL encodings."""
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    db = f"postgresql://u:{quote(DB_PASSWORD, safe='')}@h/db"
    secrets = load_settings(api_key_file=str(key_file), database_url=db).secrets()
    assert {KEY, quote(KEY, safe=""), DB_PASSWORD, quote(DB_PASSWORD, safe="")} <= set(secrets)
    missing = load_settings(api_key_file=str(tmp_path / "missing"), database_url=db)
    assert DB_PASSWORD in missing.secrets()  # a bad key file is reported later, not here
    assert not secret_forms(KEY) & set(missing.secrets())


# --------------------------------------------------------------------------- 2. TLS


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_fake(tls_ca: trustme.CA, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The simulator over HTTPS with a certificate for 127.0.0.1; (URL, CA bundle path)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(context)
    runner = await serve(FakeApi(FakeApiConfig(runs=60, api_key=KEY)).app, context)
    bundle = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(bundle))
    yield f"https://127.0.0.1:{port_of(runner)}", bundle
    await runner.cleanup()


async def test_tls_is_verified_and_trusts_only_the_configured_ca(
    tls_fake: tuple[str, Path], db_url: str, make_db: Callable[[], Awaitable[str]]
) -> None:
    """Without SYNCD_CA_BUNDLE a self-signed API fails (variables that look like switches
    change nothing) with a message about verification; with it, the sync succeeds."""
    url, bundle = tls_fake
    switches = {"SYNCD_VERIFY_SSL": "false", "SYNCD_SSL_VERIFY": "0", "SYNCD_INSECURE": "1",
                "SYNCD_TLS_VERIFY": "false", "SYNCD_INSECURE_SKIP_VERIFY": "true",
                "PYTHONHTTPSVERIFY": "0"}  # fmt: skip
    env = sync_env(url, db_url, AuthMode.BEARER, SYNCD_MAX_RETRIES="0")
    other = sync_env(url, await make_db(), AuthMode.BEARER, SYNCD_MAX_RETRIES="0")
    (refused, _, err), (trusted, out, trusted_err) = await asyncio.gather(
        run_syncd("sync", "--once", "--stream", "v2", env={**env, **switches}),
        run_syncd(
            "sync", "--once", "--stream", "v2", env={**other, "SYNCD_CA_BUNDLE": str(bundle)}
        ),
    )
    assert refused == 1
    assert "certificate verify failed" in err and "SYNCD_CA_BUNDLE" in err
    assert trusted == 0, trusted_err[-1500:]
    assert "v2: " in out and "60 seen" in out


async def test_tls_hostname_is_checked_even_with_the_ca_trusted(
    tls_ca: trustme.CA, tmp_path: Path
) -> None:
    """A certificate from the trusted CA but for another name is refused."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("api.example.test").configure_cert(context)
    runner = await serve(FakeApi(FakeApiConfig(runs=5, api_key=KEY)).app, context)
    bundle = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(bundle))
    try:
        settings = load_settings(api_url=f"https://127.0.0.1:{port_of(runner)}", api_key=KEY,
                                 ca_bundle=str(bundle), max_retries=0)  # fmt: skip
        async with CoreClawClient(settings) as client:
            with pytest.raises(UpstreamError, match="certificate verify failed") as caught:
                await client.list_v2(offset=0, limit=5)
    finally:
        await runner.cleanup()
    assert "mismatch" in str(caught.value)


def test_no_setting_can_turn_verification_off(tmp_path: Path) -> None:
    """No field looks like a verification switch; every client context verifies fully."""
    words = ("verify", "insecure", "ssl", "tls", "cert_reqs", "check_hostname")
    assert [n for n in Settings.model_fields if any(w in n.lower() for w in words)] == []
    assert _ssl_context(load_settings()) is True  # aiohttp's default: verified
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    context = _ssl_context(load_settings(ca_bundle=str(bundle)))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize(
    ("api_url", "warns"),
    [
        ("http://api.coreclaw.example", True),
        ("http://10.0.0.7:8099", True),
        ("http://127.0.0.1:8099", False),
        ("http://127.5.6.7", False),
        ("http://localhost:8099", False),
        ("http://[::1]:8099", False),
        ("https://openapi.coreclaw.com", False),
    ],
)
def test_cleartext_http_to_another_host_warns(api_url: str, warns: bool) -> None:
    """http:// to anything but loopback logs api_url_not_https (the key would travel in clear)."""
    with capture_logs() as logs:
        CoreClawClient(load_settings(api_url=api_url, api_key=KEY))
    events = [e for e in logs if e["event"] == "api_url_not_https"]
    assert len(events) == (1 if warns else 0)
    assert all(e["log_level"] == "warning" for e in events)
    assert_no_secrets(repr(logs), KEY)


# --------------------------------------------------------------------------- 3. query auth


@pytest.mark.parametrize("mode", list(AuthMode))
def test_query_auth_mode_warns(mode: AuthMode) -> None:
    """Only SYNCD_AUTH_MODE=query logs api_key_in_query_string, as a warning, without the key."""
    with capture_logs() as logs:
        CoreClawClient(load_settings(api_key=KEY, auth_mode=mode))
    events = [e for e in logs if e["event"] == "api_key_in_query_string"]
    assert len(events) == (1 if mode is AuthMode.QUERY else 0)
    assert all(e["log_level"] == "warning" for e in events)
    assert_no_secrets(repr(logs), KEY)


# --------------------------------------------------------------------------- 4. hostile data

HOSTILE = [
    HOSTILE_TITLE,
    "'; DROP TABLE runs; --",
    '"; DROP TABLE workers; --',
    "x' OR '1'='1",
    "back\\slash \\' \\\\ \\x41 E'\\n'",
    "$1 $2 $$ $tag$ quoted $tag$",
    "%s %(name)s %% {0} {}",
    ":name :1 ? ?? @p",
    "ünïcödé ✓ 日本語 🚀 \u202erlo",
    "nul\x00in\x00the middle",
    "tab\tnew\nline\rcr",
    "COPY runs TO PROGRAM 'id'; --",
]


def hostile_items() -> list[dict[str, Any]]:
    """One run per hostile string, every text field of it hostile."""
    items = []
    for i, h in enumerate(HOSTILE):
        items.append({
            "slug": h, "scraper_slug": f"w/{h}", "scraper_title": h, "err_msg": h,
            "origin": h, "version": h, "status": "running" if i == 0 else "failed",
            "results": i, "usage": "0.25", "traffic": 100 + i,
            "started_at": 1_700_000_000 + i, "finished_at": 0 if i == 0 else 1_700_000_100,
            "duration": 5,
        })  # fmt: skip
    items.append({
        "slug": "bad-usage", "scraper_slug": "w/x", "scraper_title": "t", "status": "failed",
        "usage": "'; DROP TABLE runs; --", "err_msg": "ok", "started_at": 1_600_000_000,
    })  # fmt: skip
    return items


def hostile_upstream(items: list[dict[str, Any]], v2_only: dict[str, Any]) -> web.Application:
    """Both list endpoints over `items` (v2 also lists `v2_only`), filters honoured."""
    v1_codes = {"ready": 1, "running": 2, "succeeded": 3, "failed": 4, "aborted": 5}

    def envelope(listed: list[dict[str, Any]], start: int, size: int) -> web.Response:
        data = {"count": len(listed), "list": listed[start : start + size],
                "page_index": start // size + 1, "page_size": size}  # fmt: skip
        body = {"code": 0, "message": "success", "request_id": "r-1", "data": data}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def v2(request: web.Request) -> web.Response:
        q = request.query
        listed = [*items, v2_only]
        if "status" in q:
            listed = [i for i in listed if i["status"] == q["status"]]
        if "worker_id" in q:
            listed = [i for i in listed if i["scraper_slug"].replace("/", "~") == q["worker_id"]]
        return envelope(listed, int(q["offset"]), int(q["limit"]))

    async def v1(request: web.Request) -> web.Response:
        body = await request.json()
        listed = [{**i, "status": v1_codes[i["status"]]} for i in items]
        if body.get("status"):
            listed = [i for i in listed if i["status"] == body["status"]]
        if body.get("scraper_slug"):
            listed = [i for i in listed if i["scraper_slug"] == body["scraper_slug"]]
        size = body["page_size"]
        return envelope(listed, (body["page_index"] - 1) * size, size)

    app = web.Application()
    app.router.add_get("/api/v2/worker-runs", v2)
    app.router.add_post("/api/v1/run/list", v1)
    return app


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        rows = await conn.execute(text(query))
        return {row[0] for row in rows}


async def test_hostile_upstream_strings_are_stored_verbatim(
    db_url: str, store: Store, engine: AsyncEngine
) -> None:
    """Quotes, SQL, backslashes, $1, %s, unicode and NUL in every text field are data:
    stored as sent (NUL dropped, as documented), and every table still exists."""
    tables_before = await table_names(engine)
    items = hostile_items()
    v2_status = {**items[1], "slug": "hostile-status", "status": "'; DROP TABLE runs; --"}
    runner = await serve(hostile_upstream(items, v2_status))
    settings = load_settings(
        api_url=f"http://127.0.0.1:{port_of(runner)}", api_key=KEY, database_url=db_url,
        page_size_v1=5, page_size_v2=5, v2_offset_mode=OffsetMode.ITEMS,
        max_requests_per_s=200.0, initial_requests_per_s=100.0, head_overlap=1,
    )  # fmt: skip
    try:
        async with CoreClawClient(settings) as client:
            syncers = [StreamSync(s, client, store, settings) for s in (Source.V1, Source.V2)]
            for _ in range(2):  # a full scan, then an incremental cycle with in-flight refresh
                await asyncio.gather(*(s.run_cycle() for s in syncers))
    finally:
        await runner.cleanup()

    assert await table_names(engine) == tables_before
    async with engine.connect() as conn:
        stored = {r.slug: r for r in await conn.execute(text("SELECT * FROM runs"))}
        titles: dict[str, str] = dict(
            (await conn.execute(text("SELECT slug, title FROM workers"))).all()
        )
        history = set((await conn.scalars(text("SELECT run_slug FROM run_status_history"))).all())
        reject = (await conn.execute(text("SELECT reason, raw FROM sync_rejects"))).all()
    for h in HOSTILE:
        clean = h.replace("\x00", "")
        row = stored[clean]
        assert (row.worker_slug, row.worker_title, row.err_msg, row.origin, row.version) == (
            f"w/{clean}",
            clean,
            clean,
            clean,
            clean,
        )
        assert titles[f"w/{clean}"] == clean and clean in history
    assert stored["hostile-status"].status == "unknown"
    assert stored["hostile-status"].status_raw == "'; DROP TABLE runs; --"
    assert stored["bad-usage"].usage_usd is None
    usage_rejects = [raw for reason, raw in reject if reason.startswith("usage")]
    assert usage_rejects and all(r["usage"] == "'; DROP TABLE runs; --" for r in usage_rejects)
    assert len(stored) == len(HOSTILE) + 2


async def test_nul_in_a_status_does_not_poison_the_page(db_url: str, engine: AsyncEngine) -> None:
    """A NUL inside an unknown status string is dropped like everywhere else."""
    item = {**hostile_items()[1], "slug": "nul-status", "status": "runn\x00ing?"}
    runner = await serve(hostile_upstream([], item))
    settings = load_settings(
        api_url=f"http://127.0.0.1:{port_of(runner)}", api_key=KEY, database_url=db_url,
        v2_offset_mode=OffsetMode.ITEMS, max_retries=0,
    )  # fmt: skip
    try:
        async with CoreClawClient(settings) as client:
            await StreamSync(Source.V2, client, Store(engine), settings).run_cycle()
    finally:
        await runner.cleanup()
    async with engine.connect() as conn:
        raw = await conn.scalar(text("SELECT status_raw FROM runs WHERE slug = 'nul-status'"))
    assert raw == "running?"


# --------------------------------------------------------------------------- 5. secret files


async def test_api_key_and_database_url_from_files(
    fake_url: str, db_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    """SYNCD_API_KEY_FILE and SYNCD_DATABASE_URL_FILE drive a whole `sync --once`;
    an empty database URL file stops start-up with exit 2 naming the variable."""
    key_file, url_file, empty = tmp_path / "key", tmp_path / "db-url", tmp_path / "empty"
    key_file.write_text(f"{KEY}\n")
    url_file.write_text(f"  {with_password(db_url)}\n")
    empty.write_text("\n")
    env = env_for(SYNCD_API_URL=fake_url, SYNCD_API_KEY_FILE=str(key_file),
                  SYNCD_DATABASE_URL_FILE=str(url_file), SYNCD_LOG_LEVEL="DEBUG")  # fmt: skip
    (code, out, err), (bad_code, _, bad_err) = await asyncio.gather(
        run_syncd("sync", "--once", env=env),
        run_syncd("sync", "--once", env={**env, "SYNCD_DATABASE_URL_FILE": str(empty)}),
    )
    assert code == 0, err[-1500:]
    assert "v1: " in out and "v2: " in out
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM runs")) == 120
    assert_no_secrets(out + err, KEY, DB_PASSWORD)
    assert bad_code == 2
    assert json.loads(bad_err)["error"] == f"SYNCD_DATABASE_URL_FILE: {empty} is empty"


def test_database_url_env_wins_over_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With both set, SYNCD_DATABASE_URL is used and the file is not even read."""
    monkeypatch.setenv("SYNCD_DATABASE_URL", "postgresql://u:from-env@h/db")
    monkeypatch.setenv("SYNCD_DATABASE_URL_FILE", str(tmp_path / "missing"))
    settings = load_settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql+asyncpg://u:from-env@h/db"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("", "is empty"),
        (b"\xff\xfe postgresql://", "is not UTF-8 text"),
        (f"mysql://u:{DB_PASSWORD}@h/db", "holds no usable URL"),
    ],
    ids=["missing", "empty", "binary", "not-postgres"],
)
def test_bad_database_url_file_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    """A missing, empty, binary or non-PostgreSQL file is one line naming the variable,
    without the file's content."""
    path = tmp_path / "db-url"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    monkeypatch.setenv("SYNCD_DATABASE_URL_FILE", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("SYNCD_DATABASE_URL_FILE: ")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert_error_chain_clean(caught.value, DB_PASSWORD)
