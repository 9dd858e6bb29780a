"""The monitoring pack (deploy/prometheus, deploy/grafana) and the metrics it relies on,
checked with promtool and against a real Prometheus scraping a running `syncd run`.

promtool and prometheus are looked for on PATH and in /usr/bin (Debian's `prometheus`
package ships both; `.ci/run` tries to install it); the tests that need them skip,
saying so, where they are missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd import __version__, metrics
from syncd.client import CoreClawClient
from syncd.config import load_settings
from syncd.daemon import Daemon
from syncd.fakeapi import FakeApiConfig, start_fake_api
from syncd.models import Source
from syncd.storage import Store, StreamLease
from syncd.sync import StreamSync
from syncd.web import create_app, seed_metrics_from_state
from tests.support.processes import SYNCD, env_for, stop_process
from tests.support.simulator import simulator_process

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "syncd-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "syncd-alerts.test.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.example.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "syncd.json"
ALERTS = {
    "SyncdStreamStale",
    "SyncdRateLimitedShareHigh",
    "SyncdCyclesFailing",
    "SyncdBackfillStalled",
    "SyncdStreamUnheld",
}
KEY = "monitoring-key-123456"
POLL_INTERVAL_S = 3  # 3 intervals (9 s) stay well above scrape + evaluation delays


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and os.access(f"/usr/bin/{name}", os.X_OK):
        found = f"/usr/bin/{name}"
    return found


PROMTOOL = find_tool("promtool")
PROMETHEUS = find_tool("prometheus")
INSTALL_HINT = "on PATH or in /usr/bin (Debian: apt-get install prometheus; .ci/run tries to)"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=f"promtool not found {INSTALL_HINT}")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason=f"the prometheus server not found {INSTALL_HINT}"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [p for p in panels if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in as Grafana would."""
    return expr.replace("$__rate_interval", "1m").replace('"$job"', '".+"')


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:syncd|process)_[a-z0-9_]+\b", expr))


# ---- rules and dashboard, checked with promtool --------------------------------


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the rule file, all five alerts in it."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout
    assert {rule["alert"] for rule in alert_rules()} == ALERTS


def test_every_alert_has_unit_cases_that_fire_and_that_stay_quiet() -> None:
    """Each alert is unit-tested both firing and not firing."""
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    evals = [e for case in cases for e in case["alert_rule_test"]]
    firing = {e["alertname"] for e in evals if e["exp_alerts"]}
    quiet = {e["alertname"] for e in evals if not e["exp_alerts"]}
    assert firing == ALERTS
    assert quiet == ALERTS


