"""A real systemd, booted as PID 1 of its own pid/mount/uts/cgroup namespaces, for the live unit
test (tests/integration/test_systemd_live.py). Root only.

The host stays untouched: ``/etc``, ``/var`` and ``/opt`` are overlays whose upper layers live
in the test's temporary directory, ``/run`` and ``/tmp`` are fresh tmpfs, ``/sys`` and
``/proc/sys`` are read-only, and the units of the minimal boot (``basic.target``) that would
reach outside the namespaces anyway (tmpfiles on the host's ``/dev``, sysctl, kernel modules,
the clock, apt timers) are masked in the overlay. The box gets its own cgroup v2 subtree, removed
again at the end.

Order matters (found by trial, see issue 19): ``/sys`` is bound read-only *before* cgroup2 is
mounted on ``/sys/fs/cgroup`` (else systemd falls back to hybrid mode and writes to the host's v1
hierarchies), and ``/`` is made rshared before systemd starts (else ``LoadCredential=`` yields an
empty credentials directory). Every ``nsenter`` runs under ``timeout``: a stray one would block
the shutdown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MASKED_UNITS", "SystemdBox", "missing_requirements"]

SYSTEMD = Path("/lib/systemd/systemd")
TOOLS = ("unshare", "nsenter", "timeout", "mount")

# Pulled in by basic.target, and would act on what the namespaces do not separate (the host's
# /dev, /proc/sys, kernel modules, the clock) or just cost time.
MASKED_UNITS = (
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "kmod-static-nodes.service",
    "systemd-modules-load.service",
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-hwdb-update.service",
    "systemd-firstboot.service",
    "systemd-repart.service",
    "systemd-machine-id-commit.service",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
)

# Runs as the unshared child, before systemd: $1 = the box's directory on the host.
_BOOT = r"""
set -eu
box=$1
mount --make-rshared /
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount --bind /sys /sys
mount -o remount,bind,ro /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
for d in etc var opt; do
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$box/$d,workdir=$box/work-$d" "/$d"
done
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
exec env -i container=tickflow-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --unit=basic.target --log-target=journal --log-level=notice \
    --show-status=no
"""


def _cgroup2_root() -> Path | None:
    """Where the host mounts the cgroup v2 hierarchy (unified, or hybrid's ``unified``)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def missing_requirements() -> str | None:
    """Why the box cannot boot here, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts, systemd as PID 1)"
    if not SYSTEMD.is_file():
        return f"no systemd at {SYSTEMD} (make system-deps)"
    for tool in (*TOOLS, "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} not found (make system-deps)"
    if _cgroup2_root() is None:
        return "no cgroup v2 hierarchy mounted on the host"
    return None


class SystemdBox:
    """One booted systemd; :meth:`shutdown` (or the context manager) powers it off."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # systemd's pid as the host sees it
        self.console = root / "console.log"
        cgroup2 = _cgroup2_root()
        assert cgroup2 is not None
        self.cgroup = cgroup2 / f"tickflow-box-{os.getpid()}-{id(self):x}"

    # -- the host-side view of the overlays -------------------------------------------------
    def upper(self, path: str) -> Path:
        """Where ``path`` (under /etc, /var or /opt in the box) is written on the host."""
        top, _, rest = path.lstrip("/").partition("/")
        assert top in ("etc", "var", "opt"), path
        return self.root / top / rest

    def boot(self, timeout: float = 60.0) -> None:
        for d in ("etc", "var", "opt"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
            (self.root / f"work-{d}").mkdir(exist_ok=True)
        units = self.upper("/etc/systemd/system")
        units.mkdir(parents=True, exist_ok=True)
        for unit in MASKED_UNITS:
            link = units / unit
            if not link.is_symlink():
                link.symlink_to("/dev/null")
        # The journal in /run only: the host's persistent journal (visible through the /var
        # overlay) is neither copied up nor appended to.
        journald = self.upper("/etc/systemd/journald.conf.d")
        journald.mkdir(parents=True, exist_ok=True)
        (journald / "box.conf").write_text("[Journal]\nStorage=volatile\n")
        self.cgroup.mkdir()
        with self.console.open("wb") as console:
            # The shell joins the box's cgroup first, so the cgroup namespace is rooted there.
            self.proc = subprocess.Popen(
                ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "box",
                 str(self.cgroup), "unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts",
                 "--cgroup", "--mount-proc", "--propagation", "private", "sh", "-c", _BOOT, "boot",
                 str(self.root)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self.pid:
            self._check_alive()
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids and Path(f"/proc/{pids[0]}/exe").resolve() == SYSTEMD.resolve():
                    self.pid = int(pids[0])
            self._bounded(deadline, "systemd to start")
        while True:
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            self._check_alive()
            self._bounded(deadline, f"the box to boot (state {state!r})")

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"the box's systemd exited ({self.proc.returncode}): "
                + self.console.read_text(errors="replace")[-3000:]
            )

    def _bounded(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"gave up waiting for {what}: "
                + self.console.read_text(errors="replace")[-3000:]
            )
        time.sleep(0.05)  # polling interval of a bounded wait

    # -- driving it ------------------------------------------------------------------------------
    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside every namespace of the box (``timeout`` bounds a stray nsenter)."""
        assert self.pid
        proc = subprocess.run(
            ["timeout", "-k", "5", str(timeout), "nsenter", "-t", str(self.pid), "-a",
             "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", *argv],
            capture_output=True, text=True, timeout=timeout + 15, input=None
            if input is None else input.decode(),
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def systemctl(self, *args: str, check: bool = True,
                  timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        """This boot's journal of ``unit`` (the daemon's lines and systemd's about it)."""
        return self.run(["journalctl", "--no-pager", "-b", "-o", "cat", "-u", unit],
                        check=False).stdout

    # -- ending it -------------------------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            if self.pid:
                # SIGRTMIN+4: systemd's "poweroff"; in a pid namespace PID 1 then just exits.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGRTMIN + 4)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Killing a pid namespace's init kills everything in the namespace.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                proc.kill()
                proc.wait(timeout=10)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        if not self.cgroup.is_dir():
            return
        # Children first; each is empty once the namespace's processes are gone.
        for path in sorted(
            (p for p in self.cgroup.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts), reverse=True,
        ):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            self.cgroup.rmdir()

    def __enter__(self) -> SystemdBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
