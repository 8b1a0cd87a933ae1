"""Settings from keyword arguments, environment variables, a config file and defaults.

Precedence is kwargs > environment > file > default. An invalid value never fails start-up:
it logs one warning naming the setting, the bad value and what is accepted, and the default
is used instead.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ENV_PREFIX = "OTEL_PYTHON_SCOPEWATCH_"
CONFIG_FILE_VARIABLE = ENV_PREFIX + "CONFIG_FILE"
FEATURES = ("scopes", "tasks", "locks", "sessions")
SPAN_MODES = ("all", "anomalies", "none")

_logger = logging.getLogger("scopewatch")


class SettingError(ValueError):
    """A setting has a value that is not accepted; the message says what is."""


@dataclass(frozen=True)
class Settings:
    """The effective configuration; one frozen instance per instrumentation."""

    instrument: frozenset[str] = frozenset(FEATURES)
    spans: str = "anomalies"
    slow_threshold: float = 1.0
    stack_depth: int = 8
    exception_notes: bool = True
    exclude: tuple[str, ...] = ()
    rules: str = ""
    rules_file: str = ""
    default_rule: bool = True
    debugpy: bool = False
    debugpy_host: str = "127.0.0.1"
    debugpy_port: int = 5678
    debugpy_allow_remote: bool = False
    debugpy_wait: float = 0.0
    max_tracked: int = 100_000
    log_limit: int = 10
    problems: tuple[str, ...] = field(default=(), compare=False)
    """One line per invalid value that was replaced by its default."""

    def enabled(self, feature: str) -> bool:
        """Whether a feature of ``INSTRUMENT`` is on."""
        return feature in self.instrument

    def debugpy_host_is_loopback(self) -> bool:
        """Whether ``debugpy_host`` is a loopback address or ``localhost``."""
        return is_loopback(self.debugpy_host)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- value parsers: each returns the value or raises SettingError("accepted ...") ------------


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingError("true or false")


def _parse_number(kind: type[float] | type[int], minimum: float, maximum: float | None) -> Any:
    accepted = f"{'a number' if kind is float else 'an integer'} >= {minimum:g}"
    if maximum is not None:
        accepted = (
            f"{'a number' if kind is float else 'an integer'} from {minimum:g} to {maximum:g}"
        )

    def parse(raw: Any) -> Any:
        if isinstance(raw, bool):
            raise SettingError(accepted)
        try:
            value = kind(str(raw).strip()) if not isinstance(raw, int | float) else kind(raw)
        except (TypeError, ValueError):
            raise SettingError(accepted) from None
        if isinstance(raw, float) and kind is int and raw != int(raw):
            raise SettingError(accepted)
        if math.isnan(value) or value < minimum or (maximum is not None and value > maximum):
            raise SettingError(accepted)
        return value

    return parse


def _parse_choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in choices:
            raise SettingError("one of " + ", ".join(choices))
        return text

    return parse


def _split(raw: Any) -> list[str]:
    if isinstance(raw, list | tuple):
        return [str(item).strip() for item in raw if str(item).strip()]
    return [part.strip() for part in str(raw).split(",") if part.strip()]


def _parse_features(raw: Any) -> frozenset[str]:
    parts = _split(raw)
    if any(part not in FEATURES for part in parts):
        raise SettingError("a comma-separated subset of " + ", ".join(FEATURES))
    return frozenset(parts)


def _parse_globs(raw: Any) -> tuple[str, ...]:
    return tuple(_split(raw))


def _parse_text(raw: Any) -> str:
    if isinstance(raw, list | dict):
        raise SettingError("a string")
    return str(raw).strip()


def _parse_host(raw: Any) -> str:
    text = str(raw).strip()
    if not text or any(char.isspace() for char in text):
        raise SettingError("a host name or IP address")
    return text


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "instrument": _parse_features,
    "spans": _parse_choice(SPAN_MODES),
    "slow_threshold": _parse_number(float, 0, None),
    "stack_depth": _parse_number(int, 0, 256),
    "exception_notes": _parse_bool,
    "exclude": _parse_globs,
    "rules": _parse_text,
    "rules_file": _parse_text,
    "default_rule": _parse_bool,
    "debugpy": _parse_bool,
    "debugpy_host": _parse_host,
    "debugpy_port": _parse_number(int, 1, 65535),
    "debugpy_allow_remote": _parse_bool,
    "debugpy_wait": _parse_number(float, 0, 3600),
    "max_tracked": _parse_number(int, 1, None),
    "log_limit": _parse_number(int, 0, None),
}


def _read_config_file(path: str, problems: list[str]) -> Mapping[str, Any]:
    """Read a YAML or JSON mapping; report a problem and return ``{}`` when it cannot."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        problems.append(
            f"{CONFIG_FILE_VARIABLE}={path!r} cannot be read ({error.strerror}); ignored"
        )
        return {}
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ImportError:
        problems.append(
            f"{CONFIG_FILE_VARIABLE}={path!r} is YAML but PyYAML is not installed; "
            "accepted: a .json file, or `pip install pyyaml`"
        )
        return {}
    except Exception as error:  # yaml.YAMLError and json.JSONDecodeError share no base
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        problems.append(f"{CONFIG_FILE_VARIABLE}={path!r} is not valid: {first_line}; ignored")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{CONFIG_FILE_VARIABLE}={path!r} must hold a mapping of settings; ignored")
        return {}
    return data


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    warn: bool = True,
) -> Settings:
    """Build the effective settings.

    Args:
        overrides: keyword arguments given to ``instrument()``; unknown keys are ignored
            (``BaseInstrumentor`` passes its own, such as ``tracer_provider``).
        environ: the environment to read (``os.environ`` by default).
        warn: log one warning per invalid value.

    Returns:
        The settings, with ``problems`` listing every value that was replaced by its default.
    """
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    problems: list[str] = []
    file_values: Mapping[str, Any] = {}
    config_path = overrides.get("config_file") or environ.get(CONFIG_FILE_VARIABLE, "").strip()
    if config_path:
        file_values = _read_config_file(str(config_path), problems)
        for key in file_values:
            if key not in _PARSERS:
                problems.append(
                    f"{CONFIG_FILE_VARIABLE}={config_path!r}: unknown key {key!r}; "
                    "accepted keys: " + ", ".join(_PARSERS)
                )

    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        variable = ENV_PREFIX + name.upper()
        for source, present, raw in (
            (f"{name}=", name in overrides, overrides.get(name)),
            (f"{variable}=", variable in environ, environ.get(variable)),
            (f"{CONFIG_FILE_VARIABLE} key {name}: ", name in file_values, file_values.get(name)),
        ):
            if not present or raw is None:
                continue
            try:
                values[name] = parse(raw)
            except SettingError as error:
                default = next(f.default for f in fields(Settings) if f.name == name)
                shown = sorted(default) if isinstance(default, frozenset) else default
                problems.append(
                    f"{source}{raw!r} is invalid; accepted: {error}; using the default {shown!r}"
                )
            break

    if warn:
        for problem in problems:
            _logger.warning("scopewatch: %s", problem)
    return Settings(**values, problems=tuple(problems))