@needs_promtool
def test_alert_rule_unit_tests_pass() -> None:
    """`promtool test rules` passes every case (labels, annotations and timing)."""
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_example_scrape_config_passes_promtool_check() -> None:
    """The example Prometheus configuration, with the rules it loads, is valid."""
    result = promtool("check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_are_well_formed() -> None:
    """Unique ids, a Prometheus query per target, the datasource a variable; every topic
    an operator looks for has a panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
    named = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert {
        "syncd_cycle_duration_seconds_count",  # cycles
        "syncd_last_success_timestamp_seconds",  # lag per stream
        "syncd_upstream_requests_total",  # requests by status
        "syncd_upstream_rate_limited_total",  # rate-limit share
        "syncd_upstream_allowed_rate_per_second",  # limiter rate
        "syncd_upstream_window_requests",  # limiter concurrency
        "syncd_backfill_pages_done",  # backfill progress
        "syncd_backfill_pages_total",
        "syncd_rows_total",  # rows by outcome
        "syncd_stream_lease_held",  # which replica holds each stream
        "syncd_build_info",
    } <= named


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as recording rules, variables filled in)."""
    exprs = dashboard_exprs()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_promql(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


# ---- the new metrics, in process ---------------------------------------------


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_metrics_serve_build_info(store: Store) -> None:
    """/metrics says which syncd version and Python runs: syncd_build_info{…} 1."""
    app = create_app(store, load_settings(api_key="k"), [Source.V1])
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        text = await (await http.get("/metrics")).text()
    (info,) = [
        s for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "syncd_build_info"
    ]  # fmt: skip
    assert info.value == 1
    assert info.labels["version"] == __version__
    assert re.fullmatch(r"3\.\d+\.\d+.*", info.labels["python"])


async def test_last_success_is_seeded_from_sync_state_at_start_up(store: Store) -> None:
    """A process that has not synced yet exports each stream's last success from the
    database; a newer one of its own is kept; a stream that never succeeded has none."""
    import datetime as dt

    at = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    for stream in (Source.V1, Source.V2):
        await store.start_cycle(stream, at)
        await store.finish_cycle(stream, at)
    metrics.LAST_SUCCESS.clear()
    newer = at.timestamp() + 100
    metrics.LAST_SUCCESS.labels("v2").set(newer)  # this process synced v2 since
    app = create_app(store, load_settings(api_key="k"), [Source.V1, Source.V2])
    async with TestClient(TestServer(app, host="127.0.0.1")):
        for _ in range(100):  # seeded in the background: bounded wait
            if sample("syncd_last_success_timestamp_seconds", stream="v1") is not None:
                break
            await asyncio.sleep(0.05)
    assert sample("syncd_last_success_timestamp_seconds", stream="v1") == at.timestamp()
    assert sample("syncd_last_success_timestamp_seconds", stream="v2") == newer


async def test_last_success_is_not_invented_for_a_stream_that_never_succeeded(
    store: Store,
) -> None:
    """A stream with a sync_state row but no success gets no last-success series."""
    import datetime as dt

    await store.start_cycle(Source.V1, dt.datetime.now(dt.UTC))
    metrics.LAST_SUCCESS.clear()
    await seed_metrics_from_state(store, [Source.V1, Source.V2])
    assert sample("syncd_last_success_timestamp_seconds", stream="v1") is None
    assert sample("syncd_last_success_timestamp_seconds", stream="v2") is None


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.05)):  # bounded in count and so in time
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_lease_gauge_says_which_streams_this_process_holds(
    db_url: str, engine: AsyncEngine, engine_for: Callable[[str], AsyncEngine]
) -> None:
    """syncd_stream_lease_held is 0 for a stream another process holds, 1 once this one
    takes it over, and 0 for every stream once the daemon stopped."""
    _, runner, url = await start_fake_api(FakeApiConfig(runs=60, api_key=KEY))
    settings = load_settings(
        api_url=url, api_key=SecretStr(KEY), database_url=SecretStr(db_url),
        max_requests_per_s=200.0, initial_requests_per_s=200.0,
    )  # fmt: skip
    other_engine = engine_for(db_url)  # another replica, holding v1
    other = StreamLease(other_engine)
    assert await other.acquire(Source.V1)
    lease = StreamLease(engine)
    held: dict[str, float | None] = {}
    try:
        async with CoreClawClient(settings) as client:
            store = Store(engine)
            daemon = Daemon(
                [StreamSync(s, client, store, settings) for s in (Source.V1, Source.V2)],
                {Source.V1: 0.3, Source.V2: 0.3},
                lease=lease,
            )
            task = asyncio.create_task(daemon.run())
            try:
                assert await wait_until(lambda: daemon.stats.cycles.get("v2", 0) >= 1, 20)
                held["v1 standby"] = sample("syncd_stream_lease_held", stream="v1")
                held["v2 active"] = sample("syncd_stream_lease_held", stream="v2")
                await other.release()
                await other_engine.dispose()  # its session ends: the lock is gone
                assert await wait_until(lambda: daemon.stats.cycles.get("v1", 0) >= 1, 20)
                held["v1 taken over"] = sample("syncd_stream_lease_held", stream="v1")
            finally:
                daemon.stop.set()
                await asyncio.wait_for(task, 15)
            held["v1 stopped"] = sample("syncd_stream_lease_held", stream="v1")
            held["v2 stopped"] = sample("syncd_stream_lease_held", stream="v2")
    finally:
        await other.release()
        await runner.cleanup()
    assert held == {
        "v1 standby": 0, "v2 active": 1, "v1 taken over": 1, "v1 stopped": 0, "v2 stopped": 0,
    }  # fmt: skip
    assert sample("syncd_poll_interval_seconds", stream="v1") == 0.3


