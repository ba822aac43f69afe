"""Socket plumbing of the daemon's listeners: a connection's name for the logs, closing with a
bounded grace, and the life of a Unix socket file.

Startup and shutdown paths only, never per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import stat
from pathlib import Path

from engine.core.errors import TickflowError

__all__ = [
    "close_writer",
    "is_socket",
    "peer_name",
    "remove_stale_socket",
    "socket_path",
    "unlink_quietly",
]

# How long checking a stale socket file may take to close its probe connection.
_PROBE_CLOSE_GRACE_S = 1.0


def peer_name(writer: asyncio.StreamWriter) -> str:
    """``tcp:<host>:<port>`` or ``unix:<path>``: who a connection is, for the logs."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"tcp:{peer[0]}:{peer[1]}"
    return "unknown"


async def close_writer(writer: asyncio.StreamWriter, grace: float) -> None:
    """Close, flushing what is buffered for at most ``grace`` seconds, then abort: a peer that
    does not read must not keep the socket ESTABLISHED (a leaked fd and its buffers) after we
    let go of it."""
    writer.close()
    if grace > 0:
        try:
            async with asyncio.timeout(grace):
                await writer.wait_closed()
            return
        except (ConnectionError, OSError):
            return
        except TimeoutError:
            pass
    writer.transport.abort()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()  # prompt after abort(): connection_lost is already queued


async def remove_stale_socket(path: Path, what: str, error: type[TickflowError]) -> None:
    """Unlink a socket file left by a crashed daemon; ``error`` for one another process
    listens on, and for anything that is not a socket (``what`` names the setting)."""
    if not is_socket(path, what, error):
        return
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except (ConnectionRefusedError, FileNotFoundError):
        unlink_quietly(path)
        return
    except OSError as exc:
        raise error(f"cannot check {what} {str(path)!r}: {exc}") from exc
    await close_writer(writer, _PROBE_CLOSE_GRACE_S)
    raise error(f"{what} {str(path)!r} is in use by another process")


def is_socket(path: Path, what: str, error: type[TickflowError]) -> bool:
    """False if nothing is there; ``error`` if something other than a socket is."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise error(f"{what} {str(path)!r} exists and is not a socket")
    return True


def socket_path(path: str) -> Path:
    """A configured socket path with ``~`` expanded (a plain function: no I/O, callable from
    a coroutine without the linter taking it for a blocking file operation)."""
    return Path(path).expanduser()


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
