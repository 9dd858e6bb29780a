"""Running syncd as users do, in subprocesses: the command, its environment, its exit.

`run_syncd` runs one command to its end; `measure_syncd` also reports its wall
and CPU time and peak RSS (of that child alone); `SyncdProcess` keeps one
running (a daemon, a sync to kill) with its JSON log in a file.  Every wait
has a deadline, and every process started is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYNCD = [sys.executable, "-m", "syncd"]


def clean_env(**values: str) -> dict[str, str]:
    """The caller's environment without any SYNCD_* setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(values)
    return env


def env_for(**values: str) -> dict[str, str]:
    """`clean_env` with the tests' defaults: JSON logs, no HTTP port, a quick local rate."""
    return clean_env(
        **{
            "SYNCD_LOG_FORMAT": "json",
            "SYNCD_HTTP_PORT": "0",
            "SYNCD_MAX_REQUESTS_PER_S": "100",
            "SYNCD_INITIAL_REQUESTS_PER_S": "50",
            **values,
        }
    )


def user_env(api_url: str, key: str, db_url: str, **values: str) -> dict[str, str]:
    """The environment of a user who sets only what syncd cannot guess (and no HTTP port)."""
    return clean_env(
        **{
            "SYNCD_API_URL": api_url,
            "SYNCD_API_KEY": key,
            "SYNCD_DATABASE_URL": db_url,
            "SYNCD_HTTP_PORT": "0",
            **values,
        }
    )


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


@dataclass(frozen=True)
class Measured:
    """What one `syncd` command cost: the process alone, interpreter start included."""

    wall_s: float
    cpu_s: float
    rss_kib: int
    out: str


def measure_syncd(args: list[str], env: dict[str, str]) -> Measured:
    """Run one `syncd` command (blocking); raise if it fails.

    Peak RSS is the child's own high-water mark after exec (VmHWM, read until it exits):
    wait4's ru_maxrss also counts the pages it shared with this process between fork and
    exec, so a benchmark process holding 300 MB made every syncd it started "use" 300 MB.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([*SYNCD, *args], env=env, stdout=out, stderr=err, text=True)
        peak_kib = 0
        while True:
            # wait4 reports the resource use of exactly this child (not the simulator's).
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, _high_water_kib(proc.pid))
            time.sleep(0.05)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"syncd {' '.join(args)} failed ({proc.returncode}): "
                               f"{err.read()[-2000:]}")  # fmt: skip
        rss_kib = peak_kib or int(usage.ru_maxrss)  # (a child too quick to be sampled)
        return Measured(wall, usage.ru_utime + usage.ru_stime, rss_kib, out.read())


def _high_water_kib(pid: int) -> int:
    """The process's peak resident set since exec, in KiB (0 if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class SyncdProcess:
    """A `syncd ...` child; stderr (JSON logs) to a file, stdout collected; always reaped."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{name}.stderr"
        self.proc: asyncio.subprocess.Process | None = None
        self.stdout = b""
        self._reader: asyncio.Future[None] | None = None

    async def start(self, *args: str, env: dict[str, str]) -> None:
        with self.log_path.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *SYNCD, *args, env=env, cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err,
            )  # fmt: skip
        self._reader = asyncio.ensure_future(self._read_stdout())

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        self.stdout = await self.proc.stdout.read()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait(self, timeout_s: float) -> int | None:
        """Its exit code, or None if it is still running after `timeout_s`."""
        assert self.proc is not None and self._reader is not None
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            return None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)
        return self.proc.returncode

    async def reap(self) -> None:
        """Kill it if it is still there (by its own pid) and wait for it."""
        if self.proc is None or self._reader is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 10)
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)  # a cancel of ours propagates

    def events(self) -> list[dict[str, Any]]:
        """Its JSON log records so far."""
        out = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out

    def tail(self, n: int = 3) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            return " | ".join(line[:300] for line in lines[-n:])
        return ""


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # 127.0.0.1 only
        return json.loads(response.read())
