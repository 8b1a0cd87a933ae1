"""Where rules come from: the rules file, the inline setting and the built-in default rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from scopewatch import semconv
from scopewatch._shown import shown
from scopewatch.alerts.inline import parse_inline
from scopewatch.alerts.rules import (
    DEFAULT_COOLDOWN,
    DEFAULT_RULE_NAME,
    Rule,
    RuleError,
    rule_from_mapping,
)
from scopewatch.config import SettingError, parse_data, read_text_file
from scopewatch.environment_variables import (
    OTEL_PYTHON_SCOPEWATCH_RULES,
    OTEL_PYTHON_SCOPEWATCH_RULES_FILE,
)

if TYPE_CHECKING:
    from scopewatch.config import Settings

DEFAULT_RULE = Rule(
    name=DEFAULT_RULE_NAME,
    attributes={semconv.VIOLATION_KIND: {"exists": True}},
    cooldown=DEFAULT_COOLDOWN,
    actions=(semconv.ALERT_ACTION_LOG,),
    group_by=(
        semconv.VIOLATION_KIND,
        semconv.VIOLATION_CAUSE,
        semconv.CODE_FILE,
        semconv.CODE_LINE,
    ),
)
"""Logs every violation with its explanation, once per cooldown per kind, cause and place."""


def rules_from_data(data: object, source: str) -> tuple[list[Rule], list[RuleError]]:
    """Rules of a parsed rules file: ``{"rules": [...]}`` or a bare list of rule mappings."""
    if isinstance(data, Mapping) and set(data) <= {"rules"}:
        data = data.get("rules") or []
    if not isinstance(data, list):
        return [], [RuleError("expected a mapping with a 'rules:' list", source=source)]
    rules: list[Rule] = []
    errors: list[RuleError] = []
    for index, entry in enumerate(data):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        label = name if isinstance(name, str) and name else f"#{index + 1}"
        try:
            rules.append(rule_from_mapping(entry))
        except RuleError as error:
            errors.append(error.located(rule=label, source=f"{source} rules[{index}]"))
    return rules, errors


def load_file(path: str) -> tuple[list[Rule], list[RuleError]]:
    """Read a YAML (``.yaml``/``.yml``) or JSON rules file; problems become errors.

    The file is only read as data (``yaml.safe_load`` or ``json``, at most 4 MiB): never
    executed, imported or given to a YAML constructor that builds Python objects.
    """
    source = f"{OTEL_PYTHON_SCOPEWATCH_RULES_FILE}={shown(path)}"
    try:
        data = parse_data(path, read_text_file(path))
    except SettingError as error:
        return [], [RuleError(f"{error}; no rules from it", source=source)]
    if data is None:
        return [], []
    return rules_from_data(data, source)


def configured_rules(settings: Settings) -> tuple[list[Rule], list[RuleError]]:
    """The default rule (when on), the file's rules, then the inline rules.

    A user rule named ``default``, or with a name already used, is an error and is skipped.
    """
    rules: list[Rule] = []
    errors: list[RuleError] = []
    if settings.rules_file:
        found, problems = load_file(settings.rules_file)
        rules.extend(found)
        errors.extend(problems)
    if settings.rules:
        found, problems = parse_inline(settings.rules, OTEL_PYTHON_SCOPEWATCH_RULES)
        rules.extend(found)
        errors.extend(problems)
    result = [DEFAULT_RULE] if settings.default_rule else []
    names = {DEFAULT_RULE_NAME}
    for rule in rules:
        if rule.name in names:
            what = (
                "is reserved for the built-in rule"
                if rule.name == DEFAULT_RULE_NAME
                else ("is already used by another rule")
            )
            errors.append(RuleError(f"the name {what}; this rule is skipped", rule=rule.name))
            continue
        names.add(rule.name)
        result.append(rule)
    return result, errors
