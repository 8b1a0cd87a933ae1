"""Hostile configuration: every setting, from every source, with every kind of bad value.

Each invalid value gives exactly one short, printable log line naming the setting, showing the
value and saying what is accepted; the default applies; nothing raises; the other settings of
the same source still apply. The list of settings is derived from ``Settings`` and checked
against the parsers and ``scopewatch.environment_variables``, so a new setting is covered (or
this module fails until ``KINDS`` says what it accepts).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scopewatch import config, environment_variables
from scopewatch._shown import shown
from scopewatch.config import (
    CONFIG_FILE_VARIABLE,
    DURATION_MODES,
    ENV_PREFIX,
    FEATURES,
    MAX_FILE_BYTES,
    SPAN_MODES,
    Settings,
    load_settings,
)

MAX_LINE = 600
"""A problem line is at most this long, whatever the value (the fixed text is ~250)."""
MEGABYTE = "x" * (1 << 20)

SETTINGS = tuple(f.name for f in dataclasses.fields(Settings) if f.name != "problems")
"""Every setting, from the definition itself."""

# What each setting accepts, written from DESIGN section 5: (kind, minimum, maximum).
KINDS: dict[str, tuple[str, float, float]] = {
    "instrument": ("features", 0, 0),
    "spans": ("choice", 0, 0),
    "slow_threshold": ("float", 0, math.inf),
    "stack_depth": ("int", 0, 256),
    "exception_notes": ("bool", 0, 0),
    "exclude": ("globs", 0, 0),
    "rules": ("text", 0, 0),
    "rules_file": ("path", 0, 0),
    "default_rule": ("bool", 0, 0),
    "debugpy": ("bool", 0, 0),
    "debugpy_host": ("host", 0, 0),
    "debugpy_port": ("int", 1, 65535),
    "debugpy_allow_remote": ("bool", 0, 0),
    "debugpy_wait": ("float", 0, 3600),
    "max_tracked": ("int", 1, math.inf),
    "log_limit": ("int", 0, math.inf),
    "durations": ("choice", 0, 0),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "spans": ("all", "anomalies", "none"),
    "durations": ("anomalies", "all"),
}
"""The accepted words of each ``choice`` setting, from DESIGN section 5."""


def default(name: str) -> Any:
    return getattr(Settings(), name)


def variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


# --- the oracle: is a raw value acceptable for a setting? (independent of config.py) --------


def _number_ok(raw: Any, kind: str, low: float, high: float) -> bool:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return False
    try:
        if kind == "int":
            if isinstance(raw, float):
                if not (math.isfinite(raw) and raw.is_integer()):
                    return False
                value: float = int(raw)
            else:
                value = int(raw.strip()) if isinstance(raw, str) else raw
        else:
            value = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (ValueError, OverflowError):
        return False
    finite = not isinstance(value, float) or math.isfinite(value)
    return finite and low <= value <= high


def _host_ok(raw: Any) -> bool:
    if not isinstance(raw, str):
        return False
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            return False
        text = text[1:-1]
    return (
        0 < len(text) <= 253
        and text.isprintable()
        and not any(c.isspace() or c in "[]/\\@" for c in text)
    )


def acceptable(name: str, raw: Any) -> bool:
    """Whether ``raw`` is a valid value of setting ``name``."""
    kind, low, high = KINDS[name]
    strings = isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw)
    if kind == "bool":
        if isinstance(raw, bool) or (isinstance(raw, int) and raw in (0, 1)):
            return True
        words = ("1", "true", "yes", "on", "0", "false", "no", "off")
        return isinstance(raw, str) and raw.strip().lower() in words
    if kind in ("int", "float"):
        return _number_ok(raw, kind, low, high)
    if kind == "choice":
        return isinstance(raw, str) and raw.strip().lower() in CHOICES[name]
    if kind == "features":
        parts = raw.split(",") if isinstance(raw, str) else raw if strings else None
        return parts is not None and all(p.strip() in FEATURES for p in parts if p.strip())
    if kind == "globs":
        return isinstance(raw, str) or strings
    if kind == "text":
        return isinstance(raw, str)
    if kind == "path":
        return isinstance(raw, str) and "\0" not in raw
    return _host_ok(raw)


# --- hostile values ------------------------------------------------------------------------

ENV_VALUES: dict[str, str] = {
    "list": "[1, 2]",
    "dict": "{'a': 1}",
    "null": "null",
    "none": "None",
    "negative": "-1",
    "zero": "0",
    "nan": "nan",
    "inf": "inf",
    "minus-inf": "-inf",
    "1e400": "1e400",
    "10**100": str(10**100),
    "5000 digits": "1" * 5000,
    "fraction": "2.5",
    "whitespace inside": "a b",
    "tab": "\t1\t",
    "nul": "a\x00b",
    "control": "\x1b[31mred",
    "rtl override": "\u202eevil",
    "surrogate": "\udcff\udcfe",
    "brackets": "[127.0.0.1]",
    "1 MB": MEGABYTE,
    "word": "sometimes",
}
"""Environment values are strings (undecodable bytes arrive as surrogate escapes)."""

OBJECT_VALUES: dict[str, Any] = {
    "list of ints": [1, 2],
    "list of lists": [[1, [2]], [3]],
    "dict": {"a": [1, {"b": None}]},
    "empty dict": {},
    "empty list": [],
    "true": True,
    "false": False,
    "negative": -1,
    "negative float": -0.5,
    "zero": 0,
    "nan": float("nan"),
    "inf": float("inf"),
    "minus-inf": float("-inf"),
    "10**100": 10**100,
    "10**400": 10**400,
    "fraction": 2.5,
    "empty": "",
    "whitespace": " \t\n ",
    "nul": "a\x00b",
    "control": "\x1b[31mred\r\n",
    "1 MB": MEGABYTE,
    "1 MB list": [MEGABYTE],
    "word": "sometimes",
}
"""Values a YAML/JSON file or ``instrument()`` can carry."""

KWARG_ONLY: dict[str, Any] = {
    "surrogate": "\udcff",
    "bytes": b"all",
    "object": object(),
    "raising repr": type("Evil", (), {"__repr__": lambda self: 1 / 0})(),
}

COMPANION = {"spans": "all", "max_tracked": 7}
"""A valid setting given in the same source: it must survive the bad one."""


def companion(name: str) -> tuple[str, Any]:
    key = "max_tracked" if name == "spans" else "spans"
    return key, COMPANION[key]


def as_env(key: str, value: Any) -> str:
    return str(value)


class Outcome:
    """Failures collected over many rows, so one run reports them all."""

    def __init__(self) -> None:
        self.rows = 0
        self.failures: list[str] = []

    def check(self, label: str, condition: bool) -> None:
        if not condition:
            self.failures.append(label)


def check_row(
    outcome: Outcome,
    caplog: pytest.LogCaptureFixture,
    name: str,
    raw: Any,
    where: str,
    build: Any,
) -> None:
    """Load settings for one hostile row and check every promise."""
    outcome.rows += 1
    label = f"{where} {name}={shown(raw, 40)}"
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="scopewatch"):
            loaded = build()
    except Exception as error:  # the promise under test: nothing raises
        outcome.failures.append(f"{label}: raised {type(error).__name__}: {error}"[:300])
        return
    records = [r for r in caplog.records if r.name == "scopewatch"]
    other, value = companion(name)
    outcome.check(f"{label}: companion {other} lost", getattr(loaded, other) == value)
    if acceptable(name, raw):
        outcome.check(f"{label}: valid but logged {len(records)}", not records)
        return
    outcome.check(f"{label}: {len(records)} lines", len(records) == 1)
    outcome.check(f"{label}: default not applied", getattr(loaded, name) == default(name))
    if len(records) != 1:
        return
    message = records[0].getMessage()
    outcome.check(f"{label}: too long ({len(message)})", len(message) <= MAX_LINE)
    outcome.check(f"{label}: not printable", message.isprintable())
    outcome.check(f"{label}: no 'accepted'", "accepted: " in message)
    outcome.check(f"{label}: bad value not shown", f"{shown(raw)} is invalid" in message)
    outcome.check(f"{label}: default not named", "using the default" in message)
    named = {"env": variable(name), "kwargs": f"{name}="}.get(where, f"key {name}:")
    outcome.check(f"{label}: setting not named in {message[:120]!r}", named in message)


# --- completeness -------------------------------------------------------------------------


def test_every_setting_is_covered() -> None:
    assert set(SETTINGS) == set(KINDS), "add the new setting to KINDS"
    assert set(SETTINGS) == set(config._PARSERS)
    documented = {
        value
        for key, value in vars(environment_variables).items()
        if key.startswith(ENV_PREFIX) and isinstance(value, str)
    }
    assert documented == {variable(name) for name in SETTINGS} | {CONFIG_FILE_VARIABLE}
    for name in SETTINGS:  # the defaults themselves are acceptable
        value = default(name)
        assert acceptable(name, sorted(value) if isinstance(value, frozenset) else value)


# --- environment, files, kwargs -----------------------------------------------------------


@pytest.mark.parametrize("name", SETTINGS)
def test_hostile_environment_values(name: str, caplog: pytest.LogCaptureFixture) -> None:
    outcome = Outcome()
    other, value = companion(name)
    for raw in ENV_VALUES.values():
        environ = {variable(name): raw, variable(other): str(value)}
        check_row(outcome, caplog, name, raw, "env", lambda e=environ: load_settings({}, e))
    assert outcome.rows == len(ENV_VALUES)
    assert not outcome.failures, "\n".join(outcome.failures)


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_blank_environment_values_count_as_unset(
    blank: str, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenTelemetry: an empty variable is interpreted as unset (blank counts as empty)."""
    environ = {variable(name): blank for name in SETTINGS}
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        assert load_settings({}, environ) == Settings()
    assert caplog.records == []


