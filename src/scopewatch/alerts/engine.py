"""Rule evaluation as pure code: no OpenTelemetry, no I/O, no logging.

The engine is asked about every finished span, so the common case (nothing matches) is made
cheap and allocation-free:

* span-name globs are compiled once, and the rules that can match a span name are cached per
  name (span names are low-cardinality by contract);
* those rules are grouped by an attribute key every one of them needs present (a "gate"), so a
  span without, say, ``scopewatch.violation.kind`` is rejected with one dict lookup for all the
  rules that test it;
* duration and status are read only when a rule that survived the gate asks for them.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from scopewatch.alerts.rules import Condition, Rule

S = TypeVar("S")

NAME_CACHE_SIZE: Final = 4096
"""Span names remembered with their candidate rules; the cache is cleared when it is full."""
GROUPS_PER_RULE: Final = 1024
"""Distinct ``group_by`` values tracked per rule; the oldest state is dropped beyond it."""

_MISSING: Final = object()
_NOTHING: tuple[Firing, ...] = ()


def _glob(pattern: str) -> Callable[[str], Any]:
    return re.compile(fnmatch.translate(pattern)).match


def _check(condition: Condition) -> Callable[[Any], bool]:  # noqa: PLR0911
    """A predicate on a present attribute value."""
    op, value = condition.op, condition.value
    if op in ("eq", "ne", "in"):
        items = value if isinstance(value, tuple) else (value,)
        targets = frozenset(
            (item, str(item).lower() if isinstance(item, bool) else str(item)) for item in items
        )
        flat = frozenset(part for pair in targets for part in pair)
        if op == "ne":
            return lambda v: type(v) is tuple or v not in flat
        return lambda v: type(v) is not tuple and v in flat
    if op == "glob":
        match = _glob(str(value))
        return lambda v: type(v) is str and match(v) is not None
    if op == "exists":
        return lambda v: True
    bound = float(value)  # type: ignore[arg-type]
    if op == "gt":
        return lambda v: (type(v) is int or type(v) is float) and v > bound
    if op == "ge":
        return lambda v: (type(v) is int or type(v) is float) and v >= bound
    if op == "lt":
        return lambda v: (type(v) is int or type(v) is float) and v < bound
    return lambda v: (type(v) is int or type(v) is float) and v <= bound


class CompiledRule:
    """A rule ready to evaluate, with its threshold and cooldown state."""

    __slots__ = (
        "absent",
        "checks",
        "enabled",
        "gate",
        "groups",
        "match_name",
        "min_duration_ns",
        "rule",
        "status",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.match_name: Callable[[str], Any] | None = _glob(rule.span) if rule.span else None
        present = [c for c in rule.conditions if not (c.op == "exists" and c.value is False)]
        self.absent = tuple(c.attribute for c in rule.conditions if c not in present)
        self.checks = tuple((c.attribute, _check(c)) for c in present if c.op != "exists") + tuple(
            (c.attribute, None) for c in present if c.op == "exists"
        )
        self.gate: str | None = present[0].attribute if present else None
        self.min_duration_ns = (
            int(rule.min_duration * 1e9) if rule.min_duration is not None else None
        )
        self.status = rule.status or None
        self.enabled = True
        self.groups: dict[Any, _State] = {}

    def matches(self, span: S, attributes: Mapping[str, Any], facts: SpanFacts[S]) -> bool:
        """Whether the span satisfies every condition (the name was checked already)."""
        for key, check in self.checks:
            value = attributes.get(key, _MISSING)
            if value is _MISSING or (check is not None and not check(value)):
                return False
        for key in self.absent:
            if key in attributes:
                return False
        if self.min_duration_ns is not None and facts.duration_ns(span) < self.min_duration_ns:
            return False
        return self.status is None or facts.status(span) == self.status

    def group_key(self, attributes: Mapping[str, Any]) -> Any:
        """The ``group_by`` values of a matching span (``None`` without ``group_by``)."""
        keys = self.rule.group_by
        if not keys:
            return None
        values = tuple(attributes.get(key) for key in keys)
        return tuple(v if type(v) is not list else tuple(v) for v in values)


class _State:
    __slots__ = ("last_fired", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.last_fired: float | None = None


class Firing:
    """One rule firing: the rule and the number of matches that made it fire."""

    __slots__ = ("count", "rule")

    def __init__(self, rule: Rule, count: int) -> None:
        self.rule = rule
        self.count = count


class SpanFacts(Generic[S]):
    """How the engine reads a span's duration and status (supplied by the processor)."""

    def duration_ns(self, span: S) -> int:
        """Nanoseconds from start to end."""
        raise NotImplementedError

    def status(self, span: S) -> str:
        """``unset``, ``ok`` or ``error``."""
        raise NotImplementedError


