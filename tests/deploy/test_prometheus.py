"""deploy/prometheus: the alert rules and the config, checked and unit-tested by real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.paths import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "scopewatch.rules.yml"
RULES_TEST = PROMETHEUS / "scopewatch.rules.test.yml"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_rules_unit_tests_pass() -> None:
    """Violation alert fires for a violation series (and for a single one), silent for zero;
    session-error alert likewise; deadline and task-error shares fire above their threshold
    and stay silent for a healthy service; the recording rules' rates (scenarios in
    deploy/prometheus/scopewatch.rules.test.yml)."""
    result = promtool("test", "rules", RULES_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_catch_a_rule_blind_to_the_first_violation(tmp_path: Path) -> None:
    """A plain increase() misses a counter series born at 1: the unit tests must notice."""
    (tmp_path / "rules").mkdir()
    blind = RULES.read_text().replace(
        "(scopewatch_violations_total unless scopewatch_violations_total offset 5m)\n"
        "            or increase",
        "increase",
    )
    assert blind != RULES.read_text()
    (tmp_path / "rules" / RULES.name).write_text(blind)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)

    result = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)

    assert result.returncode != 0
    assert 'scopewatch_violation_kind="scope_leaked"' in result.stdout + result.stderr


def test_unit_tests_catch_rules_counting_with_the_duration_histograms(tmp_path: Path) -> None:
    """Since 0.3 a duration histogram's ``_count`` holds anomalies only: a share of ended scopes
    or tasks computed from it (the 0.2 way) is "anomalies / anomalies" and fires on a healthy
    service. The unit tests must notice."""
    (tmp_path / "rules").mkdir()
    old_style = (
        RULES.read_text()
        .replace("scopewatch_scopes_total", "scopewatch_scope_duration_seconds_count")
        .replace("scopewatch_tasks_total", "scopewatch_task_duration_seconds_count")
    )
    assert old_style != RULES.read_text()
    (tmp_path / "rules" / RULES.name).write_text(old_style)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)

    result = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert 'job="calm"' in output
    assert "ScopewatchDeadlinesExceeded" in output
    assert "ScopewatchTaskErrors" in output


def test_unit_tests_catch_a_silent_rule(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    silent = (
        RULES.read_text()
        .replace(") > 0\n", ") > 1e9\n")
        .replace("> 0.1\n", "> 1e9\n")
        .replace("> 0.05\n", "> 1e9\n")
    )
    (tmp_path / "rules" / RULES.name).write_text(silent)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)

    result = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ScopewatchViolations" in output
    assert "ScopewatchSessionErrors" in output
    assert "ScopewatchDeadlinesExceeded" in output
    assert "ScopewatchTaskErrors" in output


def test_compose_prometheus_config_is_valid() -> None:
    """The compose config's scrape target (otel-collector:8889) need not resolve to pass."""
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_alert_rules_shape() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
    assert set(rules) == {
        "ScopewatchViolations",
        "ScopewatchSessionErrors",
        "ScopewatchDeadlinesExceeded",
        "ScopewatchTaskErrors",
    }
    violations = rules["ScopewatchViolations"]
    assert "scopewatch_violations_total" in violations["expr"]
    assert "by (job, scopewatch_violation_kind)" in violations["expr"]
    sessions = rules["ScopewatchSessionErrors"]
    assert (
        'scopewatch_session_duration_seconds_count{scopewatch_session_outcome="error"}'
        in sessions["expr"]
    )
    assert "by (job, scopewatch_session_kind)" in sessions["expr"]
    for name in ("ScopewatchDeadlinesExceeded", "ScopewatchTaskErrors"):
        assert "_duration_seconds_count" not in rules[name]["expr"]  # anomalies only since 0.3
    assert (
        'scopewatch_scopes_total{scopewatch_scope_outcome="deadline_exceeded"}'
        in (rules["ScopewatchDeadlinesExceeded"]["expr"])
    )
    assert (
        'scopewatch_tasks_total{scopewatch_task_outcome="error"}'
        in (rules["ScopewatchTaskErrors"]["expr"])
    )
    recorded = {
        rule["record"]: rule["expr"]
        for group in groups
        for rule in group["rules"]
        if "record" in rule
    }
    assert "scopewatch_scopes_total" in recorded["job_kind_outcome:scopewatch_scopes:rate5m"]
    assert "scopewatch_tasks_total" in recorded["job_outcome:scopewatch_tasks:rate5m"]
    for rule in rules.values():
        assert rule["for"] in {"1m", "2m", "5m"}
        assert rule["labels"]["severity"] == "warning"
        assert rule["annotations"]["summary"]
