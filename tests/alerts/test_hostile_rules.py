"""Hostile alert rules: generated rule texts and rule-file structures, and the loading boundary.

The parsers only ever raise :class:`RuleError` (a bounded, printable message); at the loading
boundary (``instrument()``) a bad rule is one logged line and is skipped, the good rules stay
active, and nothing raises into the application. Every rule that parses also compiles in the
engine.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from scopewatch import _safety, alerts, semconv
from scopewatch.alerts.engine import CompiledRule
from scopewatch.alerts.inline import parse_inline
from scopewatch.alerts.rules import Rule, RuleError, rule_from_mapping
from scopewatch.alerts.sources import load_file, rules_from_data

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from conftest import Telemetry

MAX_MESSAGE = 1200
"""A RuleError message stays short whatever the rule holds (source path + problem)."""

GOOD = {"name": "good-rule", "match": {"span": "job.*"}, "actions": ["log"]}

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["log", "debugpy", "eq", "gt", "in", "exists", "glob", "error", "*", ""])
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(["gt", "in", "name"]), children)
    ),
    max_leaves=10,
)
KEYS = st.sampled_from(
    ["name", "match", "threshold", "cooldown", "actions", "group_by", "span", "count"]
)
MATCH = st.fixed_dictionaries(
    {},
    optional={
        "span": JSON_LIKE,
        "attributes": st.dictionaries(st.text(max_size=8), JSON_LIKE, max_size=3) | JSON_LIKE,
        "min_duration": JSON_LIKE,
        "status": JSON_LIKE,
    },
)
RULE_ENTRY = st.fixed_dictionaries(
    {"name": st.text(max_size=10) | JSON_LIKE},
    optional={
        "match": MATCH | JSON_LIKE,
        "threshold": st.fixed_dictionaries({}, optional={"count": JSON_LIKE, "window": JSON_LIKE})
        | JSON_LIKE,
        "cooldown": JSON_LIKE,
        "actions": st.lists(st.sampled_from(["log", "debugpy", "page"]) | JSON_LIKE) | JSON_LIKE,
        "group_by": JSON_LIKE,
    },
) | st.dictionaries(KEYS, JSON_LIKE, max_size=5)


def assert_bounded(error: RuleError) -> None:
    message = str(error)
    assert len(message) <= MAX_MESSAGE, len(message)
    assert message.isprintable(), message


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RULE_ENTRY | JSON_LIKE)
def test_any_rule_mapping_is_a_rule_or_a_rule_error(entry: Any) -> None:
    try:
        rule = rule_from_mapping(entry)
    except RuleError as error:
        assert_bounded(error)
        return
    assert isinstance(rule, Rule)
    CompiledRule(rule)  # what the processor does with it: must not raise either


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RULE_ENTRY | JSON_LIKE, max_size=5), st.integers(0, 5), st.booleans())
def test_a_bad_entry_never_loses_the_good_one(entries: list[Any], at: int, wrapped: bool) -> None:
    entries.insert(min(at, len(entries)), GOOD)
    rules, errors = rules_from_data({"rules": entries} if wrapped else entries, "rules.json")
    assert "good-rule" in [rule.name for rule in rules]
    assert len(rules) + len(errors) == len(entries)
    for error in errors:
        assert isinstance(error, RuleError)
        assert_bounded(error)


@settings(max_examples=300, deadline=None)
@given(JSON_LIKE)
def test_any_rules_document_loads_without_raising(data: Any) -> None:
    rules, errors = rules_from_data(data, "rules.json")
    assert all(isinstance(rule, Rule) for rule in rules)
    for error in errors:
        assert_bounded(error)


NO_QUOTES = st.text(
    st.characters(blacklist_characters="'\";", blacklist_categories=("Cs",)), max_size=40
)


@settings(max_examples=500, deadline=None)
@given(st.lists(NO_QUOTES, max_size=4), st.integers(0, 4))
def test_inline_bad_rules_never_lose_a_good_one(fragments: list[str], at: int) -> None:
    fragments.insert(min(at, len(fragments)), "good-rule: span == job.* -> log")
    rules, errors = parse_inline("; ".join(fragments), "OTEL_PYTHON_SCOPEWATCH_RULES")
    assert "good-rule" in [rule.name for rule in rules]
    for rule in rules:
        CompiledRule(rule)
    for error in errors:
        assert_bounded(error)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_inline_any_text_yields_rules_and_bounded_errors(text: str) -> None:
    rules, errors = parse_inline(text, "src")
    for rule in rules:
        CompiledRule(rule)
    for error in errors:
        assert_bounded(error)


def test_an_unterminated_quote_after_a_rule_keeps_the_rule() -> None:
    rules, errors = parse_inline("r: a exists -> log; 'unterminated", "src")
    assert [rule.name for rule in rules] == ["r"]
    assert [str(error) for error in errors] == [
        "src rule '#2' at character 21: unterminated quote '"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "r: a exists over " + "9" * 5000 + "/60 -> log",
        "r: a == " + "9" * 5000 + " -> log",
        "r: a > 1" + "0" * 400 + " -> log",
        "r: duration > 1e300 -> log",
        "r: a == " + "x" * (1 << 20) + " -> page",
        "x" * (1 << 20) + ": a exists -> log",
        "r: a exists cooldown 1e400 -> log",
        "r: \x00 == \x1b -> log",
        '"',
    ],
)
def test_inline_extremes_give_a_rule_error_or_a_compilable_rule(text: str) -> None:
    rules, errors = parse_inline(text, "src")
    assert len(rules) + len(errors) == 1
    for rule in rules:
        CompiledRule(rule)
    for error in errors:
        assert_bounded(error)


# --- the loading boundary: instrument() with hostile rule sources --------------------------

ANCHORS = ", ".join(
    ["&a0 [log, log, log, log, log, log, log, log, log, log]"]
    + [f"&a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
)
"""A YAML alias bomb: 5**11 * 10 actions if anything expanded it."""

HOSTILE_RULES_YAML = f"""
rules:
  - {{name: anchors, group_by: [{ANCHORS}]}}
  - {{name: good-file, match: {{span: "job.*"}}, actions: [log]}}
  - {{name: bomb, actions: *a11}}
  - {{name: bomb-attrs, match: {{attributes: {{k: {{in: *a11}}}}}}}}
  - {{name: huge-cooldown, cooldown: {10**400}}}
  - {{name: "{"n" * 5000}"}}
  - {{name: group, group_by: 5}}
  - {{name: tag, match: {{span: !!python/name:os.system }}}}
  - 42
