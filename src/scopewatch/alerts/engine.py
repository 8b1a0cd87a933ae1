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
import operator
import re
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from scopewatch.alerts.rules import Condition, Rule

S = TypeVar("S")

NAME_CACHE_SIZE: Final = 4096
"""Span names remembered with their candidate rules; the cache is cleared when it is full."""
GROUPS_PER_RULE: Final = 1024
"""Distinct ``group_by`` values tracked per rule; the oldest state is dropped beyond it."""

_MISSING: Final = object()
_SCALARS: Final = frozenset((str, bool, int, float))
"""Types ``==``, ``!=`` and ``in`` compare; sequences match ``exists`` only."""
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
            return lambda v: type(v) in _SCALARS and v not in flat
        return lambda v: type(v) in _SCALARS and v in flat
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


_COST = {"eq": 0, "in": 0, "ne": 1, "gt": 1, "ge": 1, "lt": 1, "le": 1, "glob": 2, "exists": 3}
"""Cheap and selective conditions are tested first; the first one is the gate."""


class CompiledRule:
    """A rule ready to evaluate, with its threshold and cooldown state."""

    __slots__ = (
        "_get_group",
        "absent",
        "cooldown",
        "enabled",
        "fast",
        "first",
        "gate",
        "group_by",
        "groups",
        "last_fired",
        "match_name",
        "min_duration_ns",
        "rest",
        "rule",
        "simple",
        "status",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.match_name: Callable[[str], Any] | None = _glob(rule.span) if rule.span else None
        present = sorted(
            (c for c in rule.conditions if not (c.op == "exists" and c.value is False)),
            key=lambda c: _COST[c.op],
        )
        self.absent = tuple(c.attribute for c in rule.conditions if c not in present)
        self.gate: str | None = present[0].attribute if present else None
        """The attribute every match needs; rules are grouped by it."""
        self.first: Callable[[Any], bool] | None = (
            _check(present[0]) if present and present[0].op != "exists" else None
        )
        """The test of the gate attribute's value (``None``: presence is enough)."""
        self.rest = tuple(
            (c.attribute, None if c.op == "exists" else _check(c)) for c in present[1:]
        )
        self.min_duration_ns = (
            int(rule.min_duration * 1e9) if rule.min_duration is not None else None
        )
        self.status = rule.status or None
        self.simple = not (self.rest or self.absent or self.min_duration_ns or self.status)
        """Passing the gate is a match."""
        self.group_by = rule.group_by
        keys = rule.group_by
        self._get_group: Callable[[Mapping[str, Any]], Any] = (
            operator.itemgetter(*keys)
            if len(keys) > 1
            else (lambda a: (a[keys[0]],))
            if keys
            else (lambda a: ())
        )
        self.enabled = True
        self.groups: dict[Any, _State] = {}
        self.last_fired: float | None = None
        """Last firing, for rules without threshold and ``group_by`` (the common fast path)."""
        self.fast = rule.count <= 1 and not rule.group_by
        self.cooldown = rule.cooldown

    def matches_rest(self, span: S, attributes: Mapping[str, Any], facts: SpanFacts[S]) -> bool:
        """Whether the conditions after the gate hold (the name and gate were checked)."""
        for key, check in self.rest:
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
        """The ``group_by`` values of a matching span (``None`` for absent attributes)."""
        try:
            return self._get_group(attributes)  # C-level when every key is present
        except KeyError:
            return tuple([attributes.get(key) for key in self.group_by])


class _State:
    __slots__ = ("last_fired", "times")

    def __init__(self, count: int) -> None:
        # Only the latest ``count`` matches can make a threshold hold: keeping more would grow
        # with the match rate (a violation storm within one window) and tell nothing more.
        self.times: deque[float] = deque(maxlen=max(count, 1))
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
            value = None if gate is None else attributes.get(gate, _MISSING)
            if value is _MISSING:
                continue
            for compiled in rules:
                if not compiled.enabled:
                    continue
                try:
                    first = compiled.first
                    if (first is not None and not first(value)) or not (
                        compiled.simple or compiled.matches_rest(span, attributes, self._facts)
                    ):
                        continue
                    if compiled.fast:  # inline cooldown check: no state beyond last_fired
                        last = compiled.last_fired
                        if last is not None and self._clock() - last < compiled.cooldown:
                            continue
                    firing = self._count(compiled, attributes)
                except Exception as error:
                    self._failed(compiled, error)
                    continue
                if firing is not None:
                    fired = [firing] if fired is None else [*fired, firing]
        return _NOTHING if fired is None else tuple(fired)

    def _failed(self, compiled: CompiledRule, error: Exception) -> None:
        compiled.enabled = False
        if self._on_error is None:
            raise error
        self._on_error(compiled.rule, error)

    def _count(self, compiled: CompiledRule, attributes: Mapping[str, Any]) -> Firing | None:
        """Apply threshold and cooldown to one match; a Firing when the rule fires."""
        rule = compiled.rule
        now = self._clock()
        if rule.count <= 1 and not compiled.group_by:  # no per-match state: just the cooldown
            last = compiled.last_fired
            if last is not None and now - last < rule.cooldown:
                return None
            with self._lock:
                last = compiled.last_fired
                if last is not None and now - last < rule.cooldown:
                    return None  # another thread fired it meanwhile
                compiled.last_fired = now
            return Firing(rule, 1)
        return self._count_grouped(compiled, compiled.group_key(attributes), now)

    def _count_grouped(self, compiled: CompiledRule, key: Any, now: float) -> Firing | None:
        """Threshold and cooldown kept per ``group_by`` value (or for a threshold rule)."""
        rule = compiled.rule
        state = compiled.groups.get(key)
        if (
            rule.count <= 1
            and state is not None
            and state.last_fired is not None
            and now - state.last_fired < rule.cooldown
        ):
            return None  # a lock-free early exit while the cooldown runs
        with self._lock:
            state = compiled.groups.get(key)
            if state is None:
                if len(compiled.groups) >= GROUPS_PER_RULE:
                    compiled.groups.pop(next(iter(compiled.groups)))
                state = compiled.groups[key] = _State(rule.count)
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