def _write(directory: str, suffix: str, data: dict[str, Any]) -> str:
    descriptor, path = tempfile.mkstemp(suffix=suffix, dir=directory)
    with os.fdopen(descriptor, "w", encoding="utf-8", errors="surrogatepass") as stream:
        if suffix == ".json":
            json.dump(data, stream)  # nan/inf become NaN/Infinity, which json.loads reads back
        else:
            yaml.safe_dump(data, stream)
    return path


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("name", SETTINGS)
def test_hostile_config_file_values(
    name: str, suffix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = Outcome()
    other, value = companion(name)
    values = {**OBJECT_VALUES, "null": None}
    for raw in values.values():
        path = _write(str(tmp_path), suffix, {name: raw, other: value})
        environ = {CONFIG_FILE_VARIABLE: path}
        check_row(outcome, caplog, name, raw, "file", lambda e=environ: load_settings({}, e))
    assert outcome.rows == len(values)
    assert not outcome.failures, "\n".join(outcome.failures)


@pytest.mark.parametrize("name", SETTINGS)
def test_hostile_instrument_kwargs(name: str, caplog: pytest.LogCaptureFixture) -> None:
    outcome = Outcome()
    other, value = companion(name)
    values = {**OBJECT_VALUES, **KWARG_ONLY}
    for raw in values.values():
        kwargs = {name: raw, other: value}
        check_row(outcome, caplog, name, raw, "kwargs", lambda k=kwargs: load_settings(k, {}))
    assert outcome.rows == len(values)
    assert not outcome.failures, "\n".join(outcome.failures)


def test_none_kwarg_means_not_given(caplog: pytest.LogCaptureFixture) -> None:
    environ = {variable("spans"): "all"}
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        loaded = load_settings(dict.fromkeys(SETTINGS), environ)
    assert loaded == Settings(spans="all")
    assert caplog.records == []


def test_env_and_kwargs_hold_a_bad_value_for_every_setting_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One line per setting, not per source: the winning source's bad value is reported."""
    environ = {variable(name): "\x00" for name in SETTINGS}
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        loaded = load_settings({}, environ)
    rejected = [name for name in SETTINGS if not acceptable(name, "\x00")]
    assert len(caplog.records) == len(rejected) == len(loaded.problems)
    for name in rejected:
        assert getattr(loaded, name) == default(name)


def test_unknown_variables_and_keys_give_one_line_each_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({f"typo{i}": i for i in range(1000)} | {"spans": "none"}))
    environ = {f"{ENV_PREFIX}TYPO{i}": "x" for i in range(1000)}
    environ[CONFIG_FILE_VARIABLE] = str(path)
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        loaded = load_settings({}, environ)
    assert loaded.spans == "none"
    variables, keys = (record.getMessage() for record in caplog.records)
    assert "unknown variables" in variables and "and 995 more" in variables
    assert "unknown keys 'typo0'" in keys and "and 995 more" in keys
    assert all(len(message) <= 2 * MAX_LINE for message in (variables, keys))


