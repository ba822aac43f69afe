"""The publisher's partition function agrees with the server's own ``partition()`` mapping."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.service.cluster import fnv1a32, parse_subject, partition_of, subject_for
from tests.nats_support import NatsServer, require_nats_server

SYMBOLS = ["AAPL", "MSFT", "S0001", "BRK_B", "X", "S1999", "ES-Z6", "a", "Zz9"]


def test_fnv1a32_known_vectors() -> None:
    assert fnv1a32(b"") == 0x811C9DC5
    assert fnv1a32(b"a") == 0xE40C292C
    assert fnv1a32(b"foobar") == 0xBF9CF968


def test_subject_round_trip() -> None:
    subject = subject_for("tf", 7, "AAPL")
    assert subject == "tf.part.7.AAPL"
    assert parse_subject("tf", subject) == (7, "AAPL")
    with pytest.raises(ValueError, match=r"is not under tf\.part\."):
        parse_subject("tf", "other.part.7.AAPL")
    with pytest.raises(ValueError, match=r"is not tf\.part\.<partition>\.<symbol>"):
        parse_subject("tf", "tf.part.x.AAPL")


def test_matches_the_servers_partition_mapping(tmp_path: Path) -> None:
    """A server-side mapping ``in.* -> out.{{partition(P,1)}}.{{wildcard(1)}}`` sends each
    symbol to the partition the publisher computes: any node and any server version agree."""
    import nats

    binary = require_nats_server()
    partitions = 32
    conf = tmp_path / "nats.conf"
    conf.write_text(
        'mappings = { "in.*": "out.{{partition(' + str(partitions) + ',1)}}.{{wildcard(1)}}" }\n'
    )
    server = NatsServer(tmp_path / "nats", binary=binary)
    # the mapping needs a config file; NatsServer passes its flags, -c adds the file
    server.extra_args = ["-c", str(conf)]
    with server:

        async def check() -> dict[str, str]:
            nc = await nats.connect(server.url)
            got: dict[str, str] = {}
            done = asyncio.Event()

            async def on_msg(msg: object) -> None:
                subject: str = msg.subject  # type: ignore[attr-defined]
                got[subject.rsplit(".", 1)[1]] = subject
                if len(got) == len(SYMBOLS):
                    done.set()

            await nc.subscribe("out.>", cb=on_msg)
            for symbol in SYMBOLS:
                await nc.publish(f"in.{symbol}", b"x")
            await asyncio.wait_for(done.wait(), 10)
            await nc.close()
            return got

        got = asyncio.run(check())
    for symbol in SYMBOLS:
        assert got[symbol] == f"out.{partition_of(symbol, partitions)}.{symbol}"
