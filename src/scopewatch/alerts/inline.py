"""The inline rule syntax of ``OTEL_PYTHON_SCOPEWATCH_RULES``.

Grammar (``[]`` optional, ``*`` repeated)::

    rules      := rule (';' rule)*                       empty rules are ignored
    rule       := NAME ':' condition ('and' condition)* modifier* '->' action (',' action)*
    condition  := 'span' ('==' | 'glob') GLOB
                | 'duration' ('>' | '>=') SECONDS
                | 'status' '==' ('unset' | 'ok' | 'error')
                | ATTRIBUTE ('==' | '!=' | '>' | '>=' | '<' | '<=' | 'glob') VALUE
                | ATTRIBUTE 'in' '(' VALUE (',' VALUE)* ')'
                | ATTRIBUTE 'exists'
    modifier   := 'over' COUNT '/' WINDOW | 'cooldown' SECONDS

A VALUE is a word (``true``/``false`` are booleans, numbers are numbers, anything else a
string) or a quoted string (``'...'`` or ``"..."``, always a string). Quote values that
contain spaces or any of ``; , ( ) = ! < >``. Without ``cooldown`` a rule uses
:data:`~scopewatch.alerts.rules.DEFAULT_COOLDOWN` seconds.
"""

from __future__ import annotations

import re
from typing import Any

from scopewatch._shown import shown
from scopewatch.alerts.rules import ACTIONS, STATUSES, Condition, Rule, RuleError, Scalar

_OPS = {"==": "eq", "!=": "ne", ">": "gt", ">=": "ge", "<": "lt", "<=": "le", "glob": "glob"}
_WORD_END = frozenset(" \t\r\n;,()\"'=!<>")
_NAME = re.compile(r"[A-Za-z0-9_.\-]+\Z")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")
_OVER = re.compile(r"(\d+)/(\d+(?:\.\d*)?|\.\d+)\Z")

_MAX_INT_DIGITS = 4000
"""Longer digit strings are read as floats (``int()`` refuses more than 4300 digits)."""

WORD, STRING, PUNCT, END = "word", "string", "punct", "end"


def _value(kind: str, text: str) -> Scalar:
    if kind == STRING:
        return text
    if text in ("true", "false"):
        return text == "true"
    if _NUMBER.match(text):
        number = float(text)
        exact = number.is_integer() and not any(c in text for c in ".eE")
        return int(text) if exact and len(text) < _MAX_INT_DIGITS else number
    return text


