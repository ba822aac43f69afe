"""Hardening of the state database (issue 18, items 4, 8 and 12): unreadable metadata is a
one-line refusal and a clean exit, for ``run`` and ``status --db``; one daemon per file.

Real SQLite files, real ``tickflow`` subprocesses, every wait bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from engine.core.errors import StorageError
from engine.storage import open_database
from engine.storage.lock import StateLock, lock_path
from tests.integration.daemon import TICKFLOW
from tests.integration.service_support import REPO, Daemon, write_config

EXIT_WAIT_S = 60.0  # a bound on a process that must exit by itself, not a duration


def _make_db(path: Path) -> None:
    async def create() -> None:
        conn = await open_database(path)
        await conn.close()

    asyncio.run(create())


def _damage(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


DAMAGE = {
    "not_a_number": "UPDATE meta SET value='abc' WHERE key='schema_version'",
    "negative": "UPDATE meta SET value='-1' WHERE key='schema_version'",
    "zero": "UPDATE meta SET value='0' WHERE key='schema_version'",
    "empty": "UPDATE meta SET value='' WHERE key='schema_version'",
    "missing_row": "DELETE FROM meta WHERE key='schema_version'",
}


def _tickflow(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*TICKFLOW, *args], cwd=cwd, capture_output=True, timeout=EXIT_WAIT_S,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_open_database_refuses_unreadable_meta_and_leaves_no_thread(
    tmp_path: Path, damage: str
) -> None:
    db = tmp_path / "state.db"
    _make_db(db)
    _damage(db, DAMAGE[damage])
    before = set(threading.enumerate())

    async def attempt() -> None:
        with pytest.raises(StorageError, match="schema_version") as info:
            await open_database(db)
        assert str(db) in str(info.value)
        assert "\n" not in str(info.value)

    asyncio.run(attempt())
    # aiosqlite's thread is not a daemon thread: a leaked one hangs the process at exit.
    started = [t for t in set(threading.enumerate()) - before if not t.daemon]
    for thread in started:
        thread.join(timeout=10)  # a closed connection's thread ends by itself, promptly
    assert not [t for t in started if t.is_alive()]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not_a_number", "negative", "missing_row"])
def test_run_and_status_on_unreadable_meta_exit_with_one_line(
    tmp_path: Path, damage: str
) -> None:
    db = tmp_path / "state.db"
    _make_db(db)
    _damage(db, DAMAGE[damage])
    config = tmp_path / "tickflow.toml"
    write_config(config, db=db)

    run = _tickflow(["run", "--config", str(config), "--duration", "1"], tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert b"Traceback" not in run.stderr, run.stderr[-3000:]
    failed = [orjson.loads(line) for line in run.stderr.splitlines()
              if b"tickflow failed" in line]
    assert len(failed) == 1, run.stderr[-2000:]
    assert str(db) in failed[0]["msg"]
    assert "schema_version" in failed[0]["msg"]

    status = _tickflow(["status", "--db", str(db)], tmp_path)
    assert status.returncode == 1
    assert status.stdout == b""
    lines = status.stderr.decode().splitlines()
    assert len(lines) == 1, status.stderr
    assert str(db) in lines[0]
    assert "schema_version" in lines[0]
    assert "empty database" not in lines[0]


# -- item 8: one daemon per state file -------------------------------------------------------


def test_the_state_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    first = StateLock(db)
    first.acquire()
    try:
        second = StateLock(db)
        with pytest.raises(StorageError, match="in use by another tickflow process") as info:
            second.acquire()
        message = str(info.value)
        assert str(db) in message
        assert str(lock_path(db)) in message
        assert "pid " in message
        assert not second.held
    finally:
        first.release()
    again = StateLock(db)
    again.acquire()  # released: the next daemon may start
    again.release()


@pytest.mark.slow
def test_a_second_daemon_on_the_same_state_file_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    config = tmp_path / "tickflow.toml"
    write_config(config, db=db, drain_timeout_s=1.0)
    first_dir = tmp_path / "first"
    second_dir = tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = Daemon(config, first_dir)
    second: Daemon | None = None
    try:
        first.start()
        second = Daemon(config, second_dir)
        assert second.proc.wait(timeout=EXIT_WAIT_S) == 1
        failed = [r for r in second.records() if str(r.get("msg", "")).startswith(
            "tickflow failed")]
        assert len(failed) == 1, second.log_path.read_text()[-3000:]
        message = failed[0]["msg"]
        assert str(db) in message
        assert f"pid {first.proc.pid}" in message
        assert "Traceback" not in second.log_path.read_text()
        # The first one never noticed.
        assert first.proc.poll() is None
        assert first.status()["running"] is True
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=EXIT_WAIT_S) == 0
    finally:
        first.close()
        if second is not None:
            second.close()


# -- item 12: status --db on a read-only mount ------------------------------------------------


@contextlib.contextmanager
def _read_only_dir(path: Path) -> Iterator[None]:
    """``path`` made read-only for real: a read-only tmpfs mount as root, chmod otherwise."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    staging = path.with_name(path.name + "-staging")
    path.rename(staging)
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {mounted.stderr!r}")
    try:
        for item in staging.iterdir():
            shutil.copy2(item, path / item.name)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_status_reads_a_database_on_a_read_only_mount(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    db = ro / "state.db"
    _make_db(db)
    _damage(db, "INSERT INTO symbols (name, phase, status, priority, updated_at) "
                "VALUES ('AAPL', 'idle', 'completed', 0, 0)")
    assert not (ro / "state.db-shm").exists()  # as after a clean stop: no WAL index to reuse
    with _read_only_dir(ro):
        status = _tickflow(["status", "--db", str(db)], tmp_path)
    assert status.returncode == 0, status.stderr
    assert b"AAPL" in status.stdout
    assert b"corrupted" not in status.stderr
