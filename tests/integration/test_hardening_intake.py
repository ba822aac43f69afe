"""Hardening of the network intake against hostile local clients (issue 18, items 1, 5, 10).

Real sockets on 127.0.0.1 against a real engine (in-process) or a real daemon (subprocess).
Every wait is bounded; a client "pacing" its bytes is the behaviour under test, not a wait.
"""

from __future__ import annotations

import asyncio
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.integration.daemon import start, wait_for_log
from tests.integration.test_net_intake import (
    CONFIG,
    LIMIT,
    WAIT_S,
    connect,
    run,
    serving,
    tick,
)

LINE = b'{"type":"DATA_READY","symbol":"G","ts":1,"price":1}\n'


def _stuff_until_blocked(sock: socket.socket, bound_s: float = WAIT_S) -> int:
    """Send ticks on a non-blocking socket until the kernel refuses more; returns bytes sent."""
    sock.setblocking(False)
    payload = LINE * 2000
    sent = 0
    deadline = time.monotonic() + bound_s
    stalls = 0
    while time.monotonic() < deadline:
        try:
            sent += sock.send(payload)
            stalls = 0
        except BlockingIOError:
            # Both sides' buffers are full only when the send buffer stays full for a while.
            stalls += 1
            if stalls > 20:
                return sent
            select.select([], [sock], [], 0.05)  # bounded wait for room, not a sleep
        except ConnectionError:
            return sent  # the server already dropped us (what the idle tests wait for)
    raise AssertionError(f"the server kept reading for {bound_s}s ({sent} bytes)")


def _reset_or_closed(sock: socket.socket, timeout: float) -> bool:
    """True once the peer has reset or closed the connection (POLLERR / POLLHUP / RDHUP)."""
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP | select.POLLRDHUP)
    return bool(poller.poll(timeout * 1000))


