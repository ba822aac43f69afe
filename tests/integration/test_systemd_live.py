"""The shipped unit under a real systemd (root only; CI runs as root).

systemd boots as PID 1 of its own namespaces (tests/integration/systemd_box.py), tickflow is
installed from the wheel the way docs/deploy.md says (a venv under /opt made from a Python that
lives outside /root and /tmp), and ``config/systemd/tickflow.service`` runs it unchanged; a
drop-in adds only what the test needs to find it (the addresses, a module with a slow step).
The tests run in file order on one installed service:

start -> READY with process metrics; reload accepted / refused with a non-zero exit; kill -9 ->
restart; a stopped (blocked) loop -> watchdog abort and restart; ``systemctl stop`` under load
-> drained, exit 0, nothing acked lost; a drain cut at ``drain_timeout_s`` inside
``TimeoutStopSec``, and what happens when the drain outlasts ``TimeoutStopSec``; the sandbox
(writes outside the state directory, W+X memory, denied syscalls).
"""

from __future__ import annotations

import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.service_support import REPO, http, wait_until
from tests.integration.systemd_box import SystemdBox, missing_requirements

UNIT_FILE = REPO / "config" / "systemd" / "tickflow.service"
UNIT = "tickflow.service"
# The Python the service runs: Debian's, outside /root (ProtectHome=), /tmp (PrivateTmp=) and
# any home, so the sandboxed dynamic user can execute it.
SERVICE_PYTHON = Path("/usr/bin/python3")
VENV = "/opt/tickflow/venv"
STATE_DB = "/var/lib/private/tickflow/tickflow.db"  # DynamicUser= keeps StateDirectory here
WAIT_S = 45.0  # a safety bound on each wait, never a duration anyone waits for


