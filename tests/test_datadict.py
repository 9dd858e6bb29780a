"""docs/tables.md and docs/dbt/sources.yml: generated from the migrated schema's comments, and
never out of date with it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.datadict import (
    INTERNAL,
    Catalog,
    Column,
    Relation,
    describe,
    main,
    missing_comments,
    render_markdown,
    render_sources,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "tables.md"
SOURCES = ROOT / "docs" / "dbt" / "sources.yml"
REGENERATE = "out of date with the migrations: run `python -m syncd.datadict` and commit"

TS = "timestamp with time zone"
SMALL = Catalog(
    schema="public",
    revision="0042",
    relations=(
        Relation(
            name="jobs_daily",
            kind="view",
            comment="Per day: jobs.",
            columns=(Column("day", "date", False, "UTC day."),),
        ),
        Relation(
            name="jobs",
            kind="table",
            comment="One row per job.",
            columns=(
                Column("id", "text", True, "Job id."),
                Column("took_s", "integer", False, "Run time in seconds | wall clock."),
                Column("done_at", TS, False, 'When it ended (UTC); "NULL": not yet.'),
            ),
            primary_key=("id",),
        ),
    ),
)


async def rows(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql))).mappings()]


async def database_columns(engine: AsyncEngine) -> dict[str, dict[str, str]]:
    """{relation: {column: comment}} straight from the catalog, for every table and view."""
    found: dict[str, dict[str, str]] = {}
    for row in await rows(engine, """
        SELECT c.table_name, c.column_name,
               col_description(format('%I.%I', c.table_schema, c.table_name)::regclass,
                               c.ordinal_position) AS comment
        FROM information_schema.columns c
        WHERE c.table_schema = current_schema()
        ORDER BY c.table_name, c.ordinal_position
    """):  # fmt: skip
        found.setdefault(row["table_name"], {})[row["column_name"]] = row["comment"]
    return found


# ---------------------------------------------------------------- pure rendering


def test_markdown_of_a_small_catalog() -> None:
    """Tables before views, an index, one section per relation with type, unit, nullability,
    primary key and the comment (pipes escaped)."""
    assert render_markdown(SMALL).split("\n")[4:] == [
        "syncd's tables and views in PostgreSQL (schema `public`, migration `0042`). Names are a "
        "stable interface: columns get added, never renamed. Times are `timestamptz` and "
        "described in UTC. How fresh the data is: `sync_state.last_success_at` (every run "
        "upstream lists was confirmed then). The same descriptions are what BI tools show, and "
        "what [`dbt/sources.yml`](dbt/sources.yml) gives dbt.",
        "",
        "| relation | kind | one row is |",
        "|---|---|---|",
        "| [`jobs`](#jobs) | table | One row per job. |",
        "| [`jobs_daily`](#jobs_daily) | view | Per day: jobs. |",
        "",
        "## `jobs`",
        "",
        "*table* — One row per job. Primary key: `id`.",
        "",
        "| column | type | unit | null | description |",
        "|---|---|---|---|---|",
        "| `id` | text |  | not null | Job id. |",
        "| `took_s` | integer | seconds |  | Run time in seconds \\| wall clock. |",
        f'| `done_at` | {TS} | UTC |  | When it ended (UTC); "NULL": not yet. |',
        "",
        "## `jobs_daily`",
        "",
        "*view* — Per day: jobs.",
        "",
        "| column | type | unit | null | description |",
        "|---|---|---|---|---|",
        "| `day` | date |  |  | UTC day. |",
        "",
    ]


def test_sources_of_a_small_catalog_parse_back_to_the_catalog() -> None:
    """The dbt YAML parses to version 2 and one source whose tables and columns carry the
    comments verbatim, quotes and pipes included."""
    parsed = yaml.safe_load(render_sources(SMALL))
    assert parsed["version"] == 2
    [source] = parsed["sources"]
    assert (source["name"], source["schema"]) == ("syncd", "public")
    assert source["tables"] == [
        {
            "name": "jobs",
            "description": "One row per job.",
            "columns": [
                {"name": "id", "data_type": "text", "description": "Job id."},
                {
                    "name": "took_s",
                    "data_type": "integer",
                    "description": "Run time in seconds | wall clock.",
                },
                {
                    "name": "done_at",
                    "data_type": TS,
                    "description": 'When it ended (UTC); "NULL": not yet.',
                },
            ],
        },
        {
            "name": "jobs_daily",
            "description": "Per day: jobs.",
            "columns": [{"name": "day", "data_type": "date", "description": "UTC day."}],
        },
    ]


@pytest.mark.parametrize(
    "name", ["runs", "yes", "on", "Null", "n", "1st", "a b", "it's: 'quoted' \"twice\"", "é ✓ 🙂"]
)
def test_names_and_comments_stay_strings_in_yaml(name: str) -> None:
    """Whatever a name or comment spells (a YAML boolean word, quotes, colons, non-ASCII),
    dbt reads back the same string."""
    table = Relation(name, "table", name, (Column(name, "text", False, name),))
    parsed = yaml.safe_load(render_sources(Catalog("public", "1", (table,))))
    [rendered] = parsed["sources"][0]["tables"]
    assert rendered == {
        "name": name,
        "description": name,
        "columns": [{"name": name, "data_type": "text", "description": name}],
    }


def test_missing_comments_are_named() -> None:
    """A relation or column without a comment is listed, so the generator can refuse it."""
    bare = Relation(
        "t", "table", None, (Column("a", "text", False, None), SMALL.relations[0].columns[0])
    )
    assert missing_comments([bare, *SMALL.relations]) == ["t", "t.a"]


# ---------------------------------------------------------------- the committed files


async def test_committed_files_are_what_the_migrations_say(engine: AsyncEngine) -> None:
    """Rendered from a freshly migrated database, both files equal the committed ones byte for
    byte: a migration that changes a comment, a column or a view without regenerating fails."""
    catalog = await describe(engine)
    assert missing_comments(catalog.relations) == []
    assert render_markdown(catalog).encode() == DOCS.read_bytes(), f"{DOCS} {REGENERATE}"
    assert render_sources(catalog).encode() == SOURCES.read_bytes(), f"{SOURCES} {REGENERATE}"


async def test_dictionary_lists_every_relation_and_column(engine: AsyncEngine) -> None:
    """Every table, view and column of the database has its section and row, with its comment."""
    sections = {part.split("`", 2)[1]: part for part in DOCS.read_text().split("\n## ")[1:]}
    columns = await database_columns(engine)
    assert set(sections) == set(columns)
    for relation, described in columns.items():
        for column, comment in described.items():
            assert f"| `{column}` |" in sections[relation], (relation, column)
            assert comment and comment in sections[relation], (relation, column)


async def test_dbt_sources_match_the_database(engine: AsyncEngine) -> None:
    """sources.yml is dbt's version 2 format: source `syncd` on the schema, one table per
    relation (the migration bookkeeping aside), its columns in order with the database's
    comments, and a freshness check on sync_state.last_success_at."""
    parsed = yaml.safe_load(SOURCES.read_text())
    assert set(parsed) == {"version", "sources"}
    assert parsed["version"] == 2
    [source] = parsed["sources"]
    assert source["name"] == "syncd"
    [[schema]] = [list(r.values()) for r in await rows(engine, "SELECT current_schema()")]
    assert source["schema"] == schema
    tables = {t["name"]: t for t in source["tables"]}
    expected = {
        relation: described
        for relation, described in (await database_columns(engine)).items()
        if relation not in INTERNAL
    }
    assert set(tables) == set(expected)
    for name, described in expected.items():
        assert tables[name]["description"], name
        assert [c["name"] for c in tables[name]["columns"]] == list(described), name
        assert {c["name"]: c["description"] for c in tables[name]["columns"]} == described
    freshness = {k: v for k, v in tables["sync_state"].items() if k not in {"columns"}}
    assert freshness["loaded_at_field"] == "last_success_at"
    warn, error = freshness["freshness"]["warn_after"], freshness["freshness"]["error_after"]
    assert warn["period"] == error["period"] == "minute"
    assert 0 < warn["count"] < error["count"]
    assert all("freshness" not in t for n, t in tables.items() if n != "sync_state")


# ---------------------------------------------------------------- python -m syncd.datadict


async def run_main(*argv: str) -> int:
    """`python -m syncd.datadict ARGV` (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


async def test_check_passes_on_the_committed_files(db_url: str, tmp_path: Path) -> None:
    """--check against a migrated database: exit 0, nothing written."""
    docs, dbt = tmp_path / "tables.md", tmp_path / "sources.yml"
    shutil.copy(DOCS, docs)
    shutil.copy(SOURCES, dbt)
    before = docs.stat().st_mtime_ns, dbt.stat().st_mtime_ns
    code = await run_main(
        "--database-url", db_url, "--docs", str(docs), "--dbt", str(dbt), "--check"
    )
    assert code == 0
    assert (docs.stat().st_mtime_ns, dbt.stat().st_mtime_ns) == before


async def test_stale_files_fail_the_check_and_are_regenerated(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stale or missing file makes --check exit 1 naming it; without --check both are
    (re)written and equal the committed ones."""
    docs, dbt = tmp_path / "tables.md", tmp_path / "dbt" / "sources.yml"
    docs.write_text("# old\n")
    args = ("--database-url", db_url, "--docs", str(docs), "--dbt", str(dbt))
    assert await run_main(*args, "--check") == 1
    err = capsys.readouterr().err
    assert f"{docs} is out of date" in err and f"{dbt} is out of date" in err
    assert docs.read_text() == "# old\n" and not dbt.exists()
    assert await run_main(*args) == 0
    assert docs.read_bytes() == DOCS.read_bytes()
    assert dbt.read_bytes() == SOURCES.read_bytes()


async def test_a_column_without_comment_is_refused(
    db_url: str, engine: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A column added without COMMENT: the generator exits 2 naming it and writes nothing."""
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE runs ADD COLUMN undocumented integer"))
    docs, dbt = tmp_path / "tables.md", tmp_path / "sources.yml"
    assert await run_main("--database-url", db_url, "--docs", str(docs), "--dbt", str(dbt)) == 2
    assert "no COMMENT on runs.undocumented" in capsys.readouterr().err
    assert not docs.exists() and not dbt.exists()


async def test_a_database_behind_head_is_refused(
    empty_db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unmigrated database is not documented (it would document the wrong schema): exit 2."""
    code = await run_main("--database-url", empty_db_url, "--docs", str(tmp_path / "t.md"))
    assert code == 2
    assert "at migration none, not head" in capsys.readouterr().err


@pytest.mark.slow
def test_default_throwaway_database_checks_the_checkout() -> None:
    """`python -m syncd.datadict --check` from the repository root, with no database given,
    migrates a temporary embedded PostgreSQL and finds the committed files up to date."""
    done = subprocess.run(
        [sys.executable, "-m", "syncd.datadict", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- a real dbt, where installed


def dbt_executable() -> str:
    found = os.environ.get("SYNCD_TEST_DBT") or shutil.which("dbt")
    if not found:
        pytest.skip(
            "dbt not installed: pip install 'dbt-core>=1.10,<1.11' dbt-postgres "
            "(in a venv of its own) and set SYNCD_TEST_DBT to its bin/dbt"
        )
    return found


def dbt_project(root: Path, db_url: str) -> None:
    url = make_url(db_url)
    profile = {
        "type": "postgres",
        "host": url.query.get("host") or url.host or "localhost",
        "port": int(str(url.query.get("port") or url.port or 5432)),
        "user": url.username or "postgres",
        "password": url.password or "",
        "dbname": url.database,
        "schema": "public",
        "threads": 1,
    }
    (root / "models").mkdir()
    shutil.copy(SOURCES, root / "models" / "sources.yml")
    (root / "dbt_project.yml").write_text(
        textwrap.dedent("""\
        name: syncd_sources_check
        version: "1.0"
        config-version: 2
        profile: syncd
    """)
    )
    profiles = {"syncd": {"target": "test", "outputs": {"test": profile}}}
    (root / "profiles.yml").write_text(json.dumps(profiles))


def dbt(executable: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_PROFILES_DIR": str(root)}
    return subprocess.run(
        [executable, "--no-use-colors", *args, "--project-dir", str(root)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
async def test_real_dbt_parses_sources_and_checks_freshness(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """dbt itself accepts sources.yml without warnings, and `dbt source freshness` on the
    migrated database passes, warns and errors as last_success_at ages."""
    executable = dbt_executable()
    dbt_project(tmp_path, db_url)
    parsed = await asyncio.to_thread(dbt, executable, tmp_path, "--warn-error", "parse")
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    outcomes = {}
    for age_min in (1, 20, 120):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM sync_state"))
            await conn.execute(
                text("INSERT INTO sync_state (stream, last_success_at) VALUES ('v1', :at)"),
                {"at": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=age_min)},
            )
        checked = await asyncio.to_thread(dbt, executable, tmp_path, "source", "freshness")
        [result] = json.loads((tmp_path / "target" / "sources.json").read_text())["results"]
        assert result["unique_id"] == "source.syncd_sources_check.syncd.sync_state"
        outcomes[age_min] = (checked.returncode, result["status"])
    assert outcomes == {1: (0, "pass"), 20: (0, "warn"), 120: (1, "error")}