def _small_buffer_client(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


# -- item 1: a client that never reads its acks ----------------------------------------------


@pytest.mark.slow
def test_sigterm_with_clients_that_never_read_their_acks_stops_within_the_drain_deadline(
    tmp_path: Path,
) -> None:
    """Before the fix the daemon waited for as long as such a client stayed connected."""
    db = tmp_path / "state.db"
    config = tmp_path / "daemon.toml"
    drain_s = 1.0
    config.write_text(
        CONFIG.replace("enabled = false", "port = 0").replace(
            "drain_timeout_s = 2.0", f"drain_timeout_s = {drain_s}"
        )
        + '\n[source]\nkind = "none"\n'
        + f'\n[storage]\npath = "{db}"\ncommit_interval_ms = 1.0\n'
        + "\n[intake]\ntcp_port = 0\nwrite_high_water = 1024\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    with start(["run", "--config", str(config)], cwd=tmp_path, env={"PYTHONPATH": root}) as proc:
        clients: list[socket.socket] = []
        try:
            port = int(wait_for_log(proc, "intake listening")["port"])
            wait_for_log(proc, "tickflow ready")
            for _ in range(3):
                sock = _small_buffer_client(port)
                clients.append(sock)
                _stuff_until_blocked(sock)
            proc.send_signal(signal.SIGTERM)
            # drain_timeout_s + the intake's fixed grace (5 s) + closing: never "forever".
            assert proc.wait(timeout=drain_s + 15) == 0
            assert proc.stderr is not None
            rest = proc.stderr.read()
            assert b"Traceback" not in rest, rest[-3000:]
            assert b"CancelledError" not in rest, rest[-3000:]
        finally:
            for sock in clients:
                sock.close()
            if proc.poll() is None:
                proc.kill()


def test_a_non_reading_client_closed_for_idleness_is_reset_not_leaked(tmp_path: Path) -> None:
    """The server side must really go (RST), not linger ESTABLISHED flushing acks nobody reads."""

    async def main() -> None:
        async with serving(tmp_path, idle_timeout_s=0.5, write_high_water=1024) as (
            _engine,
            servers,
        ):
            port = servers.tcp_port or 0
            for server in servers._servers:
                for lsock in server.sockets:
                    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            loop = asyncio.get_running_loop()
            socks = [_small_buffer_client(port) for _ in range(3)]
            try:
                await asyncio.gather(
                    *(loop.run_in_executor(None, _stuff_until_blocked, sock) for sock in socks)
                )
                for sock in socks:
                    closed = await loop.run_in_executor(None, _reset_or_closed, sock, WAIT_S)
                    assert closed, "the server kept the idle connection open"
                # Forgotten before the reset went out (and the gauge with it).
                assert servers.statistics().connections_active == 0
                assert servers.idle_closed >= 3
            finally:
                for sock in socks:
                    sock.close()

    run(main)


def test_close_with_a_non_reading_client_finishes_in_bounded_time(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, write_high_water=1024) as (_engine, servers):
            port = servers.tcp_port or 0
            loop = asyncio.get_running_loop()
            sock = _small_buffer_client(port)
            try:
                await loop.run_in_executor(None, _stuff_until_blocked, sock)
                async with asyncio.timeout(WAIT_S):  # 5 s grace + 1 s close, not forever
                    await servers.close()
                assert servers.statistics().connections_active == 0
            finally:
                sock.close()

    run(main)


# -- item 5: idle means "no complete line" ---------------------------------------------------


def test_a_client_dripping_bytes_without_ever_finishing_a_line_is_closed_as_idle(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with serving(tmp_path, idle_timeout_s=0.6) as (_engine, servers):
            async with connect(servers.tcp_port or 0) as c:
                await c.send(tick())
                assert (await c.ack())["ok"] is True
                eof = asyncio.create_task(c.reader.read())
                async with asyncio.timeout(WAIT_S):
                    # One space every 0.2 s: each byte arrives well inside the idle timeout.
                    while not eof.done():
                        with_space = c.send(b" ")
                        try:
                            await with_space
                        except ConnectionError:
                            break
                        await asyncio.wait({eof}, timeout=0.2)
                    try:
                        closed = await eof
                    except ConnectionResetError:
                        # Closed with our unread spaces in its buffer: the kernel resets
                        # instead of a FIN. Closed either way.
                        closed = b""
                    assert closed == b""
            assert servers.idle_closed == 1

    run(main)


def test_complete_lines_keep_a_connection_alive_past_the_idle_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, idle_timeout_s=1.0) as (_engine, servers):
            async with connect(servers.tcp_port or 0) as c:
                started = asyncio.get_running_loop().time()
                while asyncio.get_running_loop().time() - started < 2.5:
                    await c.send(tick())
                    assert (await c.ack())["ok"] is True
                    await asyncio.sleep(0.1)  # client pacing: a line every 0.1 s
            assert servers.idle_closed == 0

    run(main)


# -- item 10: CRLF does not count against the line limit -------------------------------------


def _line_of(size: int) -> bytes:
    head = b'{"type":"DATA_READY","symbol":"AAA","ts":1,"price":1,"pad":"'
    tail = b'"}'
    line = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(line) == size
    return line


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("pieces", [1, 3], ids=["whole", "in-pieces"])
def test_a_line_of_exactly_the_limit_is_accepted_whatever_its_terminator(
    tmp_path: Path, terminator: bytes, pieces: int
) -> None:
    data = _line_of(LIMIT) + terminator + _line_of(LIMIT + 1) + terminator

    async def main() -> None:
        async with serving(tmp_path) as (_engine, servers), connect(servers.tcp_port or 0) as c:
            step = -(-len(data) // pieces)
            for start_at in range(0, len(data), step):
                await c.send(data[start_at:start_at + step])
            at_limit, over = await c.acks(2)
            assert at_limit["ok"] is True, at_limit
            assert over["ok"] is False
            assert over["error"].startswith("oversized"), over

    run(main)
