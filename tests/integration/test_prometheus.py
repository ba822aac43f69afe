"""The shipped monitoring config against a real daemon and a real Prometheus.

``tickflow run`` (metrics on a free port) is scraped every second by a Prometheus started here;
every PromQL expression of the shipped Grafana dashboard and alert rules is then sent to
Prometheus's query API: all must parse and evaluate, and every dashboard query must return
data. ``promtool`` checks the shipped scrape config and rules. Prometheus is a system package
(``make system-deps``); without it these tests fail -- they never skip.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon import start, wait_for_log

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "config" / "prometheus"
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "tickflow.json"
JOB = "tickflow_it"
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval is for a 1 s scrape interval (>= 4 scrapes)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"`{tool}` is not installed: run `make system-deps` (Debian's prometheus package)"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def poll(what: str, check: Any, timeout: float = 60.0, every: float = 0.2) -> Any:
    """Call ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError) as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(every)  # the polling period of a bounded wait
    raise AssertionError(f"gave up waiting for {what} after {timeout}s; last: {last!r}")


def dashboard_queries() -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query in the shipped dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for var, value in {
        "$__rate_interval": RATE_INTERVAL,
        "$__interval": "1s",
        "${job}": JOB,
        "$job": JOB,
    }.items():
        expr = expr.replace(var, value)
    assert "$" not in expr.replace("$labels", "").replace("$value", ""), expr
    return expr


def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    promtool = need("promtool")
    for args in (
        ["check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        ["check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
    ):
        proc = subprocess.run([promtool, *args], capture_output=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stdout.decode(), proc.stderr.decode())


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[int]:
    """A running ``tickflow run`` with metrics on a free port; yields the port."""
    config = tmp_path / "tickflow.toml"
    config.write_text(
        (ROOT / "config" / "default.toml").read_text()
        + '\n[metrics]\nhost = "127.0.0.1"\nport = 0\n'
    )
    with start(["run", "--config", str(config)], cwd=tmp_path) as proc:
        try:
            record = wait_for_log(proc, "metrics listening")
            assert record["host"] == "127.0.0.1"
            yield int(record["port"])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_daemon_serves_health_readiness_and_metrics(daemon: int) -> None:
    base = f"http://127.0.0.1:{daemon}"
    assert http_get(f"{base}/healthz")[0] == 200
    # Ready once storage is open and the sources run (not yet when the port is first logged).
    poll("daemon ready", lambda: http_get(f"{base}/readyz")[0] == 200, timeout=30)
    status, body = http_get(f"{base}/metrics")
    assert status == 200
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"tickflow_build_info", "tickflow_events_received", "tickflow_queue_depth"} <= names
    assert http_get(f"{base}/nope")[0] == 404


@pytest.fixture
def prometheus(tmp_path: Path, daemon: int) -> Iterator[str]:
    """A real Prometheus scraping the daemon every second with the shipped rules; yields its
    base URL once the target is up and has been scraped often enough for ``rate()``."""
    binary = need("prometheus")
    alerts = tmp_path / "alerts.yml"
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", alerts)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {alerts}\n"
        f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{daemon}']\n"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        def target_up() -> bool:
            _, body = http_get(f"{base}/api/v1/targets")
            targets = json.loads(body)["data"]["activeTargets"]
            return any(t["labels"]["job"] == JOB and t["health"] == "up" for t in targets)

        def scraped_enough() -> bool:
            data = query(base, f'count_over_time(up{{job="{JOB}"}}[{RATE_INTERVAL}])')
            return bool(data["result"]) and float(data["result"][0]["value"][1]) >= 5

        poll("Prometheus to scrape tickflow", lambda: proc.poll() is None and target_up())
        poll("five scrapes", scraped_enough)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url)
    payload = json.loads(body)
    assert status == 200, (expr, payload)
    assert payload["status"] == "success", (expr, payload)
    return dict(payload["data"])


def test_every_dashboard_and_alert_query_works_against_real_prometheus(prometheus: str) -> None:
    panels = dashboard_queries()
    assert len(panels) >= 15
    empty = [
        (title, expr) for title, expr in panels if not query(prometheus, substitute(expr))["result"]
    ]
    assert not empty, f"dashboard queries returning no data: {empty}"

    # The $job variable's query: label_values(tickflow_build_info, job).
    url = f"{prometheus}/api/v1/label/job/values?" + urllib.parse.urlencode(
        {"match[]": "tickflow_build_info"}
    )
    assert JOB in json.loads(http_get(url)[1])["data"]

    # Prometheus loaded the shipped rules (copied verbatim) and evaluates them without errors;
    # each rule's expression, as Prometheus parsed it, also answers the query API.
    def rules_evaluated() -> list[dict[str, Any]]:
        groups = json.loads(http_get(f"{prometheus}/api/v1/rules")[1])["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        done = all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        return rules if rules and done else []

    rules = poll("the alert rules to be evaluated", rules_evaluated, timeout=30)
    shipped = (PROMETHEUS_DIR / "alerts.yml").read_text()
    assert len(rules) == shipped.count("- alert:") >= 6
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert f"alert: {rule['name']}" in shipped
        query(prometheus, substitute(rule["query"]))
