"""Alert rules as plain data: :class:`Rule`, :class:`Condition`, :class:`RuleError`.

A rule says which finished spans match (span name glob, attribute conditions, minimum
duration, status), how many matches within a window make it fire, how long it stays quiet
after firing, and which actions run. Construction validates everything and raises
:class:`RuleError` naming the rule, the position and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from scopewatch import semconv
from scopewatch._shown import printable, shown

ACTIONS = (semconv.ALERT_ACTION_LOG, semconv.ALERT_ACTION_DEBUGPY)
"""Actions a rule can run."""
OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "exists", "glob")
"""Attribute condition operators."""
STATUSES = ("unset", "ok", "error")
"""Span status codes a rule can require."""
DEFAULT_COOLDOWN = 60.0
"""Seconds a rule stays quiet after firing, unless it says otherwise."""
MAX_SECONDS = 1e9
"""Largest duration, window or cooldown in seconds (about 31 years; nanoseconds stay in range)."""
DEFAULT_RULE_NAME = "default"
"""Name of the built-in rule that logs every violation; reserved."""

Scalar: TypeAlias = str | bool | int | float
"""A value a condition compares with (``in`` takes a tuple of them, ``exists`` a bool)."""


class RuleError(ValueError):
    """A malformed alert rule.

    The message names the source (a file, ``OTEL_PYTHON_SCOPEWATCH_RULES``, the Python API),
    the rule, the position inside it and what was expected. Configured rules with an error
    are skipped with one logged line; :func:`scopewatch.alerts.add_rule` raises it.

    Attributes:
        problem: what is wrong and what is accepted.
        rule: the rule's name, or ``#N`` when it has none yet.
        source: where the rule came from.
        position: a field path (``match.attributes.x``) or ``character N``.
    """

    def __init__(self, problem: str, *, rule: str = "", source: str = "", position: str = ""):
        self.problem = problem
        self.rule = rule
        self.source = source
        self.position = position
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = [self.source] if self.source else []
        if self.rule:
            where.append(f"rule {shown(self.rule)}")
        if self.position:
            where.append(f"at {self.position}")
        return f"{' '.join(where)}: {self.problem}" if where else self.problem

    def located(self, *, rule: str = "", source: str = "", position: str = "") -> RuleError:
        """A copy with empty location fields filled in (nested positions are prefixed)."""
        inner = self.position
        if position and inner:
            inner = f"{position}.{inner}" if not inner.startswith("character") else inner
        return RuleError(
            self.problem,
            rule=self.rule or rule,
            source=self.source or source,
            position=inner or position,
        )


MAX_NAME_LENGTH = 200
"""Characters a rule name may have (it is a metric attribute and appears in log lines)."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_comparable_number(value: object) -> bool:
    """A number that is not NaN and converts to a float (the engine compares floats)."""
    if not _is_number(value):
        return False
    try:
        return not math.isnan(float(value))  # type: ignore[arg-type]
    except OverflowError:  # an int beyond float range
        return False


def _number(
    value: object,
    what: str,
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
    integer: bool = False,
) -> float:
    kind = "an integer" if integer else "a finite number"
    bounds = f">= {minimum:g}" if math.isinf(maximum) else f"from {minimum:g} to {maximum:g}"
    problem = f"expected {kind} {bounds} for {what}, got {shown(value)}"
    if not _is_comparable_number(value):
        raise RuleError(problem)
    number = float(value)  # type: ignore[arg-type]
    if not minimum <= number <= maximum or math.isinf(number):
        raise RuleError(problem)
    if integer and number != int(number):
        raise RuleError(problem)
    return number


def _scalar(value: object, what: str) -> Scalar:
    if isinstance(value, str | bool | int | float):
        return value
    raise RuleError(f"expected a string, number or boolean for {what}, got {shown(value)}")


