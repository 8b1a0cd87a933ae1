"""Alert rules: the Rule model, the rules file, the inline syntax and the default rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scopewatch import semconv
from scopewatch.alerts import Condition, Rule, RuleError, active_rules, add_rule, remove_rule
from scopewatch.alerts.inline import parse_inline, parse_rules
from scopewatch.alerts.rules import DEFAULT_COOLDOWN, rule_from_mapping
from scopewatch.alerts.sources import DEFAULT_RULE, configured_rules, load_file
from scopewatch.config import load_settings
from tests.support.paths import ROOT

EXAMPLE = ROOT / "configs" / "rules.example.yaml"


# --- Rule model ---------------------------------------------------------------------------------


def test_rule_normalises_the_file_form() -> None:
    rule = Rule(
        name="r",
        span="anyio.*",
        attributes={"a": "x", "b": {"gt": 5, "le": 9}, "c": {"in": ["p", 1]}},
        min_duration=2,
        status="ERROR",
        count=3,
        window=60,
        cooldown=0,
        actions=["log", "debugpy", "log"],  # type: ignore[arg-type]
    )
    assert rule.conditions == (
        Condition("a", "eq", "x"),
        Condition("b", "gt", 5),
        Condition("b", "le", 9),
        Condition("c", "in", ("p", 1)),
    )
    assert rule.min_duration == 2.0
    assert rule.status == "error"
    assert (rule.count, rule.window, rule.cooldown) == (3, 60.0, 0.0)
    assert rule.actions == ("log", "debugpy")


@pytest.mark.parametrize(
    ("kwargs", "position", "expected"),
    [
        ({"name": ""}, "name", "non-empty rule name"),
        ({"name": "a;b"}, "name", "without ';'"),
        ({"name": "r", "actions": ("page",)}, "actions", "unknown action 'page'"),
        ({"name": "r", "actions": ()}, "actions", "at least one action"),
        ({"name": "r", "count": 0}, "threshold.count", "an integer >= 1"),
        ({"name": "r", "count": 2.5, "window": 1}, "threshold.count", "integer"),
        ({"name": "r", "count": 3}, "threshold.window", "window > 0"),
        ({"name": "r", "cooldown": -1}, "cooldown", "from 0 to 1e+09"),
        ({"name": "r", "cooldown": "soon"}, "cooldown", "number"),
        ({"name": "r", "min_duration": True}, "match.min_duration", "number"),
        ({"name": "r", "status": "failed"}, "match.status", "unset, ok, error"),
        ({"name": "r", "attributes": {"k": {"gt": "x"}}}, "match.attributes.k", "a number"),
        ({"name": "r", "attributes": {"k": {"like": 1}}}, "match.attributes.k", "unknown operator"),
        ({"name": "r", "attributes": {"k": {"in": []}}}, "match.attributes.k", "at least one"),
        ({"name": "r", "attributes": {"k": {"in": "ab"}}}, "match.attributes.k", "list of values"),
        (
            {"name": "r", "attributes": {"k": {"exists": "y"}}},
            "match.attributes.k",
            "true or false",
        ),
        ({"name": "r", "attributes": {"k": [1, 2]}}, "match.attributes.k", "string, number or"),
    ],
)
def test_rule_errors_name_the_rule_position_and_expectation(
    kwargs: dict[str, object], position: str, expected: str
) -> None:
    with pytest.raises(RuleError) as caught:
        Rule(**kwargs)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.position == position
    assert expected in error.problem
    if kwargs["name"] not in ("",):
        assert error.rule == kwargs["name"]
        assert f"rule {kwargs['name']!r}" in str(error)


def test_rule_from_mapping_reads_every_section() -> None:
    rule = rule_from_mapping(
        {
            "name": "cross-task-exit",
            "match": {
                "span": "anyio.*",
                "attributes": {semconv.VIOLATION_KIND: "cross_task_exit"},
                "min_duration": 2.5,
                "status": "error",
            },
            "threshold": {"count": 3, "window": 60},
            "cooldown": 300,
            "actions": ["log", "debugpy"],
        }
    )
    assert rule == Rule(
        name="cross-task-exit",
        span="anyio.*",
        conditions=(Condition(semconv.VIOLATION_KIND, "eq", "cross_task_exit"),),
        min_duration=2.5,
        status="error",
        count=3,
        window=60,
        cooldown=300,
        actions=("log", "debugpy"),
    )


def test_rule_from_mapping_rejects_unknown_keys_with_their_path() -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_mapping({"name": "r", "match": {"spam": "x"}})
    assert caught.value.position == "match.spam"
    assert "expected span, attributes, min_duration, status" in str(caught.value)


# --- inline syntax ------------------------------------------------------------------------------


def test_inline_example_from_the_design() -> None:
    parsed = parse_rules(
        "cross-task: scopewatch.violation.kind == cross_task_exit -> debugpy, log; "
        "slow: span == anyio.* and duration > 5 over 3/60 -> log"
    )
    assert parsed == [
        Rule(
            name="cross-task",
            conditions=(Condition(semconv.VIOLATION_KIND, "eq", "cross_task_exit"),),
            actions=("debugpy", "log"),
        ),
        Rule(name="slow", span="anyio.*", min_duration=5, count=3, window=60, actions=("log",)),
    ]
    assert parsed[0].cooldown == DEFAULT_COOLDOWN


def test_inline_operators_values_and_modifiers() -> None:
    (rule,) = parse_rules(
        "all-ops: a == 1 and b != x and c > 1.5 and d >= -2 and e < 3 and f <= 4e1 and "
        "g in (one, 'two words', 3, true) and h exists and i glob '*/app.py' and j == 'x;y' "
        "and status == error cooldown 300s over 2 / 10 -> log"
    )
    assert rule.conditions == (
        Condition("a", "eq", 1),
        Condition("b", "ne", "x"),
        Condition("c", "gt", 1.5),
        Condition("d", "ge", -2),
        Condition("e", "lt", 3),
        Condition("f", "le", 40.0),
        Condition("g", "in", ("one", "two words", 3, True)),
        Condition("h", "exists", True),
        Condition("i", "glob", "*/app.py"),
        Condition("j", "eq", "x;y"),
    )
    assert (rule.status, rule.cooldown, rule.count, rule.window) == ("error", 300.0, 2, 10.0)


def test_inline_bad_rule_is_reported_and_the_others_kept() -> None:
    text = "ok1: a exists -> log; bad: duration > soon -> log ; ok2: span == x -> debugpy;"
    parsed, errors = parse_inline(text, "OTEL_PYTHON_SCOPEWATCH_RULES")
    assert [rule.name for rule in parsed] == ["ok1", "ok2"]
    (error,) = errors
    assert error.rule == "bad"
    assert error.position == f"character {text.index('soon') + 1}"
    assert str(error) == (
        f"OTEL_PYTHON_SCOPEWATCH_RULES rule 'bad' at character {text.index('soon') + 1}: "
        "expected a number of seconds, found 'soon'"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no colon here", "expected 'NAME: conditions -> actions'"),
        ("r: a == 1", "expected 'and', 'over N/W', 'cooldown S' or '-> actions', found the end"),
        ("r: a == 1 -> page", "expected an action (log or debugpy), found 'page'"),
        ("r: a == 1 -> log log", "expected ';' or the end after the actions"),
        ("r: a ~ 1 -> log", "expected an operator after 'a'"),
        ("r: span > x -> log", "expected '==' after 'span'"),
        ("r: duration == 3 -> log", "expected '>' or '>=' after 'duration'"),
        ("r: status == broken -> log", "expected 'status == unset|ok|error'"),
        ("r: a > x -> log", "expected a number for 'a' gt"),
        ("r: a in 1, 2 -> log", "expected '(' after 'in'"),
        ("r: a == 1 over 3 -> log", "expected 'over COUNT/WINDOW'"),
        ("r: a == 'open -> log", "unterminated quote"),
        ("r: span == a and span == b -> log", "'span' given twice"),
        ("r: a == 1 over 3/0 -> log", "expected a window > 0 seconds"),
        ("bad name: a exists -> log", "expected a rule name"),
        ("r: -> log", "expected a condition"),
    ],
)
def test_inline_errors_say_what_was_expected(text: str, expected: str) -> None:
    parsed, errors = parse_inline(text, "src")
    assert parsed == []
    (error,) = errors
    assert expected in str(error)
    assert error.source == "src"
    assert error.position.startswith("character ")


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                " ",
                "r",
                ":",
                "a.b",
                "*",
                "==",
                "!=",
                ">",
                ">=",
                "<",
                "<=",
                "in",
                "exists",
                "glob",
                "span",
                "duration",
                "status",
                "error",
                "and",
                "over",
                "3/60",
                "3",
                "/",
                "cooldown",
                "->",
                "log",
                "debugpy",
                ",",
                ";",
                "(",
                ")",
                "'",
                '"',
                "5",
                "-1",
                "1e9",
                "nan",
                "x",
            ]
        )
    ).map("".join)
    | st.text()
)
def test_arbitrary_inline_text_parses_or_raises_rule_error(text: str) -> None:
    try:
        parsed = parse_rules(text)
    except RuleError:
        return
    assert all(isinstance(rule, Rule) for rule in parsed)


_VALUES = st.sampled_from(
    ["x", "1", "-2.5", "true", "'a b'", '"q;r"', "anyio.*", "1e9", "nan", "1e400"]
)
_ATTRS = st.sampled_from(["k", "scopewatch.violation.kind", "code.line.number"])
_OPS = st.sampled_from(["==", "!=", ">", ">=", "<", "<=", "glob"])
_CONDITIONS = st.one_of(
    st.builds("{} {} {}".format, _ATTRS, _OPS, _VALUES),
    st.builds(
        lambda a, vs: f"{a} in ({', '.join(vs)})", _ATTRS, st.lists(_VALUES, min_size=1, max_size=3)
    ),
    st.builds("{} exists".format, _ATTRS),
    st.builds("span == {}".format, _VALUES),
    st.builds("duration > {}".format, _VALUES),
    st.sampled_from(["status == error", "status == ok"]),
)
_RULE = st.builds(
    lambda name, conditions, modifiers, actions: (
        f"{name}: {' and '.join(conditions)} {' '.join(modifiers)} -> {', '.join(actions)}"
    ),
    st.sampled_from(["r", "cross-task", "a.b_c"]),
    st.lists(_CONDITIONS, min_size=1, max_size=3),
    st.lists(st.sampled_from(["over 3/60", "over 2 / 10", "cooldown 300", "over 0/5"]), max_size=2),
    st.lists(st.sampled_from(["log", "debugpy"]), min_size=1, max_size=2),
)


@st.composite
def _mutated_rules(draw: st.DrawFn) -> str:
    """Grammar-built rules with a few characters inserted or deleted."""
    text = "; ".join(draw(st.lists(_RULE, min_size=1, max_size=3)))
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            inserted = draw(st.sampled_from([*" ;:,()'\"=!<>-/", "and", "->"]))
            text = text[:index] + inserted + text[index:]
        else:
            text = text[:index] + text[index + 1 :]
    return text


@settings(max_examples=400, deadline=None)
@given(_mutated_rules())
def test_mutated_rules_parse_or_raise_rule_error(text: str) -> None:
    try:
        parsed = parse_rules(text)
    except RuleError as error:
        assert error.position.startswith("character ")  # every error says where
        return
    assert parsed and all(isinstance(rule, Rule) for rule in parsed)


# --- files and settings -------------------------------------------------------------------------


def test_example_rules_file_loads_cleanly() -> None:
    parsed, errors = load_file(str(EXAMPLE))
    assert errors == []
    assert {rule.name for rule in parsed} >= {"cross-task-exit", "slow-timeouts"}


def test_json_rules_file_with_one_bad_rule(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps(
            {
                "rules": [
                    {"name": "good", "match": {"span": "asyncio.*"}},
                    {"name": "bad", "threshold": {"count": "many"}},
                    {"match": {}},
                ]
            }
        )
    )
    parsed, errors = load_file(str(path))
    assert [rule.name for rule in parsed] == ["good"]
    assert [str(error) for error in errors] == [
        f"OTEL_PYTHON_SCOPEWATCH_RULES_FILE={str(path)!r} rules[1] rule 'bad' at "
        "threshold.count: expected an integer >= 1 for threshold.count, got 'many'",
        f"OTEL_PYTHON_SCOPEWATCH_RULES_FILE={str(path)!r} rules[2] rule '#3' at name: "
        "expected a non-empty rule name without ';' or ':' (printable, at most 200 "
        "characters), got None",
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.yaml", None, "cannot be read"),
        ("broken.yaml", "rules: [", "is not valid"),
        ("broken.json", "{", "is not valid"),
        ("scalar.json", "3", "expected a mapping with a 'rules:' list"),
    ],
)
def test_unusable_rules_files_give_one_message(
    tmp_path: Path, name: str, content: str | None, expected: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    parsed, errors = load_file(str(path))
    assert parsed == []
    (error,) = errors
    assert expected in str(error)
    assert "OTEL_PYTHON_SCOPEWATCH_RULES_FILE=" in str(error)


def test_configured_rules_combine_sources_in_order(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: from-file\n    actions: [log]\n")
    settings = load_settings(
        {},
        {
            "OTEL_PYTHON_SCOPEWATCH_RULES_FILE": str(path),
            "OTEL_PYTHON_SCOPEWATCH_RULES": (
                "inline: a exists -> log; from-file: b exists -> log; default: c exists -> log"
            ),
        },
    )
    found, errors = configured_rules(settings)
    assert [rule.name for rule in found] == ["default", "from-file", "inline"]
    assert found[0] is DEFAULT_RULE
    assert [error.rule for error in errors] == ["from-file", "default"]
    assert "already used" in str(errors[0])
    assert "reserved" in str(errors[1])

    off = load_settings({}, {"OTEL_PYTHON_SCOPEWATCH_DEFAULT_RULE": "false"})
    assert configured_rules(off) == ([], [])


def test_default_rule_matches_any_violation_and_only_logs() -> None:
    assert DEFAULT_RULE.conditions == (Condition(semconv.VIOLATION_KIND, "exists", True),)
    assert DEFAULT_RULE.actions == ("log",)
    assert DEFAULT_RULE.span == ""


# --- Python API ---------------------------------------------------------------------------------


def test_add_rule_accepts_rules_text_and_mappings() -> None:
    try:
        added = add_rule("api-a: a exists -> log; api-b: b exists -> log")
        added += add_rule({"name": "api-c", "match": {"span": "x"}})
        added += add_rule(Rule(name="api-d"))
        assert [rule.name for rule in added] == ["api-a", "api-b", "api-c", "api-d"]
        assert {rule.name for rule in active_rules()} >= {"api-a", "api-b", "api-c", "api-d"}
        with pytest.raises(RuleError, match="reserved"):
            add_rule("default: a exists -> log")
        with pytest.raises(RuleError, match="expected an action"):
            add_rule("api-e: a exists -> nothing")
        assert "api-e" not in {rule.name for rule in active_rules()}
    finally:
        for name in ("api-a", "api-b", "api-c", "api-d"):
            assert remove_rule(name)
    assert not remove_rule("api-a")