"""
FILE_ERRORS = 7
"""anchors, bomb, bomb-attrs, huge-cooldown, the long name, group, 42."""


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_safety, "_warned", set())
    yield


def test_yaml_tags_in_a_rules_file_are_refused_not_run(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(HOSTILE_RULES_YAML)
    rules, errors = load_file(str(path))
    assert rules == []
    (error,) = errors  # the python tag makes the whole YAML document unreadable
    assert "is not valid: could not determine a constructor" in str(error)


def test_hostile_rules_never_disable_the_good_ones(
    tmp_path: Path, instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(HOSTILE_RULES_YAML.replace("!!python/name:os.system ", "'x'"))
    inline = (
        "good-inline: span == job.* -> log; never: a > 1" + "0" * 400 + " -> log; "
        "worse: a exists over " + "9" * 5000 + "/1 -> log; also-bad: a == 'open"
    )
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        telemetry = instrument(rules_file=str(path), rules=inline)
        lines = [r.getMessage() for r in caplog.records]
        caplog.clear()
        tracer = telemetry.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("job.run"):
            pass
        fired = [r.getMessage() for r in caplog.records]
    names = {rule.name for rule in alerts.active_rules()}
    assert names == {"default", "good-file", "good-inline", "never", "tag"}
    assert len(lines) == FILE_ERRORS + 2, lines  # + worse, also-bad
    assert all(len(line) <= MAX_MESSAGE and line.isprintable() for line in lines)
    assert sum("good-file" in line or "good-inline" in line for line in fired) == 2
    points = {
        p.attributes[semconv.ALERT_RULE]: p.value for p in telemetry.points(semconv.METRIC_ALERTS)
    }
    assert points == {"good-file": 1, "good-inline": 1}


def test_a_python_file_as_rules_or_config_is_only_read(
    tmp_path: Path, instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "executed"
    code = f"open({str(marker)!r}, 'w').close()\nrules = []\n"
    for name in ("rules.py", "scopewatch_rules.py", "config.py"):
        (tmp_path / name).write_text(code)
    yaml_code = tmp_path / "rules.yaml"
    yaml_code.write_text(f"!!python/object/apply:builtins.exec [{json.dumps(code)}]\n")
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        for rules_file in ("rules.py", "scopewatch_rules.py", "rules.yaml"):
            instrument(
                rules_file=str(tmp_path / rules_file), config_file=str(tmp_path / "config.py")
            ).uninstrument()
    assert not marker.exists()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is not valid" in m for m in messages) == 6, messages
    assert not [m for m in sys.modules if m in ("rules", "scopewatch_rules", "config")]


def test_rules_file_through_the_tracer_provider_of_the_app(tmp_path: Path) -> None:
    """``instrument()`` with unusable rules sources on a fresh provider raises nothing."""
    from scopewatch import ScopeWatchInstrumentor

    (tmp_path / "d.yaml").mkdir()
    instrumentor = ScopeWatchInstrumentor()
    for rules_file in (str(tmp_path / "d.yaml"), "/dev/null", "a\x00b", "\udcff"):
        instrumentor.instrument(tracer_provider=TracerProvider(), rules_file=rules_file)
        assert [rule.name for rule in alerts.active_rules()] == ["default"]
        instrumentor.uninstrument()
