"""CI proves the README: it runs the README's test command, on the run's one PostgreSQL."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from syncd.config import normalise_database_url
from tests.conftest import SHARED_SERVER_ENV

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("**2. Run the tests**", 1)[1]
    match = re.search(r"```sh\n(.+?)\n```", section, re.S)
    assert match, "README.md: no command block under '2. Run the tests'"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert lines[-1].strip() == readme_test_command()


def test_the_readme_test_command_spreads_over_the_cpus() -> None:
    """pytest-xdist is what `-n` needs: a dev extra, or the README's command fails."""
    assert " -n auto" in readme_test_command()
    assert '"pytest-xdist' in (ROOT / "pyproject.toml").read_text()


def test_workers_share_the_controllers_server(pg_server_url: str) -> None:
    """Under `-n`, every worker's server is the one the controller started (not one each)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        pytest.skip("not a pytest-xdist worker")
    if os.environ.get("SYNCD_TEST_DATABASE_URL"):
        pytest.skip("an external server: nothing started by the controller")
    assert pg_server_url == normalise_database_url(os.environ[SHARED_SERVER_ENV])