class _Scanner:
    """Tokens of one rules text, read on demand so the name can be scanned to its ``:``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip_space(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        self.pos = pos

    def peek(self) -> tuple[str, str, int]:
        """The next token as ``(kind, text, start)`` without consuming it."""
        saved = self.pos
        try:
            return self.next()
        finally:
            self.pos = saved

    def next(self) -> tuple[str, str, int]:
        """Consume and return the next token; raises RuleError on an unterminated quote."""
        self._skip_space()
        text, start = self.text, self.pos
        if start >= len(text):
            return END, "", start
        char = text[start]
        if char in "'\"":
            close = text.find(char, start + 1)
            if close < 0:
                raise RuleError(f"unterminated quote {char}", position=f"character {start + 1}")
            self.pos = close + 1
            return STRING, text[start + 1 : close], start
        two = text[start : start + 2]
        if two in ("->", "==", "!=", ">=", "<="):
            self.pos = start + 2
            return PUNCT, two, start
        if char in ";,()<>=!":
            self.pos = start + 1
            return PUNCT, char, start
        pos = start
        while pos < len(text) and text[pos] not in _WORD_END and text[pos : pos + 2] != "->":
            pos += 1
        self.pos = pos
        return WORD, text[start:pos], start

    def name(self) -> tuple[str, int]:
        """Scan a rule name up to its ``:``."""
        self._skip_space()
        start = self.pos
        end = start
        while end < len(self.text) and self.text[end] not in ":;\"'":
            end += 1
        if end >= len(self.text) or self.text[end] != ":":
            raise RuleError(
                "expected 'NAME: conditions -> actions'", position=f"character {start + 1}"
            )
        name = self.text[start:end].strip()
        if not _NAME.match(name):
            raise RuleError(
                f"expected a rule name of letters, digits, '_', '.', '-', got {shown(name)}",
                position=f"character {start + 1}",
            )
        self.pos = end + 1
        return name, start

    def skip_rule(self) -> None:
        """Move past the next ``;`` outside quotes (error recovery)."""
        text, pos = self.text, self.pos
        quote = ""
        while pos < len(text):
            char = text[pos]
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == ";":
                self.pos = pos + 1
                return
            pos += 1
        self.pos = pos


def _expected(what: str, token: tuple[str, str, int]) -> RuleError:
    kind, text, start = token
    found = "the end of the rule" if kind == END or text == ";" else shown(text)
    return RuleError(f"expected {what}, found {found}", position=f"character {start + 1}")


def _number_token(scanner: _Scanner, what: str) -> float:
    token = scanner.next()
    text = token[1].removesuffix("s") if token[0] == WORD else ""
    if token[0] != WORD or not _NUMBER.match(text) or float(text) < 0:
        raise _expected(what, token)
    return float(text)


class _RuleParser:
    def __init__(self, scanner: _Scanner) -> None:
        self.scanner = scanner
        self.fields: dict[str, Any] = {"conditions": []}
        self.seen: set[str] = set()

    def parse(self, name: str, start: int) -> Rule:
        scanner = self.scanner
        where = {"": start}
        self.condition()
        while scanner.peek()[:2] == (WORD, "and"):
            scanner.next()
            self.condition()
        seen: set[str] = set()
        while True:
            token = scanner.peek()
            if token[0] != WORD or token[1] not in ("over", "cooldown") or token[1] in seen:
                break
            seen.add(scanner.next()[1])
            where[token[1]] = token[2]
            if token[1] == "over":
                self.over()
            else:
                self.fields["cooldown"] = _number_token(
                    scanner, "a number of seconds after 'cooldown'"
                )
        token = scanner.next()
        if token[1] != "->":
            raise _expected("'and', 'over N/W', 'cooldown S' or '-> actions'", token)
        self.fields["actions"] = self.actions()
        token = scanner.next()
        if token[0] != END and token[1] != ";":
            raise _expected("';' or the end after the actions", token)
        conditions = tuple(self.fields.pop("conditions"))
        try:
            return Rule(name=name, conditions=conditions, **self.fields)
        except RuleError as error:  # a value out of range: point at its clause
            clause = "over" if error.position.startswith("threshold") else error.position
            at = where.get(clause, start)
            raise RuleError(error.problem, position=f"character {at + 1}") from None

    def over(self) -> None:
        scanner = self.scanner
        parts: list[str] = []
        first = scanner.peek()
        while len(parts) < 3 and scanner.peek()[0] == WORD:
            parts.append(scanner.next()[1])
            if _OVER.match("".join(parts)):
                break
        match = _OVER.match("".join(parts))
        if match is None or len(match.group(1)) > _MAX_INT_DIGITS:
            raise _expected("'over COUNT/WINDOW' such as 'over 3/60'", first)
        self.fields["count"] = int(match.group(1))
        self.fields["window"] = float(match.group(2))

    def actions(self) -> tuple[str, ...]:
        scanner = self.scanner
        actions: list[str] = []
        while True:
            token = scanner.next()
            if token[0] != WORD or token[1] not in ACTIONS:
                raise _expected(f"an action ({' or '.join(ACTIONS)})", token)
            actions.append(token[1])
            if scanner.peek()[1] != ",":
                return tuple(actions)
            scanner.next()

    def condition(self) -> None:
        scanner = self.scanner
        subject = scanner.next()
        if subject[0] != WORD or subject[1] in ("and", "over", "cooldown"):
            raise _expected(
                "a condition such as 'span == anyio.*' or 'ATTRIBUTE == VALUE'", subject
            )
        key = subject[1]
        if key in ("span", "duration", "status") and key in self.seen:
            raise RuleError(f"{shown(key)} given twice", position=f"character {subject[2] + 1}")
        self.seen.add(key)
        token = scanner.next()
        op = token[1] if token[0] in (PUNCT, WORD) else ""
        if key in ("span", "duration", "status"):
            self.special(key, op, token)
        elif op == "exists":
            self.fields["conditions"].append(Condition(key, "exists", True))
        elif op == "in":
            self.fields["conditions"].append(Condition(key, "in", self.value_list()))
        elif op in _OPS:
            value = self.value(f"a value after {key} {op}")
            try:
                self.fields["conditions"].append(Condition(key, _OPS[op], value))
            except RuleError as error:
                raise error.located(position=f"character {token[2] + 1}") from None
        else:
            raise _expected(
                f"an operator after {shown(key)} (== != > >= < <= in exists glob)", token
            )

    def special(self, key: str, op: str, token: tuple[str, str, int]) -> None:
        """``span == GLOB``, ``duration > SECONDS`` or ``status == STATUS``."""
        if key == "span":
            if op not in ("==", "glob"):
                raise _expected("'==' after 'span'", token)
            self.fields["span"] = str(self.value("a span name glob after 'span =='"))
        elif key == "duration":
            if op not in (">", ">="):
                raise _expected("'>' or '>=' after 'duration'", token)
            self.fields["min_duration"] = _number_token(self.scanner, "a number of seconds")
        else:
            status = self.scanner.next()
            if op != "==" or status[1] not in STATUSES:
                expected = f"'status == {'|'.join(STATUSES)}'"
                raise _expected(expected, status if op == "==" else token)
            self.fields["status"] = status[1]

    def value(self, what: str) -> Scalar:
        token = self.scanner.next()
        if token[0] not in (WORD, STRING) or (token[0] == WORD and token[1] in ("and", "over")):
            raise _expected(what, token)
        return _value(token[0], token[1])

    def value_list(self) -> tuple[Scalar, ...]:
        scanner = self.scanner
        token = scanner.next()
        if token[1] != "(":
            raise _expected("'(' after 'in'", token)
        values = [self.value("a value inside 'in (...)'")]
        while True:
            token = scanner.next()
            if token[1] == ")":
                return tuple(values)
            if token[1] != ",":
                raise _expected("',' or ')' in 'in (...)'", token)
            values.append(self.value("a value inside 'in (...)'"))


def parse_inline(text: str, source: str = "") -> tuple[list[Rule], list[RuleError]]:
    """Parse every rule of ``text``; a bad rule becomes an error and parsing goes on.

    Args:
        text: rules separated by ``;``.
        source: where the text came from, for the messages.

    Returns:
        The valid rules, and one :class:`RuleError` per invalid rule.
    """
    scanner = _Scanner(text)
    rules: list[Rule] = []
    errors: list[RuleError] = []
    index = 0
    while True:
        try:
            token = scanner.peek()
        except RuleError as error:  # an unterminated quote where a rule starts: nothing more
            errors.append(error.located(rule=f"#{index + 1}", source=source))
            return rules, errors
        if token[0] == END:
            return rules, errors
        if token[1] == ";":
            scanner.next()
            continue
        index += 1
        name = f"#{index}"
        start = scanner.pos
        try:
            name, name_start = scanner.name()
            rules.append(_RuleParser(scanner).parse(name, name_start))
        except RuleError as error:
            errors.append(error.located(rule=name, source=source))
            scanner.pos = start
            scanner.skip_rule()


def parse_rules(text: str, source: str = "") -> list[Rule]:
    """Parse inline rules strictly: the first bad rule raises :class:`RuleError`."""
    rules, errors = parse_inline(text, source)
    if errors:
        raise errors[0]
    return rules