class Engine(Generic[S]):
    """Evaluates compiled rules against finished spans; thread-safe.

    Args:
        rules: the rules, in order; names must be unique.
        facts: reads durations and statuses of spans.
        clock: monotonic seconds, read only when a rule matches.
        on_error: called with the rule and the error when a rule raises; the rule is then
            disabled. The default re-raises.
        previous: an engine whose state (threshold counts, cooldowns, disabled rules) is kept
            for rules that did not change.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        facts: SpanFacts[S],
        clock: Callable[[], float],
        on_error: Callable[[Rule, Exception], None] | None = None,
        previous: Engine[S] | None = None,
    ) -> None:
        old = {c.rule.name: c for c in previous.compiled} if previous is not None else {}
        compiled: list[CompiledRule] = []
        for rule in rules:
            kept = old.get(rule.name)
            compiled.append(kept if kept is not None and kept.rule == rule else CompiledRule(rule))
        self.compiled: tuple[CompiledRule, ...] = tuple(compiled)
        self._facts = facts
        self._clock = clock
        self._on_error = on_error
        self._lock = threading.Lock()
        self._by_name: dict[str, tuple[tuple[str | None, tuple[CompiledRule, ...]], ...]] = {}

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in order."""
        return tuple(c.rule for c in self.compiled)

    def _candidates(self, name: str) -> tuple[tuple[str | None, tuple[CompiledRule, ...]], ...]:
        groups: dict[str | None, list[CompiledRule]] = {}
        for compiled in self.compiled:
            if compiled.match_name is None or compiled.match_name(name) is not None:
                groups.setdefault(compiled.gate, []).append(compiled)
        result = tuple((gate, tuple(rules)) for gate, rules in groups.items())
        by_name = self._by_name
        if len(by_name) >= NAME_CACHE_SIZE:
            by_name.clear()
        by_name[name] = result
        return result

    def evaluate(self, span: S, name: str, attributes: Mapping[str, Any]) -> tuple[Firing, ...]:
        """The rules that fire for this finished span (usually none: an empty tuple)."""
        candidates = self._by_name.get(name)
        if candidates is None:
            candidates = self._candidates(name)
        fired: list[Firing] | None = None
        for gate, rules in candidates:
            if gate is not None and gate not in attributes:
                continue
            for compiled in rules:
                if not compiled.enabled:
                    continue
                try:
                    if not compiled.matches(span, attributes, self._facts):
                        continue
                    firing = self._count(compiled, attributes)
                except Exception as error:
                    compiled.enabled = False
                    if self._on_error is None:
                        raise
                    self._on_error(compiled.rule, error)
                    continue
                if firing is not None:
                    if fired is None:
                        fired = []
                    fired.append(firing)
        return _NOTHING if fired is None else tuple(fired)

    def _count(self, compiled: CompiledRule, attributes: Mapping[str, Any]) -> Firing | None:
        """Apply threshold and cooldown to one match; a Firing when the rule fires."""
        rule = compiled.rule
        key = compiled.group_key(attributes)
        now = self._clock()
        with self._lock:
            state = compiled.groups.get(key)
            if state is None:
                if len(compiled.groups) >= GROUPS_PER_RULE:
                    compiled.groups.pop(next(iter(compiled.groups)))
                state = compiled.groups[key] = _State()
            times = state.times
            times.append(now)
            horizon = now - rule.window
            while len(times) > 1 and times[0] < horizon:
                times.popleft()
            if rule.count > 1 and len(times) < rule.count:
                return None
            if state.last_fired is not None and now - state.last_fired < rule.cooldown:
                if rule.count <= 1:
                    times.clear()
                return None
            state.last_fired = now
            count = len(times)
            times.clear()
        return Firing(rule, count)


def unique(rules: Iterable[Rule]) -> list[Rule]:
    """The rules with later duplicates of a name replacing earlier ones, in first-seen order."""
    by_name: dict[str, Rule] = {}
    for rule in rules:
        by_name[rule.name] = rule
    return list(by_name.values())
