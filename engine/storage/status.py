"""A read-only report on a state database: safe to run while the daemon writes (WAL)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec

from engine.core.errors import StorageError

from .db import schema_version
from .schema import SCHEMA_VERSION

__all__ = ["StatusReport", "format_report", "read_status", "shown"]


class StatusReport(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    schema_version: int
    symbols: list[dict[str, Any]]
    runs_by_state: dict[str, int]
    in_flight: list[dict[str, Any]]
    recent_failures: list[dict[str, Any]]
    positions: list[dict[str, Any]]
    account: dict[str, Any] | None
    journal_events: int
    fills: int


def read_status(path: Path, *, limit: int = 20) -> StatusReport:
    if not path.exists():
        raise StorageError(f"{path}: no such database")
    try:
        return _read_status(path, limit, immutable=False)
    except sqlite3.OperationalError as exc:
        if not _read_only_place(path):
            raise StorageError(f"{path}: cannot read the database: {exc}") from exc
        # A WAL database on a read-only mount (a backup, a snapshot): SQLite cannot create the
        # -shm file a reader needs, and fails with "unable to open database file". Nothing can
        # write there either, so reading it as immutable (no locks, no WAL index) is exact.
        first = exc
    try:
        return _read_status(path, limit, immutable=True)
    except sqlite3.OperationalError as exc:
        raise StorageError(
            f"{path}: cannot read the database on this read-only file system: {first}; {exc}"
        ) from exc


def _read_only_place(path: Path) -> bool:
    """The database's directory is on a read-only mount, or not writable by us."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(path.parent, os.W_OK)


def _read_status(path: Path, limit: int, *, immutable: bool) -> StatusReport:
    uri = f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open read-only: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        try:
            version = schema_version(conn)
        except StorageError as exc:
            raise StorageError(f"{path}: {exc}") from None
        if version == 0:
            raise StorageError(f"{path}: empty database (the daemon has not written yet)")
        if version > SCHEMA_VERSION:
            raise StorageError(f"{path}: schema version {version} is newer than this tickflow")

        def rows(sql: str, *args: Any) -> list[dict[str, Any]]:
            return [dict(r) for r in conn.execute(sql, args)]

        # From v3, completed runs and accepted events are stored in blocks: read the tables
        # that hold them row by row and the blocks' counts, never the views that expand every
        # block of the retention horizon.
        table = "run_rows" if version >= 3 else "runs"
        by_state = {
            r["state"]: r["n"]
            for r in rows(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state")
        }
        if version >= 3:
            blocked = conn.execute("SELECT COALESCE(SUM(runs), 0) FROM run_blocks").fetchone()[0]
            if blocked:
                by_state["completed"] = by_state.get("completed", 0) + blocked

        return StatusReport(
            path=str(path),
            schema_version=version,
            symbols=rows(
                "SELECT name, phase, status, priority, last_processed, last_error FROM symbols "
                "ORDER BY priority, name"
            ),
            runs_by_state=by_state,
            in_flight=rows(
                f"SELECT id, workflow, symbol, state, priority FROM {table} "
                "WHERE state IN ('pending', 'running') ORDER BY id LIMIT ?", limit,
            ),
            recent_failures=rows(
                f"SELECT id, workflow, symbol, error, finished_at FROM {table} "
                "WHERE state = 'failed' ORDER BY finished_at DESC LIMIT ?", limit,
            ),
            positions=rows(
                "SELECT symbol, qty, avg_cost, realized_pnl FROM positions WHERE qty != 0 "
                "OR realized_pnl != 0 ORDER BY symbol"
            ),
            account=next(iter(rows("SELECT cash, fees_paid, fill_count FROM account")), None),
            journal_events=conn.execute(
                "SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM journal_blocks"
                if version >= 3 else "SELECT COUNT(*) FROM journal"
            ).fetchone()[0],
            fills=conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0],
        )
    except sqlite3.OperationalError:
        raise  # cannot read (locking, I/O, a read-only mount): not a verdict on the file
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path}: not a tickflow database or corrupted: {exc}") from exc
    finally:
        conn.close()


def shown(value: object) -> str:
    """``value`` as text safe for a terminal: as is when every character is printable, else
    quoted with escapes, so a stored name holding controls (``\x9b2J`` clears the screen) or
    invisible characters (``AA\u200bPL``) can neither act on the terminal nor pass for another.
    Names written before the symbol alphabet was enforced may still hold such characters."""
    text = str(value)
    return text if text.isprintable() else ascii(text)


def format_report(r: StatusReport) -> str:
    out = [f"database {shown(r.path)} (schema v{r.schema_version})"]
    out.append(
        f"journal: {r.journal_events} events   fills: {r.fills}   runs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r.runs_by_state.items()))
    )
    out.append(f"\nsymbols ({len(r.symbols)}):")
    for s in r.symbols[:40]:
        err = f"  error: {shown(s['last_error'])}" if s["last_error"] else ""
        out.append(
            f"  {shown(s['name']):<8} p{s['priority']:<3} {shown(s['phase']):<10} "
            f"{shown(s['status'])}{err}"
        )
    if len(r.symbols) > 40:
        out.append(f"  ... {len(r.symbols) - 40} more")
    out.append(f"\nruns in flight ({len(r.in_flight)}):")
    for run in r.in_flight:
        out.append(
            f"  #{run['id']} {shown(run['workflow'])} {shown(run['symbol'])} "
            f"{shown(run['state'])}"
        )
    out.append(f"\nrecent failures ({len(r.recent_failures)}):")
    for run in r.recent_failures:
        out.append(
            f"  #{run['id']} {shown(run['workflow'])} {shown(run['symbol'])}: "
            f"{shown(run['error'])}"
        )
    out.append("\npositions:")
    for p in r.positions:
        out.append(
            f"  {shown(p['symbol']):<8} qty {p['qty']:>10.2f}  avg {p['avg_cost']:>10.4f}  "
            f"realized {p['realized_pnl']:>10.2f}"
        )
    if r.account:
        out.append(
            f"\ncash {r.account['cash']:.2f}   fees {r.account['fees_paid']:.2f}   "
            f"fills {r.account['fill_count']}"
        )
    return "\n".join(out)
