"""The pure rule engine: matching, thresholds, cooldowns, grouping and failing rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from scopewatch.alerts import Condition, Rule
from scopewatch.alerts.engine import NAME_CACHE_SIZE, Engine, SpanFacts
from scopewatch.alerts.inline import parse_rules


@dataclass
class FakeSpan:
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    duration_ns: int = 0
    status: str = "unset"
    reads: int = 0


class Facts(SpanFacts[FakeSpan]):
    def duration_ns(self, span: FakeSpan) -> int:
        span.reads += 1
        return span.duration_ns

    def status(self, span: FakeSpan) -> str:
        span.reads += 1
        return span.status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def engine(text: str, clock: Clock | None = None) -> Engine[FakeSpan]:
    return Engine(parse_rules(text), Facts(), clock or Clock())


def fired(eng: Engine[FakeSpan], span: FakeSpan) -> list[str]:
    return [firing.rule.name for firing in eng.evaluate(span, span.name, span.attributes)]


@pytest.mark.parametrize(
    ("condition", "matching", "not_matching"),
    [
        ("k == x", ["x"], ["y", 1, ("x",), ["x"]]),
        ("k == 5", [5, 5.0, "5"], [6, "five"]),
        ("k == true", [True, "true"], [False, "True"]),
        ("k != x", ["y", 3], ["x", ("y",)]),
        ("k > 5", [6, 5.5], [5, "9", True]),
        ("k >= 5", [5, 6], [4.9]),
        ("k < 5", [4, -1.0], [5, "1"]),
        ("k <= 5", [5], [5.1]),
        ("k in (a, 2)", ["a", 2, "2"], ["b", 3]),
        ("k exists", ["anything", 0, False, ("a", "b")], []),
        ("k glob 'anyio.*'", ["anyio.CancelScope"], ["asyncio.timeout", 3]),
    ],
)
def test_attribute_operators(condition: str, matching: list[Any], not_matching: list[Any]) -> None:
    eng = engine(f"r: {condition} cooldown 0 -> log")
    for value in matching:
        assert fired(eng, FakeSpan("s", {"k": value})) == ["r"], value
    for value in not_matching:
        assert fired(eng, FakeSpan("s", {"k": value})) == [], value
    assert fired(eng, FakeSpan("s", {})) == []  # every operator needs the attribute present


def test_exists_false_requires_absence() -> None:
    rule = Rule(name="r", conditions=(Condition("k", "exists", False),), cooldown=0)
    eng = Engine([rule], Facts(), Clock())
    assert fired(eng, FakeSpan("s", {})) == ["r"]
    assert fired(eng, FakeSpan("s", {"k": 1})) == []


def test_span_glob_duration_and_status() -> None:
    eng = engine("r: span == anyio.* and duration >= 2 and status == error cooldown 0 -> log")
    good = FakeSpan("anyio.move_on_after", duration_ns=2_000_000_000, status="error")
    assert fired(eng, good) == ["r"]
    assert fired(eng, FakeSpan("asyncio.timeout", duration_ns=3_000_000_000, status="error")) == []
    assert fired(eng, FakeSpan("anyio.fail_after", duration_ns=1_999_999_999, status="error")) == []
    assert fired(eng, FakeSpan("anyio.fail_after", duration_ns=5_000_000_000, status="ok")) == []


def test_gated_rules_read_nothing_else_when_the_gate_is_absent() -> None:
    clock = Clock()
    eng = engine(
        "; ".join(
            f"r{i}: scopewatch.violation.kind == k{i} and duration > 1 -> log" for i in range(10)
        ),
        clock,
    )
    span = FakeSpan("anyio.CancelScope", {"scopewatch.scope.kind": "anyio.CancelScope"})
    for _ in range(5):
        assert eng.evaluate(span, span.name, span.attributes) == ()
    assert span.reads == 0  # neither duration nor status was read
    assert clock.reads == 0  # the clock is read only on a match


def test_name_cache_is_bounded() -> None:
    eng = engine("r: span == keep* -> log")
    for index in range(NAME_CACHE_SIZE + 10):
        fired(eng, FakeSpan(f"task t{index}"))
    assert len(eng._by_name) <= NAME_CACHE_SIZE


def test_threshold_counts_matches_within_the_window() -> None:
    clock = Clock()
    eng = engine("r: k exists over 3/60 cooldown 0 -> log", clock)
    span = FakeSpan("s", {"k": 1})
    assert fired(eng, span) == []
    clock.now += 30
    assert fired(eng, span) == []
    clock.now += 31  # the first match left the window
    assert fired(eng, span) == []
    clock.now += 1
    (firing,) = eng.evaluate(span, span.name, span.attributes)
    assert firing.count == 3
    assert fired(eng, span) == []  # counting starts again after a firing


def test_cooldown_silences_a_rule_then_lets_it_fire_again() -> None:
    clock = Clock()
    eng = engine("r: k exists cooldown 300 -> log", clock)
    span = FakeSpan("s", {"k": 1})
    assert fired(eng, span) == ["r"]
    clock.now += 299
    assert fired(eng, span) == []
    clock.now += 1
    assert fired(eng, span) == ["r"]


def test_threshold_reached_during_cooldown_fires_when_it_ends() -> None:
    clock = Clock()
    eng = engine("r: k exists over 2/100 cooldown 10 -> log", clock)
    span = FakeSpan("s", {"k": 1})
    fired(eng, span)
    assert fired(eng, span) == ["r"]
    fired(eng, span)
    assert fired(eng, span) == []  # in cooldown, matches still counted
    clock.now += 10
    assert fired(eng, span) == ["r"]


def test_group_by_keeps_cooldown_per_value() -> None:
    rule = Rule(name="r", conditions=(Condition("k", "exists", True),), group_by=("place",))
    eng = Engine([rule], Facts(), Clock())
    assert fired(eng, FakeSpan("s", {"k": 1, "place": "a.py:1"})) == ["r"]
    assert fired(eng, FakeSpan("s", {"k": 1, "place": "a.py:1"})) == []
    assert fired(eng, FakeSpan("s", {"k": 1, "place": "b.py:2"})) == ["r"]


def test_group_by_with_an_absent_attribute_groups_it_as_none() -> None:
    rule = Rule(name="r", conditions=(Condition("k", "exists", True),), group_by=("a", "b"))
    eng = Engine([rule], Facts(), Clock())
    assert fired(eng, FakeSpan("s", {"k": 1, "a": 1})) == ["r"]
    assert fired(eng, FakeSpan("s", {"k": 2, "a": 1})) == []
    assert fired(eng, FakeSpan("s", {"k": 1, "a": 1, "b": None})) == []  # same key (1, None)
    assert fired(eng, FakeSpan("s", {"k": 1, "a": 1, "b": 2})) == ["r"]


def test_rebuilding_keeps_state_of_unchanged_rules() -> None:
    clock = Clock()
    old = engine("same: k exists cooldown 100 -> log; changed: k exists cooldown 100 -> log", clock)
    span = FakeSpan("s", {"k": 1})
    assert fired(old, span) == ["same", "changed"]
    new = Engine(
        parse_rules("same: k exists cooldown 100 -> log; changed: k exists cooldown 50 -> log"),
        Facts(),
        clock,
        previous=old,
    )
    assert fired(new, span) == ["changed"]


def test_a_failing_rule_is_disabled_and_reported_once() -> None:
    class Broken(Facts):
        def duration_ns(self, span: FakeSpan) -> int:
            raise ZeroDivisionError("boom")

    errors: list[tuple[str, Exception]] = []
    eng = Engine(
        parse_rules("bad: k exists and duration > 1 -> log; good: k exists cooldown 0 -> log"),
        Broken(),
        Clock(),
        on_error=lambda rule, error: errors.append((rule.name, error)),
    )
    span = FakeSpan("s", {"k": 1})
    assert fired(eng, span) == ["good"]
    assert fired(eng, span) == ["good"]
    assert [(name, type(error)) for name, error in errors] == [("bad", ZeroDivisionError)]


def test_without_error_handler_the_error_propagates() -> None:
    class Broken(Facts):
        def status(self, span: FakeSpan) -> str:
            raise KeyError("status")

    eng = Engine(parse_rules("r: status == error -> log"), Broken(), Clock())
    with pytest.raises(KeyError):
        fired(eng, FakeSpan("s"))
