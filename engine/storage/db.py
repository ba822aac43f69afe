"""Opening a tickflow database: create or migrate, refuse anything unsafe with a clear error."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import aiosqlite

from engine.core.errors import StorageError

from .schema import MIGRATIONS, PRAGMAS, SCHEMA_VERSION

__all__ = ["default_db_path", "open_database", "parse_schema_version", "schema_version"]


async def open_database(
    path: Path, *, synchronous: str = "normal", busy_timeout_ms: int = 5000
) -> aiosqlite.Connection:
    """Open ``path`` for writing, creating or upgrading its schema.

    Raises :class:`StorageError` naming the file for a corrupted or foreign file, a read-only
    file or directory, or a schema newer than this tickflow; such a file is left untouched.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{path}: cannot create the state directory: {exc}") from exc
    for target in (path, path.parent):
        # access() reports a read-only mount (EROFS) even to root, before SQLite gives a vaguer
        # "unable to open database file" for the WAL's side files.
        if target.exists() and not os.access(target, os.W_OK):
            raise StorageError(
                f"{path}: database is read-only ({target} is not writable); "
                "tickflow needs to write its state here"
            )
    try:
        conn = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open database: {exc}") from exc
    try:
        await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        version = await _read_version(conn, path)
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{path}: database schema version {version} is newer than this tickflow "
                f"supports ({SCHEMA_VERSION}); refusing to open it (upgrade tickflow)"
            )
        for pragma in PRAGMAS:
            await conn.execute(pragma)
        await conn.execute(f"PRAGMA synchronous={_synchronous(synchronous)}")
        if version < SCHEMA_VERSION:
            await _migrate(conn, version)
    except StorageError:
        await conn.close()
        raise
    except sqlite3.Error as exc:
        await conn.close()
        raise StorageError(f"{path}: {_explain(exc)}") from exc
    except BaseException:
        # Whatever else goes wrong, the connection's thread must go: aiosqlite's thread is not
        # a daemon thread, and a leaked one keeps the process alive after main() returns.
        await conn.close()
        raise
    return conn



def default_db_path(configured: str) -> Path:
    """``storage.path`` if set; else under systemd's ``$STATE_DIRECTORY``, else ``./state``."""
    if configured:
        return Path(configured).expanduser()
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "state"
    return Path(state_dir) / "tickflow.db"


def schema_version(conn: sqlite3.Connection) -> int:
    """The version of an open (sync) connection's schema; 0 for an empty file."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        if tables:
            raise StorageError("not a tickflow database (it has tables but no meta table)")
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return parse_schema_version(row, tables)


def parse_schema_version(row: tuple[object, ...] | None, tables: set[str]) -> int:
    """The version stored in ``meta`` (``row`` as read), or :class:`StorageError` saying why it
    cannot be trusted. Only a file with no tables at all is new (version 0): a meta table
    without its version row is a damaged tickflow database, not an empty one, and migrating it
    "from 0" would fail half-way on tables that already exist."""
    if row is None:
        raise StorageError(
            "damaged tickflow database: the meta table has no schema_version row "
            f"(tables: {', '.join(sorted(tables))})"
        )
    value = row[0]
    text = value if isinstance(value, str) else repr(value)
    if not (isinstance(value, str | int) and str(value).isascii() and str(value).isdigit()):
        raise StorageError(
            f"damaged tickflow database: schema_version is {text[:40]!r}, not a version number"
        )
    version = int(value)
    if version < 1:
        raise StorageError(f"damaged tickflow database: schema_version is {version}")
    return version


async def _read_version(conn: aiosqlite.Connection, path: Path) -> int:
    try:
        async with conn.execute("SELECT name FROM sqlite_master WHERE type='table'") as cur:
            tables = {r[0] for r in await cur.fetchall()}
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path}: not a tickflow database or corrupted: {exc}") from exc
    if "meta" not in tables:
        if tables:
            raise StorageError(f"{path}: not a tickflow database (unexpected tables)")
        return 0
    async with conn.execute("SELECT value FROM meta WHERE key='schema_version'") as cur:
        row = await cur.fetchone()
    try:
        return parse_schema_version(None if row is None else tuple(row), tables)
    except StorageError as exc:
        raise StorageError(f"{path}: {exc}; refusing to open it") from None


async def _migrate(conn: aiosqlite.Connection, current: int) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _statements(MIGRATIONS[version]):
                await conn.execute(statement)
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """The statements of ``script``, one by one (a trigger's body holds semicolons of its own:
    a piece ends a statement only where SQLite says the statement is complete)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending)
    return out


def _synchronous(value: str) -> str:
    v = value.lower()
    if v not in ("normal", "full", "extra"):
        raise StorageError(f"storage.synchronous must be normal, full or extra, got {value!r}")
    return v.upper()


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return f"database is read-only ({text}); tickflow needs to write its state here"
    if "full" in text:
        return f"disk or database is full ({text})"
    return text
