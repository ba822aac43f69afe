"""Network intake over real sockets (TCP on 127.0.0.1, a Unix socket in tmp) into a real Engine.

Every wait is bounded: a client reads its acks under ``asyncio.timeout``; "the server has dealt
with my disconnect" is observed as the server closing its side (EOF), never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import textwrap
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from engine.config import IntakeSettings, loads_config
from engine.service.daemon import Engine
from engine.service.netintake import IntakeServers
from tests.integration.daemon import start, wait_for_log

WAIT_S = 10.0  # a safety bound on each wait, never a duration anyone waits for
LIMIT = 1024  # engine.max_line_bytes in these tests, so oversized lines stay small

CONFIG = f"""
[engine]
max_line_bytes = {LIMIT}
drain_timeout_s = 2.0

[metrics]
enabled = false

[workflows.only]
priority = 1
max_concurrent = 4

[[workflows.only.steps]]
name = "work"
action = "tests.unit.config_actions:async_step"
"""


def tick(symbol: str = "AAA", price: float = 100.0, **extra: Any) -> bytes:
    return orjson.dumps(
        {"type": "DATA_READY", "symbol": symbol, "ts": 1.7e9, "price": price, **extra}
    ) + b"\n"


def run(main: Callable[[], Coroutine[Any, Any, None]], timeout: float = 60.0) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await main()

    asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, *, storage: bool = False, token: str | None = None, **intake: Any
) -> AsyncIterator[tuple[Engine, IntakeServers]]:
    toml = CONFIG
    if storage:
        toml += f'\n[storage]\npath = "{tmp_path / "state.db"}"\ncommit_interval_ms = 1.0\n'
    config = loads_config(textwrap.dedent(toml))
    settings = IntakeSettings(**{"tcp_port": 0, **intake})
    engine = Engine(config, sources=[], persist=storage, serve_metrics=False)
    async with (
        engine.session(),
        IntakeServers(engine, settings, token=token, environ={}) as servers,
    ):
        yield engine, servers


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def tcp(cls, port: int, *, rcvbuf: int | None = None) -> Client:
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            return cls(reader, writer)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so they stick (and turn off the kernel's autotuning).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    @classmethod
    async def unix(cls, path: str) -> Client:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ack(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            line = await self.reader.readline()
        assert line.endswith(b"\n"), f"connection closed instead of an ack: {line!r}"
        result: dict[str, Any] = orjson.loads(line)
        return result

    async def acks(self, n: int) -> list[dict[str, Any]]:
        return [await self.ack() for _ in range(n)]

    async def eof(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        async with asyncio.timeout(WAIT_S):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def connect(port: int, **kw: Any) -> AsyncIterator[Client]:
    client = await Client.tcp(port, **kw)
    try:
        yield client
    finally:
        await client.close()


def journal_seqs(db: Path) -> set[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {int(row[0]) for row in conn.execute("SELECT seq FROM journal")}
    finally:
        conn.close()


# -- bad input, each class with its reason and counter ---------------------------------------

BAD_LINES: list[tuple[bytes, str]] = [
    (b'{"type":"DATA_READY","symbol":"AAA"\n', "malformed_json"),
    (b'{"type":"DATA_READY","symbol":"AAA","ts":"x","price":1}\n', "bad_field"),
    (b'{"type":"NOPE","symbol":"AAA"}\n', "unknown_type"),
    (b'{"type":"TASK_COMPLETED","symbol":"AAA"}\n', "unknown_type"),
    (b"[1,2,3]\n", "not_object"),
    (b'{"type":"DATA_READY","symbol":"AAA","ts":1.0}\n', "missing_field"),
    (b"\n", "empty"),
    (b'{"type":"DATA_READY","symbol":"\xff\xfe","ts":1.0,"price":1.0}\n', "invalid_utf8"),
    (b'{"pad":"' + b"x" * (2 * LIMIT) + b'"}\n', "oversized"),
]


def test_every_bad_line_is_rejected_with_its_reason_and_good_lines_around_it_are_acked(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (engine, servers), connect(servers.tcp_port or 0) as c:
            payload = tick("G0")
            for i, (line, _) in enumerate(BAD_LINES):
                payload += line + tick(f"G{i + 1}")
            await c.send(payload)  # all pipelined in one write
            acks = await c.acks(2 * len(BAD_LINES) + 1)
            assert [a["ok"] for a in acks] == [True, *[False, True] * len(BAD_LINES)]
            for (_, reason), ack in zip(BAD_LINES, acks[1::2], strict=True):
                assert ack["error"].startswith(f"{reason}: "), ack
            seqs = [a["seq"] for a in acks[0::2]]
            assert seqs == sorted(seqs)
            assert len(set(seqs)) == len(seqs)
            expected: dict[str, int] = {}
            for _, reason in BAD_LINES:
                expected[reason] = expected.get(reason, 0) + 1
            assert dict(engine.counters.rejected) == expected
            assert engine.counters.received["DATA_READY"] == len(BAD_LINES) + 1
            assert servers.decoder.statistics().rejected_total == len(BAD_LINES)
            # The connection is still usable, and the engine still processes events.
            await c.send(tick("AFTER"))
            assert (await c.ack())["ok"] is True
            async with asyncio.timeout(WAIT_S):
                await engine.wait_idle()
            assert engine.statistics().counters.runs["only"]["completed"] >= 1

    run(main)


def test_oversized_line_arriving_in_pieces_is_cut_rejected_and_the_stream_resyncs(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (engine, servers), connect(servers.tcp_port or 0) as c:
            await c.send(b'{"type":"DATA_READY","pad":"')
            for _ in range(40):  # 40 KiB without a newline: rejected long before it ends
                await c.send(b"y" * 1024)
            ack = await c.ack()  # arrives before the line's newline was even sent
            assert ack["ok"] is False
            assert ack["error"].startswith("oversized: ")
            assert servers.statistics().connections_active == 1
            await c.send(b'"}\n' + tick())
            assert (await c.ack())["ok"] is True
            assert engine.counters.rejected["oversized"] == 1

    run(main)


def test_half_line_at_disconnect_is_counted(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (engine, servers), connect(servers.tcp_port or 0) as c:
            await c.send(tick() + b'{"type":"DATA_READY","sym')
            assert (await c.ack())["ok"] is True
            c.writer.write_eof()
            assert await c.eof() == b""  # the server saw the end, dealt with it, closed
            assert servers.half_lines == 1
            assert engine.counters.rejected["malformed_json"] == 1

    run(main)


# -- acks and durability ---------------------------------------------------------------------


def test_ack_only_after_the_journal_commit_and_pipelined_lines_acked_in_order(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"

    async def main() -> None:
        async with serving(tmp_path, storage=True) as (_engine, servers), connect(
            servers.tcp_port or 0
        ) as c:
            await c.send(tick("ONE"))
            ack = await c.ack()
            assert ack["ok"] is True
            # Read from another connection to the file: committed, not just written.
            assert ack["seq"] in journal_seqs(db)
            n = 2000
            await c.send(b"".join(tick(f"S{i % 50}", 100.0 + i) for i in range(n)))
            acks = await c.acks(n)
            assert all(a["ok"] for a in acks)
            seqs = [a["seq"] for a in acks]
            assert seqs == list(range(ack["seq"] + 1, ack["seq"] + 1 + n))
            assert set(seqs) <= journal_seqs(db)  # every acked event is committed

    run(main)


def test_storage_off_acks_once_the_engine_has_the_event(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (engine, servers), connect(servers.tcp_port or 0) as c:
            await c.send(tick("X") + tick("Y"))
            assert [a["seq"] for a in await c.acks(2)] == [1, 2]
            assert engine.symbols.get("X") is not None
            assert engine.symbols.get("Y") is not None

    run(main)


# -- slow, stalled, many clients ---------------------------------------------------------------


def test_a_client_that_stops_reading_acks_is_no_longer_read_and_others_carry_on(
    tmp_path: Path,
) -> None:
    high_water = 4096

    async def main() -> None:
        async with serving(tmp_path, write_high_water=high_water) as (_engine, servers):
            port = servers.tcp_port or 0
            # Small kernel buffers on both ends, so the stall shows after a few thousand acks
            # (accepted sockets inherit the listener's buffer sizes).
            for server in servers._servers:
                for sock in server.sockets:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            n = 60_000
            payload = b"".join(tick(f"S{i % 10}", 100.0 + i) for i in range(n))
            async with connect(port, rcvbuf=4096) as stalled:
                sender = asyncio.create_task(stalled.send(payload))
                async with asyncio.timeout(WAIT_S):
                    await servers.backpressured.wait()
                # The server stops reading once the unread acks fill the kernel buffers and
                # its high-water mark: what it has read is bounded by those buffers (~40 KB of
                # acks at ~23 bytes each), far below what the client wants to send.
                bound = 10_000
                assert servers.lines < bound
                # Another client is served meanwhile.
                async with connect(port) as other:
                    for _ in range(3):
                        await other.send(tick("OTHER"))
                        assert (await other.ack())["ok"] is True
                assert not sender.done()  # the stalled client is still blocked sending
                assert servers.lines < bound + 3
                # Memory bounded: acks buffered <= high water + one read's worth of acks.
                assert servers.max_write_buffer <= high_water + 64 * 1024
                # The stalled client resumes: everything is acked, in order.
                acks = await stalled.acks(n)
                assert all(a["ok"] for a in acks)
                seqs = [a["seq"] for a in acks]
                assert seqs == sorted(seqs)
                async with asyncio.timeout(WAIT_S):
                    await sender

    run(main)


def test_fifty_concurrent_clients_are_all_acked(tmp_path: Path) -> None:
    clients, per_client = 50, 200

    async def one(port: int, k: int) -> list[int]:
        async with connect(port) as c:
            await c.send(b"".join(tick(f"C{k}", 100.0 + i) for i in range(per_client)))
            acks = await c.acks(per_client)
            assert all(a["ok"] for a in acks)
            return [a["seq"] for a in acks]

    async def main() -> None:
        async with serving(tmp_path, storage=True) as (_engine, servers):
            port = servers.tcp_port or 0
            results = await asyncio.gather(*(one(port, k) for k in range(clients)))
            for seqs in results:
                assert seqs == sorted(seqs)
            every = [s for seqs in results for s in seqs]
            assert len(set(every)) == clients * per_client
            assert set(every) <= journal_seqs(tmp_path / "state.db")

    run(main)


def test_idle_connection_is_closed_and_counted(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, idle_timeout_s=0.2) as (_engine, servers), connect(
            servers.tcp_port or 0
        ) as c:
            await c.send(tick())
            assert (await c.ack())["ok"] is True
            assert await c.eof() == b""  # then silence: the server closes
            assert servers.idle_closed == 1
            assert servers.statistics().connections_active == 0

    run(main)


# -- access control --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [tick(), b'{"auth":"wrong"}\n', b'{"auth":1}\n', b"garbage\n", b'{"auth":"s3cre"}\n'],
    ids=["missing", "wrong", "not-a-string", "not-json", "prefix"],
)
def test_token_refused(tmp_path: Path, first: bytes) -> None:
    async def main() -> None:
        async with serving(tmp_path, token="s3cret") as (engine, servers), connect(
            servers.tcp_port or 0
        ) as c:
            await c.send(first + tick())
            assert await c.eof() == b'{"ok":false,"error":"unauthorized"}\n'
            assert servers.unauthorized == 1
            assert engine.counters.received["DATA_READY"] == 0

    run(main)


def test_a_client_dripping_its_auth_line_is_cut_off_at_the_auth_deadline(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        # The auth deadline is min(10 s, idle timeout): 0.3 s here. Each byte arrives well
        # inside the idle timeout, so only the overall deadline can stop this client.
        async with serving(tmp_path, token="s3cret", idle_timeout_s=0.3) as (
            _engine, servers,
        ), connect(servers.tcp_port or 0) as c:
            for byte in b'{"auth":"s3cret"':
                await c.send(bytes([byte]))
                await asyncio.sleep(0.05)  # the slow client itself, not a wait for a result
                if servers.unauthorized:
                    break
            assert await c.eof() == b'{"ok":false,"error":"unauthorized: no auth line in time"}\n'
            assert servers.unauthorized == 1

    run(main)


def test_token_accepted(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, token="s3cret") as (_engine, servers), connect(
            servers.tcp_port or 0
        ) as c:
            await c.send(b'{"auth":"s3cret"}\n' + tick() + b"{bad\n")
            assert await c.ack() == {"ok": True}
            assert (await c.ack())["ok"] is True
            assert (await c.ack())["error"].startswith("malformed_json: ")

    run(main)


def test_connections_beyond_the_maximum_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, max_connections=2) as (_engine, servers):
            port = servers.tcp_port or 0
            async with connect(port) as a, connect(port) as b:
                for c in (a, b):  # acked: both are registered by the server
                    await c.send(tick())
                    assert (await c.ack())["ok"] is True
                async with connect(port) as third:
                    assert await third.eof() == b'{"ok":false,"error":"too many connections"}\n'
                assert servers.connections_refused == 1
            async with connect(port) as again:  # slots free again once they left
                await again.send(tick())
                assert (await again.ack())["ok"] is True

    run(main)


# -- the Unix socket, shutdown ---------------------------------------------------------------


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "intake.sock"

    async def main() -> None:
        async with serving(tmp_path, tcp_port=None, unix_path=str(path)) as (_engine, servers):
            assert servers.tcp_port is None
            assert servers.unix_path == str(path)
            assert path.stat().st_mode & 0o777 == 0o660
            c = await Client.unix(str(path))
            try:
                await c.send(tick() + b"nope\n")
                acks = await c.acks(2)
                assert acks[0]["ok"] is True
                assert acks[1]["error"].startswith("malformed_json: ")
            finally:
                await c.close()
        assert not path.exists()  # removed on exit

    run(main)


def test_stale_unix_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "intake.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a crashed daemon leaves behind
    stale.close()

    async def main() -> None:
        async with serving(tmp_path, tcp_port=None, unix_path=str(path)) as (_engine, _servers):
            c = await Client.unix(str(path))
            try:
                await c.send(tick())
                assert (await c.ack())["ok"] is True
            finally:
                await c.close()

    run(main)


def test_shutdown_closes_idle_connections_and_stops_accepting(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (_engine, servers), connect(servers.tcp_port or 0) as c:
            await c.send(tick())
            assert (await c.ack())["ok"] is True
            await servers.close()
            assert await c.eof() == b""
            with pytest.raises(ConnectionRefusedError):
                await Client.tcp(servers.tcp_port or 0)

    run(main)


# -- end to end: the daemon ------------------------------------------------------------------


@pytest.mark.slow
def test_daemon_takes_events_over_tcp_and_unix_and_survives_bad_input(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    sock_path = tmp_path / "in.sock"
    token_file = tmp_path / "token"
    token_file.write_text("t0ken\n")
    config = tmp_path / "daemon.toml"
    config.write_text(
        CONFIG.replace("enabled = false", "port = 0")
        + '\n[source]\nkind = "none"\n'
        + f'\n[storage]\npath = "{db}"\ncommit_interval_ms = 1.0\n'
        + f'\n[intake]\ntcp_port = 0\nunix_path = "{sock_path}"\ntoken_file = "{token_file}"\n'
    )

    async def exchange(port: int, metrics_port: int) -> None:
        c = await Client.tcp(port)
        try:
            await c.send(b'{"auth":"t0ken"}\n')
            assert await c.ack() == {"ok": True}
            for line, reason in BAD_LINES:
                await c.send(line + tick())
                bad, good = await c.acks(2)
                assert bad["error"].startswith(reason), bad
                assert good["ok"] is True
                assert good["seq"] in journal_seqs(db)
        finally:
            await c.close()
        u = await Client.unix(str(sock_path))
        try:
            await u.send(b'{"auth":"t0ken"}\n' + tick("UNIX"))
            assert (await u.acks(2))[1]["ok"] is True
        finally:
            await u.close()
        # Still healthy after all that.
        reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port)
        try:
            writer.write(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(WAIT_S):
                response = await reader.read()
            assert response.startswith(b"HTTP/1.0 200") or response.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    root = str(Path(__file__).resolve().parents[2])  # the test actions live in tests/
    with start(["run", "--config", str(config)], cwd=tmp_path, env={"PYTHONPATH": root}) as proc:
        try:
            metrics = wait_for_log(proc, "metrics listening")
            tcp = wait_for_log(proc, "intake listening")
            unix = wait_for_log(proc, "intake listening")
            assert tcp["transport"] == "tcp"
            assert unix["transport"] == "unix"
            assert unix["path"] == str(sock_path)
            run(lambda: exchange(int(tcp["port"]), int(metrics["port"])))
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            wait_for_log(proc, "tickflow stopped")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert len(journal_seqs(db)) == len(BAD_LINES) + 1
    assert not sock_path.exists()


def test_settings_reject_nonsense() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_connections": 0}, IntakeSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"idle_timeout_s": float("inf")}, IntakeSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"tcp_port": 70000}, IntakeSettings)


def test_intake_counters_are_exported_to_prometheus(tmp_path: Path) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    async def main() -> None:
        async with serving(tmp_path, token="s3cret") as (engine, servers):
            port = servers.tcp_port or 0
            async with connect(port) as good:
                await good.send(b'{"auth":"s3cret"}\n' + tick() + tick())
                assert await good.ack() == {"ok": True}
                for _ in range(2):
                    assert (await good.ack())["ok"] is True
                async with connect(port) as bad:
                    await bad.send(b'{"auth":"nope"}\n')
                    assert await bad.eof() == b'{"ok":false,"error":"unauthorized"}\n'
                text = generate_latest(engine.metrics_registry).decode()
        samples = {
            (s.name, s.labels.get("outcome", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("tickflow_intake_")
        }
        assert samples[("tickflow_intake_connections_open", "")] == 1.0  # the good one
        assert samples[("tickflow_intake_connections_total", "accepted")] == 2.0
        assert samples[("tickflow_intake_connections_total", "unauthorized")] == 1.0
        assert samples[("tickflow_intake_acked_total", "")] == 2.0

    run(main)


def test_a_new_symbol_past_max_symbols_is_refused_and_nothing_else_is_lost(
    tmp_path: Path,
) -> None:
    """A client naming ever new symbols must not grow the table (and the state file) without
    bound: past ``engine.max_symbols`` an event for a new symbol gets an error ack with its
    reason, is counted and never journaled; known symbols, and the connection, carry on."""
    db = tmp_path / "state.db"
    toml = CONFIG.replace("drain_timeout_s = 2.0", "drain_timeout_s = 2.0\nmax_symbols = 2")
    toml += f'\n[storage]\npath = "{db}"\ncommit_interval_ms = 1.0\n'

    async def main() -> None:
        engine = Engine(loads_config(toml), sources=[], persist=True, serve_metrics=False)
        settings = IntakeSettings(tcp_port=0)
        async with engine.session(), IntakeServers(engine, settings, environ={}) as servers:
            async with connect(servers.tcp_port or 0) as c:
                await c.send(tick("A") + tick("B") + tick("C") + tick("A", 101.0))
                acks = await c.acks(4)
                assert [a["ok"] for a in acks] == [True, True, False, True]
                assert acks[2]["error"].startswith("symbol_limit: 'C' would be a new symbol")
                await c.send(tick("B", 102.0))
                (last,) = await c.acks(1)
                assert last["ok"] is True
                seqs = {a["seq"] for a in (*acks[:2], acks[3], last)}
                assert journal_seqs(db) == seqs  # the refused event was never journaled
            assert engine.symbols.get("C") is None
            assert len(engine.symbols) == 2
            assert engine.statistics().counters.events_rejected["symbol_limit"] == 1

    run(main)