async def test_fake_api_revoke_key_makes_every_request_401() -> None:
    """POST /_fake/revoke-key: from then on the right key is answered 401 / code 12001."""
    api, runner, url = await start_fake_api(FakeApiConfig(runs=10, api_key=KEY))
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        async with ClientSession() as http:
            before = await http.get(f"{url}/api/v2/worker-runs", headers=headers)
            assert (await http.post(f"{url}/_fake/revoke-key")).status == 200
            after = await http.get(f"{url}/api/v2/worker-runs", headers=headers)
            body = await after.json()
    finally:
        await runner.cleanup()
    assert before.status == 200
    assert after.status == 401 and body["code"] == 12001
    assert api.key_revoked


# ---- a real Prometheus scraping a running syncd -------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # 127.0.0.1 only
        body = response.read()
    return json.loads(body) if body.startswith(b"{") else body.decode()


def http_post(url: str) -> Any:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # 127.0.0.1 only
        return json.loads(response.read())


def scraped_samples(metrics_url: str) -> list[Any]:
    text = http_get(metrics_url)
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


class Syncd:
    """`syncd run` in a subprocess, its HTTP port on 127.0.0.1."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"

    async def wait_until_both_streams_synced(self, timeout_s: float = 45) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.returncode is None:
            try:
                samples = scraped_samples(self.metrics_url)
            except (urllib.error.URLError, ConnectionError):
                samples = []
            synced = {
                s.labels["stream"]
                for s in samples
                if s.name == "syncd_last_success_timestamp_seconds"
            }
            if synced == {"v1", "v2"}:
                return samples
            await asyncio.sleep(0.3)
        raise AssertionError(f"syncd did not sync both streams in time:\n{tail(self.log)}")


@asynccontextmanager
async def running_syncd(api_url: str, db_url: str, tmp_path: Path) -> AsyncIterator[Syncd]:
    port = free_port()
    env = env_for(
        SYNCD_API_URL=api_url, SYNCD_API_KEY=KEY, SYNCD_DATABASE_URL=db_url,
        SYNCD_HTTP_HOST="127.0.0.1", SYNCD_HTTP_PORT=str(port),
        SYNCD_POLL_INTERVAL_V1=str(POLL_INTERVAL_S), SYNCD_POLL_INTERVAL_V2=str(POLL_INTERVAL_S),
        SYNCD_PAGE_SIZE_V1="25", SYNCD_PAGE_SIZE_V2="25",
    )  # fmt: skip
    log = tmp_path / "syncd.log"
    with log.open("wb") as err:  # a file, not a pipe: a full pipe would stall the daemon
        proc = await asyncio.create_subprocess_exec(
            *SYNCD, "run", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err
        )
    try:
        yield Syncd(proc, port, log)
    finally:
        await stop_process(proc)


def prometheus_config(tmp_path: Path, target: str) -> Path:
    """deploy/'s example configuration, scraping `target` every second, with deploy/'s
    rules evaluated every second and every `for:` cut to 0 s."""
    rules = tmp_path / "syncd-alerts.yml"
    rules.write_text(re.sub(r"(?m)^(\s+for:) \S+$", r"\1 0s", RULES.read_text()))
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules)]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        answer = http_get(f"{self.url}/api/v1/alerts")
        return [a for a in answer["data"]["alerts"] if a["state"] == state]

    def alert_rules(self) -> dict[str, dict[str, Any]]:
        groups = http_get(f"{self.url}/api/v1/rules?type=alert")["data"]["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}


@asynccontextmanager
async def running_prometheus(tmp_path: Path, target: str) -> AsyncIterator[Prometheus]:
    assert PROMETHEUS is not None
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={prometheus_config(tmp_path, target)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}")
    try:
        for _ in range(150):  # up to ~30 s
            try:
                if http_get(f"{prometheus.url}/-/ready"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.returncode is None, f"prometheus exited:\n{tail(log)}"
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"prometheus did not get ready:\n{tail(log)}")
        yield prometheus
    finally:
        await stop_process(proc)


async def poll(check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """The first truthy result of `check`, or its last result after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(every_s)