def _python_problem() -> str | None:
    if not SERVICE_PYTHON.is_file():
        return f"{SERVICE_PYTHON} missing (make system-deps installs python3-venv)"
    probe = subprocess.run(
        [str(SERVICE_PYTHON), "-c",
         "import ensurepip, venv, sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        return f"{SERVICE_PYTHON} cannot make venvs (make system-deps installs python3-venv)"
    ours = "{}.{}".format(*sys.version_info[:2])
    if probe.stdout.strip() != ours:
        return (f"{SERVICE_PYTHON} is {probe.stdout.strip()}, the wheel is built for {ours}: "
                "build it with that Python")
    return None


def _why_skip() -> str | None:
    return missing_requirements() or _python_problem()


WHY_SKIP = _why_skip()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(WHY_SKIP is not None, reason=WHY_SKIP or ""),
    # Building the wheel (shared with test_wheel.py) and installing it come first.
    pytest.mark.timeout(600),
]

SLOW_STEP = '''
"""A step that takes params.sleep_s: keeps runs in flight (installed beside the service)."""
import asyncio


async def slow_step(ctx):
    delay = float(ctx.params.get("sleep_s", 0.05))
    await asyncio.sleep(delay)  # the work being simulated
    return {"slept": delay}
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    """The installed unit in a booted box, and the figures seen along the way."""

    box: SystemdBox
    metrics_port: int
    intake_port: int
    figures: dict[str, Any] = field(default_factory=dict)

    def config(self, *, drain_timeout_s: float = 5.0, sleep_s: float = 0.2,
               max_position: float = 1000.0) -> str:
        return f"""
[engine]
agents = 4
drain_timeout_s = {drain_timeout_s}

[source]
kind = "none"

[metrics]
host = "127.0.0.1"
port = {self.metrics_port}

[intake]
tcp_host = "127.0.0.1"
tcp_port = {self.intake_port}

[admin]
token_file = "${{CREDENTIALS_DIRECTORY}}/admin-token"

[risk]
max_position = {max_position}

[workflows.slow]
priority = 1
max_concurrent = 4

[[workflows.slow.steps]]
name = "work"
action = "live_actions:slow_step"
timeout_ms = 120000.0
params = {{ sleep_s = {sleep_s} }}
"""

    def write(self, path: str, text: str) -> None:
        """Write a file inside the box (through its overlay, as an operator would)."""
        self.box.run(["tee", path], input=text.encode())

    def show(self, *props: str) -> dict[str, str]:
        return self.box.show(UNIT, *props)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def wait_running(self, *, not_pid: int = 0, timeout: float = WAIT_S) -> int:
        """Until the unit is active/running (READY=1 seen) under a main pid other than
        ``not_pid``; returns that pid."""
        seen: dict[str, str] = {}

        def running() -> bool:
            seen.update(self.show("ActiveState", "SubState", "MainPID"))
            pid = int(seen["MainPID"])
            return (seen["ActiveState"], seen["SubState"]) == ("active", "running") and (
                pid not in (0, not_pid)
            )

        wait_until(running, f"{UNIT} running (last {seen})", timeout)
        return int(seen["MainPID"])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as resp:
            text: str = resp.read().decode()
            return text

    def status(self) -> dict[str, Any]:
        code, body = http("GET", self.url("/status"))
        assert code == 200, body
        assert isinstance(body, dict)
        return body

    def stop(self) -> float:
        """``systemctl stop`` (returns once the unit is stopped); its duration."""
        started = time.monotonic()
        self.box.systemctl("stop", UNIT, timeout=90)
        return time.monotonic() - started

    def start(self) -> float:
        """``systemctl start`` (Type=notify: returns after READY=1); its duration."""
        self.box.systemctl("reset-failed", UNIT, check=False)  # start limit: a fresh count
        started = time.monotonic()
        self.box.systemctl("start", UNIT, timeout=90)
        return time.monotonic() - started

    def ended(self) -> dict[str, str]:
        """How the main process last ended (the drop-in's ExecStopPost= line)."""
        lines = re.findall(r"main process ended: (.*)", self.box.journal(UNIT))
        assert lines, "no ExecStopPost line in the journal"
        return dict(field.split("=", 1) for field in lines[-1].split())

    def db_copy(self, into: Path) -> Path:
        """A copy of the stopped service's database (with its WAL), read on the host."""
        into.mkdir(parents=True, exist_ok=True)
        source = self.box.upper(STATE_DB)
        for suffix in ("", "-wal", "-shm"):
            part = source.with_name(source.name + suffix)
            if part.exists():
                shutil.copy2(part, into / part.name)
        return into / source.name


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _journal_seqs(db: Path) -> set[int]:
    return {int(seq) for (seq,) in _query(db, "SELECT seq FROM journal")}


def _runs_by_state(db: Path) -> dict[str, int]:
    return dict(_query(db, "SELECT state, COUNT(*) FROM runs GROUP BY state"))  # type: ignore[arg-type]


class IntakeLoad(threading.Thread):
    """Events into the daemon's TCP intake, ``batch`` lines then their acks, until stopped or
    the daemon closes the connection. Every acked seq is committed (docs/storage.md)."""

    def __init__(self, port: int, *, batch: int = 20, symbols: int = 16,
                 max_batches: int = 100_000) -> None:
        super().__init__(daemon=True, name="intake-load")
        self.port, self.batch, self.symbols, self.max_batches = port, batch, symbols, max_batches
        self.acked: list[int] = []
        self.refused: list[dict[str, Any]] = []
        self.ended = ""
        self._halt = threading.Event()

    def run(self) -> None:
        n = 0
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT_S) as sock, \
                    sock.makefile("rb") as acks:
                while not self._halt.is_set() and n < self.max_batches:
                    lines = b"".join(
                        orjson.dumps({"type": "DATA_READY", "symbol": f"S{(n + i) % self.symbols}",
                                      "ts": 1.7e9 + n, "price": 100.0 + i % 7}) + b"\n"
                        for i in range(self.batch)
                    )
                    sock.sendall(lines)
                    for _ in range(self.batch):
                        line = acks.readline()
                        if not line:
                            self.ended = "closed by the daemon"
                            return
                        ack = orjson.loads(line)
                        if ack.get("ok"):
                            self.acked.append(int(ack["seq"]))
                        else:
                            self.refused.append(ack)
                    n += 1
                self.ended = "stopped"
        except OSError as exc:  # reset by the stopping daemon
            self.ended = f"{type(exc).__name__}: {exc}"

    def finish(self, *, halt: bool = True) -> None:
        """Stop sending (unless ``halt`` is False: let ``max_batches`` run out) and join."""
        if halt:
            self._halt.set()
        self.join(timeout=WAIT_S)
        assert not self.is_alive(), "the load thread did not end"


@pytest.fixture(scope="module")
def service(
    dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("systemd-box")
    box = SystemdBox(root)
    svc = Service(box, metrics_port=_free_port(), intake_port=_free_port())
    # What docs/deploy.md has an operator copy, laid into the box's (still unmounted) overlays.
    wheel = dists["wheel"]
    (box.upper("/opt/tickflow/dist")).mkdir(parents=True)
    shutil.copy2(wheel, box.upper(f"/opt/tickflow/dist/{wheel.name}"))
    (box.upper("/opt/tickflow/lib")).mkdir(parents=True)
    box.upper("/opt/tickflow/lib/live_actions.py").write_text(SLOW_STEP)
    etc = box.upper("/etc/tickflow")
    etc.mkdir(parents=True)
    (etc / "tickflow.toml").write_text(svc.config())
    token = etc / "admin-token"
    token.write_text("live-test-token\n")
    token.chmod(0o600)
    units = box.upper("/etc/systemd/system")
    units.mkdir(parents=True)
    shutil.copy2(UNIT_FILE, units / UNIT)
    # The test's additions only: where the slow step lives, and the admin address that
    # `tickflow reload` (ExecReload=) asks, since the test cannot use the default port.
    dropin = units / f"{UNIT}.d"
    dropin.mkdir()
    (dropin / "test.conf").write_text(
        "[Service]\n"
        "Environment=PYTHONPATH=/opt/tickflow/lib\n"
        f"Environment=TICKFLOW_ADMIN_URL=http://127.0.0.1:{svc.metrics_port}\n"
        # The watchdog's SIGABRT must not hand a core to whatever the host's core_pattern runs.
        "LimitCORE=0\n"
        # How the main process ended, in the journal: an inactive unit is unloaded, and its
        # ExecMain* properties with it.
        "ExecStopPost=/bin/sh -c 'echo \"main process ended: result=$$SERVICE_RESULT "
        "code=$$EXIT_CODE status=$$EXIT_STATUS\"'\n"
    )
    try:
        started = time.monotonic()
        box.boot()
        svc.figures["boot_s"] = round(time.monotonic() - started, 2)
        # docs/deploy.md, "Install": a venv under /opt from the system Python, the wheel in it.
        started = time.monotonic()
        box.run([str(SERVICE_PYTHON), "-m", "venv", VENV])
        box.run(["env", "PIP_NO_CACHE_DIR=1", f"{VENV}/bin/pip", "install", "-q",
                 "--disable-pip-version-check", f"/opt/tickflow/dist/{wheel.name}"],
                timeout=300)
        svc.figures["install_s"] = round(time.monotonic() - started, 1)
        box.run(["env", "PYTHONPATH=/opt/tickflow/lib", f"{VENV}/bin/tickflow", "validate",
                 "/etc/tickflow/tickflow.toml"])
        box.systemctl("daemon-reload")
        yield svc
    finally:
        try:
            if box.pid:
                print(f"\n--- journal of {UNIT} (last 40 lines) ---\n"
                      + "\n".join(box.journal(UNIT).splitlines()[-40:]))
        finally:
            box.shutdown()
        print(f"\nfigures: {svc.figures}")


def test_the_service_python_lives_outside_root_and_tmp(service: Service) -> None:
    # ProtectHome= hides /root and /home, PrivateTmp= replaces /tmp: an interpreter there gives
    # 203/EXEC under the unit (docs/deploy.md, "Which Python").
    target = service.box.run(["readlink", "-f", f"{VENV}/bin/python"]).stdout.strip()
    assert not target.startswith(("/root/", "/home/", "/tmp/", "/var/tmp/")), target
    where = service.box.run(
        [f"{VENV}/bin/python", "-c",
         "import engine, fastpath.heap as h; print(engine.__file__, h.IMPLEMENTATION)"],
    ).stdout.split()
    assert where[0].startswith(f"{VENV}/lib/"), where  # the wheel, not a checkout
    assert where[1] == "cython"


def test_a_venv_from_a_python_under_root_or_tmp_cannot_run_under_the_unit(
    service: Service,
) -> None:
    # The rule above, shown failing: a venv under /opt whose interpreter links into /root (the
    # pyenv Python running these tests) gets 203/EXEC under the unit's ProtectHome=.
    base = Path(sys.base_prefix).resolve()
    if not base.is_relative_to("/root"):
        # (A Python under /tmp cannot even be reached from inside the box: its /tmp is fresh.)
        pytest.skip(f"the test's own Python ({base}) is not under /root")
    bad = "/opt/tickflow/venv-from-root"
    # The base interpreter, not sys.executable: the test's venv may itself live under /tmp
    # (a CI checkout), which the box does not see.
    interpreter = base / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    service.box.run([str(interpreter), "-m", "venv", "--without-pip", bad])
    probe = service.box.run(
        ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", *_sandbox_properties(),
         f"{bad}/bin/python", "-c", "print('ran')"],
        check=False,
    )
    # systemd-run --wait exits with the unit's status: 203/EXEC, the interpreter not reachable.
    assert probe.returncode == 203, (probe.returncode, probe.stdout, probe.stderr)
    assert "ran" not in probe.stdout


def test_start_reaches_ready_and_metrics_have_process_metrics(service: Service) -> None:
    service.figures["start_to_ready_s"] = round(service.start(), 2)
    pid = service.wait_running()
    assert service.show("Type")["Type"] == "notify"
    text = service.metrics()
    assert "tickflow_" in text
    # ProcSubset=pid hid /proc/stat, and with it every process_* metric (issue 19).
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_start_time_seconds"):
        assert re.search(rf"^{name} \d", text, re.M), f"{name} missing from /metrics"
    status = service.status()
    assert status["ready"] is True
    # Runs as the unit's dynamic user, not root.
    uid = service.box.run(["stat", "-c", "%u", f"/proc/{pid}"]).stdout.strip()
    assert uid != "0"


def test_reload_accepted_then_refused_with_a_nonzero_exit(service: Service) -> None:
    pid = service.wait_running()
    before = service.status()["config_version"]
    service.write("/etc/tickflow/tickflow.toml", service.config(max_position=500.0))
    accepted = service.box.systemctl("reload", UNIT, check=False)
    assert accepted.returncode == 0, accepted.stderr
    after = service.status()
    assert after["config_version"] != before
    assert after["reloads"]["success"] >= 1

    # A broken file: the daemon keeps the running config and the operator's command fails.
    service.write("/etc/tickflow/tickflow.toml", "[engine]\nagents = \"many\"\n")
    try:
        refused = service.box.systemctl("reload", UNIT, check=False)
    finally:
        service.write("/etc/tickflow/tickflow.toml", service.config())
    assert refused.returncode != 0, "systemctl reload succeeded although the config was refused"
    again = service.status()
    assert again["config_version"] == after["config_version"]
    assert again["reloads"]["invalid"] >= 1
    assert service.main_pid() == pid
    assert service.show("ActiveState")["ActiveState"] == "active"
    # `tickflow reload` (ExecReload=) said why, in the journal.
    assert "tickflow reload: refused" in service.box.journal(UNIT)
    assert service.box.systemctl("reload", UNIT, check=False).returncode == 0


def test_kill_9_is_restarted(service: Service) -> None:
    pid = service.wait_running()
    restarts = int(service.show("NRestarts")["NRestarts"])
    started = time.monotonic()
    service.box.run(["kill", "-9", str(pid)])
    new = service.wait_running(not_pid=pid)
    service.figures["kill9_to_ready_s"] = round(time.monotonic() - started, 2)
    assert new != pid
    assert int(service.show("NRestarts")["NRestarts"]) == restarts + 1
    assert "process_cpu_seconds_total" in service.metrics()


def test_a_blocked_event_loop_is_aborted_by_the_watchdog_and_restarted(
    service: Service,
) -> None:
    pid = service.wait_running()
    assert service.show("WatchdogUSec")["WatchdogUSec"] == "10s"
    started = time.monotonic()
    # A stopped process pings no more, exactly like a loop stuck in a runaway step.
    service.box.run(["kill", "-STOP", str(pid)])
    new = service.wait_running(not_pid=pid, timeout=60)
    service.figures["watchdog_to_ready_s"] = round(time.monotonic() - started, 2)
    assert new != pid
    assert "Watchdog timeout" in service.box.journal(UNIT)


def test_stop_under_load_drains_and_loses_nothing_acked(
    service: Service, tmp_path: Path
) -> None:
    service.wait_running()
    load = IntakeLoad(service.intake_port)
    load.start()
    try:
        wait_until(lambda: len(load.acked) >= 400 or not load.is_alive(),
                   "events flowing into the intake", WAIT_S)
        assert load.is_alive(), load.ended
        # Stop while runs are in flight, not between two.
        wait_until(lambda: service.status()["runs_in_flight"] > 0, "runs in flight", WAIT_S)
        took = service.stop()
    finally:
        load.finish()
    service.figures["stop_under_load_s"] = round(took, 2)
    # Stopped by its own exit 0 inside TimeoutStopSec (a kill would say result=timeout).
    assert service.ended() == {"result": "success", "code": "exited", "status": "0"}
    assert service.show("ActiveState")["ActiveState"] == "inactive"
    assert load.acked, load.ended
    assert not load.refused, load.refused[:3]
    db = service.db_copy(tmp_path / "db")
    assert set(load.acked) <= _journal_seqs(db)
    states = _runs_by_state(db)
    assert states.get("completed", 0) > 0, states
    # Drained: no run left in flight.
    assert not states.get("running"), states
    assert not states.get("pending"), states


def test_a_slow_drain_is_cut_at_drain_timeout_inside_timeoutstopsec(
    service: Service, tmp_path: Path
) -> None:
    # Steps of 60 s, drain_timeout_s = 2 < TimeoutStopSec = 30 s.
    service.write("/etc/tickflow/tickflow.toml",
                  service.config(drain_timeout_s=2.0, sleep_s=60.0))
    service.start()
    load = IntakeLoad(service.intake_port, batch=4, symbols=4, max_batches=1)
    load.start()
    load.finish(halt=False)
    assert len(load.acked) == 4, (load.acked, load.refused, load.ended)
    wait_until(lambda: service.status()["runs_in_flight"] >= 4, "4 runs in flight", WAIT_S)
    took = service.stop()
    service.figures["slow_drain_stop_s"] = round(took, 2)
    assert service.ended() == {"result": "success", "code": "exited", "status": "0"}
    assert took >= 2.0  # it waited for the drain deadline, then cancelled
    db = service.db_copy(tmp_path / "db")
    assert set(load.acked) <= _journal_seqs(db)
    # Cut runs stay in flight in storage, to be resumed at the next start.
    states = _runs_by_state(db)
    assert states.get("running", 0) + states.get("pending", 0) >= 4, states


def test_a_drain_longer_than_timeoutstopsec_is_killed_and_loses_nothing_acked(
    service: Service, tmp_path: Path
) -> None:
    # The rule docs/deploy.md states, shown failing: drain_timeout_s (60 s) above TimeoutStopSec
    # (3 s here) -> systemd SIGKILLs the daemon mid-drain. Storage is crash-safe, so the acked
    # events survive and the runs resume at the next start.
    dropin = "/etc/systemd/system/tickflow.service.d/stop.conf"
    service.write(dropin, "[Service]\nTimeoutStopSec=3s\n")
    service.write("/etc/tickflow/tickflow.toml",
                  service.config(drain_timeout_s=60.0, sleep_s=60.0))
    service.box.systemctl("daemon-reload")
    try:
        service.start()
        load = IntakeLoad(service.intake_port, batch=4, symbols=4, max_batches=1)
        load.start()
        load.finish(halt=False)
        assert len(load.acked) == 4, (load.acked, load.refused, load.ended)
        wait_until(lambda: service.status()["runs_in_flight"] >= 4, "4 runs in flight", WAIT_S)
        service.stop()
        assert service.ended() == {"result": "timeout", "code": "killed", "status": "KILL"}
        assert service.show("Result")["Result"] == "timeout"
        db = service.db_copy(tmp_path / "db")
        assert set(load.acked) <= _journal_seqs(db)
    finally:
        service.box.run(["rm", "-f", dropin])
        service.write("/etc/tickflow/tickflow.toml", service.config())
        service.box.systemctl("daemon-reload")
    # The next start picks the cut runs up again.
    service.start()
    recovery = service.status()["recovery"]
    assert recovery, recovery
    service.figures["recovery_after_kill"] = recovery


# Settings of the unit that are not the sandbox (or cannot be given to a transient unit).
_NOT_SANDBOX = frozenset({
    "Type", "NotifyAccess", "WatchdogSec", "ExecStart", "ExecReload", "KillSignal",
    "TimeoutStartSec", "TimeoutStopSec", "Restart", "RestartSec", "StandardOutput",
    "StandardError", "SyslogIdentifier", "LoadCredential", "StateDirectory",
})

# Run under the unit's sandbox: one JSON line of what each attempt gave.
_PROBE = r"""
import errno, json, mmap, os, socket, subprocess, sys

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def write(path):
    with open(path, "w") as f:
        f.write("x")

state = os.environ["STATE_DIRECTORY"]
denied = subprocess.run(
    [sys.executable, "-c", "import os; os.setpriority(os.PRIO_PROCESS, 0, 5)"],
    capture_output=True)
print(json.dumps({
    "uid": os.getuid(),
    "state": attempt(lambda: write(os.path.join(state, "probe"))),
    "etc": attempt(lambda: write("/etc/tickflow/probe")),
    "opt": attempt(lambda: write("/opt/tickflow/probe")),
    "usr": attempt(lambda: write("/usr/local/probe")),
    "var": attempt(lambda: write("/var/lib/probe")),
    "root": attempt(lambda: write("/root/probe")),
    "wx": attempt(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE
                                    | mmap.PROT_EXEC)),
    "netlink": attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
    "denied_syscall": {"returncode": denied.returncode,
                       "stderr": denied.stderr.decode()[-300:]},
}))
"""


def _sandbox_properties() -> list[str]:
    """The unit's [Service] sandbox settings, as ``systemd-run -p`` arguments."""
    props = []
    section = ""
    for raw in UNIT_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]" and key not in _NOT_SANDBOX:
            props += ["-p", f"{key}={value}"]
    # Its own state directory: sharing tickflow's would hand it to the probe's dynamic user.
    return [*props, "-p", "StateDirectory=tickflow-probe"]


def test_the_sandbox_holds(service: Service) -> None:
    pid = service.wait_running()
    status = service.box.run(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # a filter is installed
    assert int(fields["CapEff"], 16) == 0
    assert int(fields["CapBnd"], 16) == 0
    assert fields["Uid"].split()[0] != "0"

    # The same settings on a probe next to the service (systemd-run, a transient unit).
    probe = service.box.run(
        ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", *_sandbox_properties(),
         f"{VENV}/bin/python", "-c", _PROBE],
        check=False,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    got = orjson.loads(probe.stdout.strip().splitlines()[-1])
    assert got["uid"] != 0
    assert got["state"] == "ok"  # the state directory is the one writable place
    for where in ("etc", "opt", "usr", "var", "root"):
        assert got[where] in ("EROFS", "EACCES", "ENOENT", "EPERM"), (where, got)
    assert got["wx"] in ("EPERM", "EACCES"), got  # MemoryDenyWriteExecute=
    assert got["netlink"] == "EAFNOSUPPORT", got  # RestrictAddressFamilies=
    # A syscall the filter denies fails with EPERM instead of killing with SIGSYS.
    denied = got["denied_syscall"]
    assert denied["returncode"] == 1, denied
    assert "PermissionError" in denied["stderr"], denied

    score = service.box.run(["systemd-analyze", "security", UNIT, "--no-pager"],
                            check=False).stdout
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", score)
    assert found, score[-2000:]
    service.figures["security_exposure"] = float(found.group(1))
    assert float(found.group(1)) <= 2.0, score[-2000:]