# --- non-UTF-8 bytes in the real environment of a real process -----------------------------

ENV_PROBE = """
import json, logging
from opentelemetry.sdk.trace import TracerProvider
from scopewatch import ScopeWatchInstrumentor
from scopewatch.config import load_settings
records = []
handler = logging.Handler()
handler.emit = records.append
logging.getLogger("scopewatch").addHandler(handler)
instrumentor = ScopeWatchInstrumentor()
instrumentor.instrument(tracer_provider=TracerProvider())  # must not raise
settings = load_settings(warn=False)
instrumentor.uninstrument()
print(json.dumps({
    "lines": [r.getMessage() for r in records],
    "problems": list(settings.problems),
    "host": settings.debugpy_host,
}, ensure_ascii=True))
"""


def test_undecodable_environment_bytes_in_a_real_process() -> None:
    env = {k.encode(): v.encode() for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for name in SETTINGS:
        env[variable(name).encode()] = b"\xff\xfe\x80 bad"
    env[variable("rules").encode()] = b"ok: a exists -> log; \xff: b exists -> log"
    result = subprocess.run(
        [sys.executable, "-c", ENV_PROBE], env=env, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    report = json.loads(result.stdout)
    decoded = os.fsdecode(b"\xff\xfe\x80 bad")
    rejected = [name for name in SETTINGS if not acceptable(name, decoded)]
    assert len(report["problems"]) == len(rejected) > 10
    for name in rejected:
        (line,) = [line for line in report["problems"] if variable(name) + "=" in line]
        assert "\\udcff\\udcfe\\udc80" in line and "accepted: " in line
    rule_lines = [line for line in report["lines"] if "OTEL_PYTHON_SCOPEWATCH_RULES rule" in line]
    assert len(rule_lines) == 1 and all(line.isprintable() for line in report["lines"])
    assert report["host"] == "127.0.0.1"


# --- unusable config files -----------------------------------------------------------------


def _unusable_files(tmp: Path) -> dict[str, tuple[str, str]]:
    """label -> (path, text expected in the one line)."""
    files: dict[str, tuple[str, str]] = {}

    def put(label: str, name: str, data: bytes, expected: str) -> None:
        path = tmp / name
        path.write_bytes(data)
        files[label] = (str(path), expected)

    put("json syntax", "a.json", b'{"spans": "all",', "is not valid")
    put("yaml syntax", "a.yaml", b"spans: [all\nstack_depth: {", "is not valid")
    put("yaml tab", "t.yaml", b"spans:\n\t- all", "is not valid")
    put("json list", "l.json", b'["spans", "all"]', "must hold a mapping of settings, not list")
    put("json scalar", "s.json", b"3", "must hold a mapping of settings, not int")
    put("json string", "q.json", b'"spans=all"', "not str")
    put("yaml scalar", "s.yaml", b"just words", "not str")
    put("yaml list", "l.yaml", b"- spans\n- all\n", "not list")
    put("yaml unhashable key", "k.yaml", b"? [a, b]\n: 1\n", "is not valid")
    put("invalid utf-8", "u.json", b'{"spans": "\xff\xfe"}', "is not UTF-8 text (byte 11)")
    put("binary", "b.yaml", bytes(range(256)) * 4, "is not UTF-8 text")
    put("binary utf-8", "c.json", b"\x00\x01\x02\x03", "is not valid")
    put("huge", "h.json", b" " * (MAX_FILE_BYTES + 1), f"is larger than {MAX_FILE_BYTES} bytes")
    deep = b"[" * 100_000 + b"]" * 100_000
    put("deep nesting", "d.json", deep, "is not valid")
    put("deep yaml", "d.yaml", b"a: " + b"[" * 20_000 + b"]" * 20_000, "is not valid")
    put("python tag", "p.yaml", b"spans: !!python/object/apply:os.getcwd []", "is not valid")
    (tmp / "dir.json").mkdir()
    files["directory"] = (str(tmp / "dir.json"), "cannot be read (Is a directory)")
    files["missing"] = (str(tmp / "missing.yaml"), "cannot be read (No such file or directory)")
    files["not a directory"] = (str(tmp / "a.json" / "x.json"), "cannot be read (Not a directory)")
    (tmp / "loop.json").symlink_to(tmp / "loop.json")
    files["symlink loop"] = (str(tmp / "loop.json"), "cannot be read (Too many levels")
    return files


def test_unusable_config_files_give_one_line_and_the_defaults(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _unusable_files(tmp_path)
    for label, (path, expected) in files.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="scopewatch"):
            loaded = load_settings({}, {CONFIG_FILE_VARIABLE: path, variable("stack_depth"): "3"})
        assert loaded == Settings(stack_depth=3), label
        (record,) = caplog.records
        message = record.getMessage()
        assert expected in message, (label, message)
        assert CONFIG_FILE_VARIABLE in message and message.isprintable(), label
        assert len(message) <= MAX_LINE, (label, len(message))
    assert len(files) == 20


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"spans": "all"}')
    assert load_settings({}, {CONFIG_FILE_VARIABLE: str(path)}) == Settings(spans="all")


@pytest.mark.parametrize("path", ["a\x00b.json", "\udcff.json"])
def test_unusable_config_paths(path: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        loaded = load_settings({}, {CONFIG_FILE_VARIABLE: path})
    assert loaded == Settings()
    (record,) = caplog.records
    assert record.getMessage().isprintable()


def test_nested_wrong_shapes_keep_the_good_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "spans: {mode: all}\ninstrument: [[scopes]]\nexclude: {a: [1]}\n"
        "debugpy: [true]\nstack_depth: 3\nrules_file: [a.yaml]\n"
    )
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        loaded = load_settings({}, {CONFIG_FILE_VARIABLE: str(path)})
    assert loaded == Settings(stack_depth=3)
    assert len(caplog.records) == 5


# --- hypothesis ----------------------------------------------------------------------------

JSON_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([*SPAN_MODES, *DURATION_MODES, *FEATURES, "1", "true", "127.0.0.1", "::1"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(SETTINGS) | st.text(max_size=12).filter(lambda k: k != "config_file")


def assert_valid(loaded: Settings) -> None:
    """Every field of ``loaded`` is a value its setting accepts."""
    for name in SETTINGS:
        value = getattr(loaded, name)
        plain = sorted(value) if isinstance(value, frozenset) else value
        assert acceptable(name, list(plain) if isinstance(plain, tuple) else plain), name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from([variable(n) for n in SETTINGS]) | st.text(max_size=10).map(variable),
        st.text(max_size=30) | st.sampled_from(list(ENV_VALUES.values())),
        max_size=8,
    )
)
def test_any_environment_loads(environ: dict[str, str]) -> None:
    loaded = load_settings({}, environ, warn=False)
    assert_valid(loaded)
    for problem in loaded.problems:
        assert problem.isprintable() and len(problem) <= 2 * MAX_LINE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JSON_LIKE, max_size=8), st.sampled_from([".json", ".yaml"]))
