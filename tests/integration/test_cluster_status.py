"""``tickflow cluster status`` as a real subprocess against a real nats-server with live nodes,
a stream, a durable with acks and a checkpoint; and what it says when things are missing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from engine.service.cluster.buckets import ensure_bucket, ensure_control_buckets
from engine.service.cluster.ownership import Ownership
from tests.cluster_support import connect, run, wait_until
from tests.nats_support import NatsServer, free_port

TTL = 5.0  # long enough that the nodes' shares stay put while the command runs
ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, url: str, *, enabled: bool = True) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\nenabled = {"true" if enabled else "false"}\nnats_url = "{url}"\n'
        'prefix = "tf"\nstream = "T"\npartitions = 4\nlease_ttl_s = 5.0\n\n'
        "[workflows.only]\npriority = 1\nmax_concurrent = 2\n\n"
        '[[workflows.only.steps]]\nname = "work"\n'
        'action = "tests.unit.config_actions:async_step"\n'
    )
    return path


async def _tickflow(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.service.cli", "--log-format", "text", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_status_of_a_live_cluster(nats_server: NatsServer, tmp_path: Path) -> None:
    config = _config(tmp_path, nats_server.url)

    async def body() -> tuple[dict[str, Any], str]:
        conns, nodes = [], []
        for name in ("node-a", "node-b"):
            nc = await connect(nats_server)
            buckets = await ensure_control_buckets(nc.jetstream(), stream="T", lease_ttl_s=TTL,
                                                   replicas=1)
            node = Ownership(buckets.lease, buckets.members, node=name, partitions=4,
                             ttl_s=TTL, poll_s=0.1)
            await node.start()
            conns.append(nc)
            nodes.append(node)
        await wait_until(lambda: all(len(n.owned) == 2 and len(n.live) == 2 for n in nodes),
                         TTL + 5, "two nodes own two partitions each")
        js = conns[0].jetstream()
        # the data plane's stream and partition 0's durable, as cldata names them
        await js.add_stream(name="T", subjects=["tf.part.>"])
        for i in range(10):
            await js.publish(f"tf.part.0.S{i % 3}", b"tick")
        for _ in range(3):
            await js.publish("tf.part.1.X", b"tick")
        sub = await js.pull_subscribe("tf.part.0.>", durable="T_p0", stream="T")
        for msg in await sub.fetch(4, timeout=5):
            await msg.ack_sync()
        ckpt = await ensure_bucket(js, "T_ckpt", ttl_s=None, history=1, replicas=1)
        await ckpt.put("p0", json.dumps({"seq": 4, "ts": time.time() - 30}).encode())
        code, out, err = await _tickflow("cluster", "status", "--config", str(config), "--json")
        assert code == 0, err
        text_code, text, err = await _tickflow("cluster", "status", "--config", str(config))
        assert text_code == 0, err
        for node in nodes:
            await node.close()
        for nc in conns:
            await nc.close()
        return json.loads(out), text

    doc, text = run(body, timeout=120)
    assert [n["node"] for n in doc["nodes"]] == ["node-a", "node-b"]
    assert all(0 <= n["heartbeat_age_s"] < TTL for n in doc["nodes"])
    owners = {row["partition"]: row for row in doc["owners"]}
    assert sorted(row["owner"] for row in owners.values()) == ["node-a"] * 2 + ["node-b"] * 2
    assert all(row["token"] <= row["revision"] for row in owners.values())
    p0, p1, p2 = owners[0], owners[1], owners[2]
    assert (p0["last_seq"], p0["ack_floor"], p0["lag"], p0["unacked"]) == (10, 4, 6, 6)
    assert 30 <= p0["checkpoint_age_s"] < 90
    assert (p1["last_seq"], p1["ack_floor"], p1["lag"]) == (13, None, None)
    assert (p2["last_seq"], p2["lag"], p2["checkpoint_age_s"]) == (0, None, None)
    assert doc["stream_exists"] is True
    assert doc["notes"] == ["no durable consumer yet for 3 partition(s): 1-3 (named T_p<p>)"]
    assert "cluster T at nats://127.0.0.1:" in text
    assert "2 live node(s)" in text
    assert "note: no durable consumer yet for 3 partition(s): 1-3" in text
    row0 = next(line for line in text.splitlines() if line.split()[:1] == ["0"])
    assert row0.split()[5:9] == ["10", "4", "6", "6"]


def test_status_of_a_cluster_that_never_started_says_what_is_missing(
    nats_server: NatsServer, tmp_path: Path,
) -> None:
    config = _config(tmp_path, nats_server.url)
    code, out, err = run(lambda: _tickflow("cluster", "status", "--config", str(config),
                                           "--json"))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["nodes"] == []
    assert all(row["owner"] is None for row in doc["owners"])
    assert doc["stream_exists"] is False
    assert doc["notes"] == [
        "no membership bucket 'T_members': no node has joined yet",
        "no lease bucket 'T_lease': no partition has an owner",
        "stream 'T' does not exist yet (no node has started the data plane): no lag to show",
        "no checkpoint bucket 'T_ckpt' yet: no checkpoint ages",
    ]

    async def nothing_created() -> list[str]:
        nc = await connect(nats_server)
        names = [info.config.name for info in await nc.jetstream().streams_info()]
        await nc.close()
        return names

    assert run(nothing_created) == []  # read-only: it created no bucket and no stream


def test_status_errors_are_one_clear_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = _config(tmp_path, f"nats://127.0.0.1:{port}")
    code, out, err = run(lambda: _tickflow("cluster", "status", "--config", str(config),
                                           "--timeout", "1"))
    assert code == 1
    assert out == ""
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in err
    assert "Traceback" not in err

    off = _config(tmp_path, "nats://127.0.0.1:4222", enabled=False)
    code, _out, err = run(lambda: _tickflow("cluster", "status", "--config", str(off)))
    assert code == 2
    assert "[cluster] enabled is false" in err

    code, _out, err = run(lambda: _tickflow("cluster", "status", "--config", str(off),
                                            "--timeout", "0"))
    assert (code, "--timeout must be in (0, 3600) seconds" in err) == (2, True)

    code, _out, err = run(lambda: _tickflow("cluster"))
    assert (code, "say which action (status)" in err) == (2, True)

    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\npartitions = 0\n")
    code, _out, err = run(lambda: _tickflow("cluster", "status", "--config", str(bad)))
    assert code == 1
    assert "invalid config" in err
