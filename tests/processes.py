"""Running syncd as users do, in subprocesses: the command, its environment, the simulator.

Everything binds to 127.0.0.1, waits with a deadline, and is stopped when done.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

SYNCD = [sys.executable, "-m", "syncd"]


def env_for(**values: str) -> dict[str, str]:
    """The caller's environment without any SYNCD_* setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(
        SYNCD_LOG_FORMAT="json",
        SYNCD_HTTP_PORT="0",
        SYNCD_MAX_REQUESTS_PER_S="100",
        SYNCD_INITIAL_REQUESTS_PER_S="50",
    )
    env.update(values)
    return env


async def run_syncd(*args: str, env: dict[str, str], timeout_s: float = 60) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one `syncd` command."""
    proc = await asyncio.create_subprocess_exec(
        *SYNCD, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def fake_api_process(key: str, *args: str) -> AsyncIterator[str]:
    """`syncd fake-api` on a free 127.0.0.1 port; yields its base URL."""
    proc = await asyncio.create_subprocess_exec(
        *SYNCD, "fake-api", "--host", "127.0.0.1", "--port", "0", "--api-key", key, *args,
        env=env_for(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "listening on http://127.0.0.1:" in line, line
        yield line.split("listening on ")[1].split()[0]
    finally:
        await stop_process(proc)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # 127.0.0.1 only
        return json.loads(response.read())