def test_any_config_file_loads(data: dict[str, Any], suffix: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, suffix, data)
        loaded = load_settings({}, {CONFIG_FILE_VARIABLE: path}, warn=False)
    assert_valid(loaded)
    for problem in loaded.problems:
        assert problem.isprintable() and len(problem) <= 2 * MAX_LINE


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSON_LIKE, max_size=8))
def test_any_kwargs_load(kwargs: dict[str, Any]) -> None:
    loaded = load_settings(kwargs, {}, warn=False)
    assert_valid(loaded)
    expected = sum(1 for k, v in kwargs.items() if k in SETTINGS and v is not None)
    bad = sum(
        1 for k, v in kwargs.items() if k in SETTINGS and v is not None and not acceptable(k, v)
    )
    assert len(loaded.problems) == bad <= expected


@pytest.mark.parametrize("raw", [[1], {"a": 1}, True, 5, 2.5, b"c.json", "a\x00b.json"])
@pytest.mark.parametrize("source", ["kwargs", "env"])
def test_hostile_config_file_names(raw: Any, source: str, caplog: pytest.LogCaptureFixture) -> None:
    if source == "env" and not isinstance(raw, str):
        raw = str(raw)  # the environment only holds strings
    kwargs = {"config_file": raw, "spans": "all"} if source == "kwargs" else {"spans": "all"}
    environ = {CONFIG_FILE_VARIABLE: raw} if source == "env" else {}
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        loaded = load_settings(kwargs, environ)
    assert loaded == Settings(spans="all")
    (record,) = caplog.records
    message = record.getMessage()
    assert message.isprintable() and len(message) <= MAX_LINE
    assert "config_file=" in message or CONFIG_FILE_VARIABLE in message