@dataclass(frozen=True)
class Condition:
    """One test on a span attribute; every operator except ``exists`` needs it present.

    Attributes:
        attribute: the attribute key, e.g. ``scopewatch.violation.kind``.
        op: one of ``eq ne gt ge lt le in exists glob``.
        value: the operand: a scalar; a tuple of scalars for ``in``; a bool for ``exists``
            (``False`` means the attribute must be absent); a glob string for ``glob``.
    """

    attribute: str
    op: str
    value: Scalar | tuple[Scalar, ...] = True

    def __post_init__(self) -> None:
        if not isinstance(self.attribute, str) or not self.attribute.strip():
            raise RuleError(f"expected a non-empty attribute name, got {shown(self.attribute)}")
        if self.op not in OPERATORS:
            raise RuleError(
                f"unknown operator {shown(self.op)} for {shown(self.attribute)}; "
                f"expected one of {', '.join(OPERATORS)}"
            )
        what = f"{shown(self.attribute)} {self.op}"
        value: Any = self.value
        if self.op in ("gt", "ge", "lt", "le"):
            if not _is_comparable_number(value):
                raise RuleError(f"expected a number for {what}, got {shown(value)}")
        elif self.op == "in":
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise RuleError(f"expected a list of values for {what}, got {shown(value)}")
            items = tuple(_scalar(item, what) for item in value)
            if not items:
                raise RuleError(f"expected at least one value for {what}")
            object.__setattr__(self, "value", items)
        elif self.op == "exists":
            if not isinstance(value, bool):
                raise RuleError(f"expected true or false for {what}, got {shown(value)}")
        elif self.op == "glob":
            if not isinstance(value, str):
                raise RuleError(f"expected a glob string for {what}, got {shown(value)}")
        else:
            _scalar(value, what)


def conditions_from_mapping(attributes: Mapping[str, Any]) -> tuple[Condition, ...]:
    """Turn the file form ``{key: value | {op: value, ...}}`` into conditions."""
    if not isinstance(attributes, Mapping):
        raise RuleError(
            f"expected a mapping of attribute -> value or {{op: value}}, got {shown(attributes)}",
            position="match.attributes",
        )
    result: list[Condition] = []
    for key, spec in attributes.items():
        position = f"match.attributes.{_key(key)}"
        try:
            if isinstance(spec, Mapping):
                if not spec:
                    raise RuleError(f"expected {{op: value}} with op one of {', '.join(OPERATORS)}")
                result.extend(Condition(str(key), str(op), value) for op, value in spec.items())
            else:
                result.append(Condition(str(key), "eq", spec))
        except RuleError as error:
            raise error.located(position=position) from None
    return tuple(result)


def _actions(value: object) -> tuple[str, ...]:
    expected = f"expected a list of actions ({', '.join(ACTIONS)}), got {shown(value)}"
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise RuleError(expected)
    if not all(isinstance(item, str) for item in items):
        raise RuleError(expected)
    actions = tuple(item.strip() for item in items)
    if not actions:
        raise RuleError(f"expected at least one action ({', '.join(ACTIONS)})")
    for action in actions:
        if action not in ACTIONS:
            raise RuleError(f"unknown action {shown(action)}; expected {' or '.join(ACTIONS)}")
    return tuple(dict.fromkeys(actions))


