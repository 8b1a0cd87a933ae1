"""deploy/: a real Prometheus scrapes a process whose violations scopewatch detects and counts.

The process (tests/deploy/_violator.py) is instrumented with ``ScopeWatchInstrumentor`` and the
OpenTelemetry Prometheus exporter, and commits real ``cross_task_exit`` violations. Prometheus
(the Debian binary, on a free loopback port, with a temporary data directory) scrapes it every
second and evaluates deploy/prometheus/rules/scopewatch.rules.yml every second, with every
``for:`` shortened to 2s by substitution so the alert fires within seconds instead of minutes.
Then every PromQL expression of the Grafana dashboard and of the Grafana alert rules is run
against that Prometheus.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "scopewatch.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "scopewatch.json"
GRAFANA_ALERTS = DEPLOY / "grafana" / "provisioning" / "alerting" / "scopewatch-alerts.yaml"
VIOLATOR = Path(__file__).with_name("_violator.py")
JOB = "violator"
SHORT_FOR = "2s"
# What Grafana substitutes into a query before sending it to Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5s",
    "$__interval": "1s",
    "$__range": "5m",
    '"$job"': '".*"',
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def query(base: str, promql: str) -> dict[str, Any]:
    """Run an instant query; the parsed API answer whatever its status."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as error:  # 400/422 carry the PromQL error as JSON
        return dict(json.load(error))


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
    return expr


@dataclass
class Violator:
    """The violating process and the port of its /metrics."""

    proc: subprocess.Popen[str]
    port: int
    log: IO[str]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            self.log.seek(0)
            pytest.fail(f"the violator exited with {self.proc.returncode}:\n{self.log.read()}")


@pytest.fixture(scope="module")
def violator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Violator]:
    """The violating process, stopped at teardown."""
    log = (tmp_path_factory.mktemp("violator") / "stderr.log").open("w+")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen(
        [sys.executable, str(VIOLATOR), "100"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        log.seek(0)
        assert line.startswith("PORT "), f"violator did not start: {line!r}\n{log.read()}"
        yield Violator(proc, int(line.split()[1]), log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def prometheus(violator: Violator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping the violator; yields its base URL."""
    workdir = tmp_path_factory.mktemp("prometheus")
    rules = re.sub(r"(?m)^(\s+for:\s*)\S+$", rf"\g<1>{SHORT_FOR}", RULES.read_text())
    assert rules != RULES.read_text(), "no `for:` found to shorten"
    (workdir / "scopewatch.rules.yml").write_text(rules)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "scopewatch.rules.yml")],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{violator.port}"]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("w+")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"prometheus did not become ready:\n{log.read()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def wait_for_firing(
    base: str, alertname: str, violator: Violator, timeout: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    alerts: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        violator.check_alive()
        alerts = get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
        firing = [
            a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]
        if firing:
            return firing
        time.sleep(0.5)
    pytest.fail(f"{alertname} did not fire within {timeout}s; alerts: {alerts}")


def test_violation_alert_fires_on_real_violations(prometheus: str, violator: Violator) -> None:
    firing = wait_for_firing(prometheus, "ScopewatchViolations", violator, timeout=60)

    labels = firing[0]["labels"]
    assert labels["job"] == JOB
    assert labels["scopewatch_violation_kind"] == "cross_task_exit"
    assert labels["severity"] == "warning"
    assert "scopewatch.violation.kind=cross_task_exit" in firing[0]["annotations"]["description"]
    # The counter behind it carries the contract's labels, as scopewatch counted them.
    series = query(prometheus, f'scopewatch_violations_total{{job="{JOB}"}}')["data"]["result"]
    assert series
    metric = series[0]["metric"]
    assert metric["scopewatch_violation_kind"] == "cross_task_exit"
    assert metric["scopewatch_violation_cause"] == "other_task"
    assert metric["scopewatch_scope_kind"] in {"asyncio.timeout", "anyio.CancelScope"}
    assert float(series[0]["value"][1]) >= 1
    # No session errors happened: that rule stays silent.
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "ScopewatchSessionErrors"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / refId, expr) of every dashboard target."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    return found


def test_every_dashboard_and_grafana_rule_query_evaluates(
    prometheus: str, violator: Violator
) -> None:
    wait_for_firing(prometheus, "ScopewatchViolations", violator, timeout=60)
    queries = dashboard_queries()
    rules = yaml.safe_load(GRAFANA_ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for item in rule["data"]:
                if "expr" in item["model"]:
                    queries.append((f"{rule['title']} / {item['refId']}", item["model"]["expr"]))
    assert len(queries) >= 20

    results = {}
    for where, expr in queries:
        answer = query(prometheus, substitute(expr))
        assert answer["status"] == "success", f"{where}: {expr}\n{answer}"
        results[where] = answer["data"]["result"]

    # The violation panels and the Grafana violation rule see the violator's violations.
    for where in (
        "Violations by kind and service / A",
        "Violations by kind and cause (time range) / A",
        "ScopewatchViolations / A",
    ):
        kinds = {r["metric"].get("scopewatch_violation_kind") for r in results[where]}
        assert "cross_task_exit" in kinds, where
    firing = {r["metric"]["alertname"] for r in results["Alerts firing (Prometheus rules) / A"]}
    assert "ScopewatchViolations" in firing
    # Every move_on_after of the violator times out, so ScopewatchDeadlinesExceeded may fire
    # too once its share is counted; nothing of the violator fails or ends a session.
    assert not firing & {"ScopewatchSessionErrors", "ScopewatchTaskErrors"}
    # The violated scopes are anomalous: their durations are measured in every DURATIONS mode.
    assert results["Anomalous scopes by kind and outcome / A"]
    # Every ended scope and task is counted (scopewatch_scopes_total / scopewatch_tasks_total).
    ended = {
        (r["metric"]["scopewatch_scope_kind"], r["metric"]["scopewatch_scope_outcome"])
        for r in results["Scopes ended by kind and outcome / A"]
    }
    assert ("anyio.fail_after", "ok") in ended, ended
    assert results["Tasks ended by outcome / A"]
    assert results["Active tasks / A"]

    # The dashboard's service variable lists the violator.
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
    assert match
    answer = query(prometheus, match.group(1))
    assert JOB in {r["metric"][match.group(2)] for r in answer["data"]["result"]}
