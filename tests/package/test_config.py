"""Settings: precedence kwargs > env > file > default, and one clear line per invalid value."""

from __future__ import annotations

import json
import logging

import pytest

from scopewatch.config import Settings, is_loopback, load_settings


def test_defaults_match_the_design():
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.instrument == {"scopes", "tasks", "locks", "sessions"}
    assert (settings.spans, settings.slow_threshold, settings.stack_depth) == ("anomalies", 1.0, 8)
    assert (settings.debugpy_host, settings.debugpy_port) == ("127.0.0.1", 5678)
    assert settings.max_tracked == 100_000
    assert settings.problems == ()


def test_precedence_kwargs_over_env_over_file(tmp_path):
    config = tmp_path / "scopewatch.json"
    config.write_text(json.dumps({"spans": "none", "slow_threshold": 3, "stack_depth": 4}))
    environ = {
        "OTEL_PYTHON_SCOPEWATCH_CONFIG_FILE": str(config),
        "OTEL_PYTHON_SCOPEWATCH_SPANS": "all",
        "OTEL_PYTHON_SCOPEWATCH_SLOW_THRESHOLD": "2.5",
    }
    settings = load_settings({"slow_threshold": 0.25}, environ)
    assert settings.spans == "all"  # env beats file
    assert settings.slow_threshold == 0.25  # kwargs beat env
    assert settings.stack_depth == 4  # file beats default
    assert settings.problems == ()


def test_yaml_file_and_lists(tmp_path):
    config = tmp_path / "scopewatch.yaml"
    config.write_text("instrument: [scopes, locks]\nexclude: ['*healthcheck*', 'vendor/*']\n")
    settings = load_settings(environ={"OTEL_PYTHON_SCOPEWATCH_CONFIG_FILE": str(config)})
    assert settings.instrument == {"scopes", "locks"}
    assert settings.exclude == ("*healthcheck*", "vendor/*")


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("SPANS", "sometimes", "one of all, anomalies, none"),
        ("SLOW_THRESHOLD", "-1", "a number >= 0"),
        ("SLOW_THRESHOLD", "fast", "a number >= 0"),
        ("STACK_DEPTH", "2.5", "an integer from 0 to 256"),
        ("EXCEPTION_NOTES", "maybe", "true or false"),
        ("INSTRUMENT", "scopes,threads", "a comma-separated subset of scopes, tasks, locks"),
        ("DEBUGPY_PORT", "70000", "an integer from 1 to 65535"),
        ("DEBUGPY_HOST", "bad host", "a host name or IP address"),
        ("MAX_TRACKED", "0", "an integer >= 1"),
    ],
)
def test_invalid_env_value_warns_once_and_uses_default(caplog, variable, value, accepted):
    name = f"OTEL_PYTHON_SCOPEWATCH_{variable}"
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        settings = load_settings(environ={name: value})
    default = getattr(Settings(), variable.lower())
    assert getattr(settings, variable.lower()) == default
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert f"{name}={value!r}" in message and accepted in message and "default" in message


def test_unreadable_and_malformed_config_files(tmp_path, caplog):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        missing = load_settings(environ={"OTEL_PYTHON_SCOPEWATCH_CONFIG_FILE": "/nonexistent.yaml"})
        malformed = load_settings(environ={"OTEL_PYTHON_SCOPEWATCH_CONFIG_FILE": str(broken)})
    assert missing == Settings() and malformed == Settings()
    assert "cannot be read" in missing.problems[0]
    assert "is not valid" in malformed.problems[0]
    assert len(caplog.records) == 2


def test_unknown_file_key_is_named(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"spanz": "all"}))
    settings = load_settings(environ={"OTEL_PYTHON_SCOPEWATCH_CONFIG_FILE": str(config)})
    assert "unknown key 'spanz'" in settings.problems[0]


def test_invalid_kwarg_does_not_raise():
    settings = load_settings({"spans": 3, "stack_depth": True}, environ={}, warn=False)
    assert settings.spans == "anomalies" and settings.stack_depth == 8
    assert len(settings.problems) == 2


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.2", False),
        ("example.org", False),
    ],
)
def test_loopback_detection(host, loopback):
    assert is_loopback(host) is loopback