@dataclass(frozen=True)
class Rule:
    """An alert rule; invalid fields raise :class:`RuleError` at construction.

    Attributes:
        name: unique name, reported as ``scopewatch.alert.rule`` (``default`` is reserved).
        span: glob on the span name (``anyio.*``); empty matches every span.
        attributes: the file form ``{key: value}`` (equality) or ``{key: {op: value}}``.
        conditions: extra :class:`Condition` objects, e.g. from the inline form.
        min_duration: seconds the span must have lasted at least.
        status: required span status: ``unset``, ``ok`` or ``error``; empty for any.
        count: matches needed within ``window`` seconds to fire (``1``: every match).
        window: seconds over which ``count`` matches are counted.
        cooldown: seconds between two firings.
        actions: ``log`` and/or ``debugpy``.
        group_by: attribute keys; threshold and cooldown are kept per distinct value.
    """

    name: str
    span: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    conditions: tuple[Condition, ...] = ()
    min_duration: float | None = None
    status: str = ""
    count: int = 1
    window: float = 0.0
    cooldown: float = DEFAULT_COOLDOWN
    actions: tuple[str, ...] = (semconv.ALERT_ACTION_LOG,)
    group_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            self._validate()
        except RuleError as error:
            raise error.located(rule=self.name if isinstance(self.name, str) else "") from None

    def _validate(self) -> None:
        name = self.name
        if (
            not isinstance(name, str)
            or not name.strip()
            or len(name) > MAX_NAME_LENGTH
            or not name.isprintable()
            or any(c in name for c in ";:")
        ):
            raise RuleError(
                "expected a non-empty rule name without ';' or ':' (printable, at most "
                f"{MAX_NAME_LENGTH} characters), got {shown(name)}",
                position="name",
            )
        object.__setattr__(self, "name", name.strip())
        if not isinstance(self.span, str):
            raise RuleError(
                f"expected a glob string, got {shown(self.span)}", position="match.span"
            )
        conditions = tuple(self.conditions)
        if any(not isinstance(c, Condition) for c in conditions):
            raise RuleError("expected Condition objects", position="conditions")
        extra = conditions_from_mapping(self.attributes)
        object.__setattr__(self, "conditions", extra + conditions)
        if self.min_duration is not None:
            try:
                value = _number(self.min_duration, "min_duration", maximum=MAX_SECONDS)
            except RuleError as error:
                raise error.located(position="match.min_duration") from None
            object.__setattr__(self, "min_duration", value)
        status = self.status.strip().lower() if isinstance(self.status, str) else self.status
        if status not in ("", *STATUSES):
            raise RuleError(
                f"expected one of {', '.join(STATUSES)}, got {shown(self.status)}",
                position="match.status",
            )
        object.__setattr__(self, "status", status)
        for position, value, maximum, integer in (
            ("threshold.count", self.count, math.inf, True),
            ("threshold.window", self.window, MAX_SECONDS, False),
            ("cooldown", self.cooldown, MAX_SECONDS, False),
        ):
            minimum = 1 if integer else 0
            try:
                number = _number(value, position, minimum=minimum, maximum=maximum, integer=integer)
            except RuleError as error:
                raise error.located(position=position) from None
            object.__setattr__(
                self, position.rpartition(".")[2], int(number) if integer else number
            )
        if self.count > 1 and self.window <= 0:
            raise RuleError(
                "expected a window > 0 seconds when count > 1", position="threshold.window"
            )
        try:
            object.__setattr__(self, "actions", _actions(self.actions))
        except RuleError as error:
            raise error.located(position="actions") from None
        group_by = (self.group_by,) if isinstance(self.group_by, str) else self.group_by
        if not isinstance(group_by, list | tuple) or not all(
            isinstance(key, str) and key for key in group_by
        ):
            raise RuleError(
                f"expected a list of attribute keys, got {shown(self.group_by)}",
                position="group_by",
            )
        object.__setattr__(self, "group_by", tuple(group_by))


_RULE_KEYS = ("name", "match", "threshold", "cooldown", "actions", "group_by")
_MATCH_KEYS = ("span", "attributes", "min_duration", "status")
_THRESHOLD_KEYS = ("count", "window")


def _key(key: object) -> str:
    return printable(key, 40) if isinstance(key, str) else shown(key, 40)


def _section(data: object, keys: tuple[str, ...], position: str) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise RuleError(f"expected a mapping with keys {', '.join(keys)}", position=position)
    for key in data:
        if key not in keys:
            raise RuleError(
                f"unknown key {shown(key)}; expected {', '.join(keys)}",
                position=f"{position}.{_key(key)}" if position else _key(key),
            )
    return data


def rule_from_mapping(data: object) -> Rule:
    """Build a rule from the file form (one entry of ``rules:``)."""
    entry = _section(data, _RULE_KEYS, "")
    name = entry.get("name")
    try:
        match = _section(entry.get("match"), _MATCH_KEYS, "match")
        threshold = _section(entry.get("threshold"), _THRESHOLD_KEYS, "threshold")
        span = match.get("span", "")
        return Rule(
            name=name,  # type: ignore[arg-type]  # validated by Rule
            span="" if span is None else span,
            attributes=match.get("attributes") or {},
            min_duration=match.get("min_duration"),
            status=match.get("status") or "",
            count=threshold.get("count", 1),
            window=threshold.get("window", 0.0),
            cooldown=entry.get("cooldown", DEFAULT_COOLDOWN),
            actions=entry.get("actions", (semconv.ALERT_ACTION_LOG,)),
            group_by=entry.get("group_by") or (),
        )
    except RuleError as error:
        raise error.located(rule=name if isinstance(name, str) else "") from None