@needs_prometheus
async def test_rules_and_dashboard_use_what_a_live_syncd_exports(
    db_url: str, tmp_path: Path
) -> None:
    """Every metric the rules and the dashboard name is on a running syncd's /metrics;
    a real Prometheus scraping it answers every dashboard query with data, loads the
    rules healthy, and fires none of them while syncd is fine."""
    async with (
        simulator_process(KEY, "--runs", "200") as api_url,
        running_syncd(api_url, db_url, tmp_path) as syncd,
    ):
        samples = await syncd.wait_until_both_streams_synced()
        exported = {s.name for s in samples}
        named = set().union(*(metric_names(e) for e in dashboard_exprs()))
        named |= set().union(*(metric_names(r["expr"]) for r in alert_rules()))
        assert named - exported == set(), "named by deploy/ but not exported"
        values = {(s.name, s.labels.get("stream")): s.value for s in samples}
        assert values[("syncd_stream_lease_held", "v1")] == 1
        assert values[("syncd_stream_lease_held", "v2")] == 1
        assert values[("syncd_poll_interval_seconds", "v1")] == POLL_INTERVAL_S
        assert values[("syncd_build_info", None)] == 1

        async with running_prometheus(tmp_path, f"127.0.0.1:{syncd.port}") as prometheus:
            queries = [as_promql(e) for e in dashboard_exprs()]

            def empty() -> list[str]:
                return [q for q in queries if not prometheus.query(q)]

            def evaluated_rules() -> dict[str, dict[str, Any]]:
                rules = prometheus.alert_rules()
                done = all(r.get("lastEvaluation", "").startswith("20") for r in rules.values())
                return rules if rules and done else {}

            assert await poll(lambda: not empty(), 30), f"no data: {empty()}"
            rules = await poll(evaluated_rules, 15)
            assert set(rules) == ALERTS
            assert {name: rule["health"] for name, rule in rules.items()} == dict.fromkeys(
                ALERTS, "ok"
            )
            await asyncio.sleep(2.5)  # two more evaluations with both streams synced
            assert prometheus.alerts() == []
            assert syncd.proc.returncode is None


@needs_prometheus
async def test_stale_stream_alert_fires_once_upstream_answers_401(
    db_url: str, tmp_path: Path
) -> None:
    """A real Prometheus scraping `syncd run`: quiet while syncd syncs; once upstream
    rejects the key, syncd exits 3, its series vanish and SyncdStreamStale fires for
    both streams (through absent(), as for any replica that is gone)."""
    async with (
        simulator_process(KEY, "--runs", "100") as api_url,
        running_syncd(api_url, db_url, tmp_path) as syncd,
    ):
        await syncd.wait_until_both_streams_synced()
        async with running_prometheus(tmp_path, f"127.0.0.1:{syncd.port}") as prometheus:
            scraped = await poll(
                lambda: len(prometheus.query("syncd_last_success_timestamp_seconds")) == 2, 20
            )
            assert scraped, "prometheus did not scrape syncd's last-success series"
            await asyncio.sleep(2.5)  # two evaluations with both streams synced
            stale_before = [
                a for a in prometheus.alerts("firing") + prometheus.alerts("pending")
                if a["labels"]["alertname"] == "SyncdStreamStale"
            ]  # fmt: skip
            assert stale_before == []

            revoked = time.monotonic()
            assert http_post(f"{api_url}/_fake/revoke-key") == {"key_revoked": True}
            code = await asyncio.wait_for(syncd.proc.wait(), 3 * POLL_INTERVAL_S + 10)
            assert code == 3, tail(syncd.log)

            def stale_streams() -> set[str]:
                return {
                    a["labels"]["stream"]
                    for a in prometheus.alerts("firing")
                    if a["labels"]["alertname"] == "SyncdStreamStale"
                }

            fired = await poll(lambda: stale_streams() == {"v1", "v2"}, 30)
            assert fired, f"firing: {stale_streams()}; {prometheus.alerts('firing')}"
            assert time.monotonic() - revoked < 45
    assert '"daemon_fatal"' in syncd.log.read_text()
