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
from typing import TYPE_CHECKING, Any

from scopewatch._shown import printable, shown

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ENV_PREFIX = "OTEL_PYTHON_SCOPEWATCH_"
CONFIG_FILE_VARIABLE = ENV_PREFIX + "CONFIG_FILE"
FEATURES = ("scopes", "tasks", "locks", "sessions")
SPAN_MODES = ("all", "anomalies", "none")
DURATION_MODES = ("anomalies", "all")
MAX_FILE_BYTES = 4 << 20
"""A config file larger than this is not read (it is a mistake, or /dev/zero)."""
MAX_HOST_LENGTH = 253

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
    durations: str = "anomalies"
    problems: tuple[str, ...] = field(default=(), compare=False)
    """One line per invalid value that was replaced by its default."""

    def enabled(self, feature: str) -> bool:
        """Whether a feature of ``INSTRUMENT`` is on."""
        return feature in self.instrument

    def debugpy_host_is_loopback(self) -> bool:
        """Whether ``debugpy_host`` is a loopback address or ``localhost``."""
        return is_loopback(self.debugpy_host)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface.

    Only ``localhost`` and loopback IP literals count (``127.0.0.0/8``, ``::1``, ``[::1]``,
    ``::ffff:127.x.x.x``); any other name is not resolved and counts as remote, so
    ``localhost.``, ``127.0.0.1.example.com`` or a name that resolves to a LAN address are
    refused unless ``DEBUGPY_ALLOW_REMOTE`` is true.
    """
    if not isinstance(host, str):
        return False
    if host.lower() == "localhost":
        return True
    bracketed = host.startswith("[") and host.endswith("]")
    try:  # brackets are for IPv6 only: "[127.0.0.1]" is no address a socket binds
        address = ipaddress.IPv6Address(host[1:-1]) if bracketed else ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


# --- value parsers: each returns the value or raises SettingError("accepted ...") ------------
# Only the types a source can legitimately give are looked at (str from the environment; str,
# numbers, booleans and lists of str from a file or kwargs): calling str() on anything else
# could run user code or never end (a YAML alias bomb).


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    text = raw.strip().lower() if isinstance(raw, str) else ""
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingError("true or false")


def _to_number(kind: type[float] | type[int], raw: Any) -> float | int | None:
    """``raw`` as a finite ``kind``, or ``None`` when it is not one."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    value: float | int | None
    try:
        if isinstance(raw, str):
            value = kind(raw.strip())  # int(): ValueError beyond 4300 digits too
        elif kind is int and isinstance(raw, float):
            value = int(raw) if math.isfinite(raw) and raw.is_integer() else None
        else:
            value = kind(raw)  # float(10**400) overflows
    except (ValueError, OverflowError):
        return None
    if isinstance(value, float) and not math.isfinite(value):  # nan, inf, "1e400"
        return None
    return value


def _parse_number(kind: type[float] | type[int], minimum: float, maximum: float | None) -> Any:
    what = "a number" if kind is float else "an integer"
    accepted = f"{what} >= {minimum:g}"
    if maximum is not None:
        accepted = f"{what} from {minimum:g} to {maximum:g}"

    def parse(raw: Any) -> Any:
        value = _to_number(kind, raw)
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise SettingError(accepted)
        return value

    return parse


def _parse_choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = raw.strip().lower() if isinstance(raw, str) else None
        if text not in choices:
            raise SettingError("one of " + ", ".join(choices))
        return text

    return parse


def _split(raw: Any, accepted: str) -> list[str]:
    if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        items = list(raw)
    elif isinstance(raw, str):
        items = raw.split(",")
    else:
        raise SettingError(accepted)
    return [item.strip() for item in items if item.strip()]


def _parse_features(raw: Any) -> frozenset[str]:
    accepted = "a comma-separated subset of " + ", ".join(FEATURES)
    parts = _split(raw, accepted)
    if any(part not in FEATURES for part in parts):
        raise SettingError(accepted)
    return frozenset(parts)


def _parse_globs(raw: Any) -> tuple[str, ...]:
    return tuple(_split(raw, "comma-separated globs (a string or a list of strings)"))


def _parse_text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise SettingError("a string")
    return raw.strip()


def _parse_path(raw: Any) -> str:
    """A file path: a string (or ``os.PathLike``) without NUL bytes; never opened here."""
    accepted = "a file path (a string without NUL bytes)"
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) or "\0" in raw:
        raise SettingError(accepted)
    return raw.strip()


def _parse_host(raw: Any) -> str:
    """A host name or IP address; ``[::1]`` becomes ``::1`` (what a socket binds)."""
    accepted = "a host name or IP address such as 127.0.0.1, ::1 or localhost"
    text = raw.strip() if isinstance(raw, str) else ""
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise SettingError(accepted) from None
        text = inner
    if not text or len(text) > MAX_HOST_LENGTH or not text.isprintable():
        raise SettingError(accepted)
    if any(char.isspace() or char in "[]/\\@" for char in text):
        raise SettingError(accepted)
    return text


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "instrument": _parse_features,
    "spans": _parse_choice(SPAN_MODES),
    "slow_threshold": _parse_number(float, 0, None),
    "stack_depth": _parse_number(int, 0, 256),
    "exception_notes": _parse_bool,
    "exclude": _parse_globs,
    "rules": _parse_text,
    "rules_file": _parse_path,
    "default_rule": _parse_bool,
    "debugpy": _parse_bool,
    "debugpy_host": _parse_host,
    "debugpy_port": _parse_number(int, 1, 65535),
    "debugpy_allow_remote": _parse_bool,
    "debugpy_wait": _parse_number(float, 0, 3600),
    "max_tracked": _parse_number(int, 1, None),
    "log_limit": _parse_number(int, 0, None),
    "durations": _parse_choice(DURATION_MODES),
}


def read_text_file(path: str) -> str:
    """The UTF-8 text of a small file; raises ``SettingError`` saying why it cannot be used.

    The file is only read, never executed or imported, and at most ``MAX_FILE_BYTES`` of it.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        reason = getattr(error, "strerror", None) or str(error)
        raise SettingError(f"cannot be read ({printable(reason)})") from None
    if len(data) > MAX_FILE_BYTES:
        raise SettingError(f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is fine
    except UnicodeDecodeError as error:
        raise SettingError(f"is not UTF-8 text (byte {error.start})") from None


def parse_data(path: str, text: str) -> object:
    """YAML (``.yaml``/``.yml``, with ``yaml.safe_load``: no tags, no code) or JSON."""
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except ImportError:
        raise SettingError(
            "is YAML but PyYAML is not installed; accepted: a .json file, or `pip install pyyaml`"
        ) from None
    except Exception as error:  # yaml.YAMLError, JSONDecodeError, RecursionError ...
        lines = str(error).splitlines()
        first_line = lines[0] if lines else type(error).__name__
        raise SettingError(f"is not valid: {printable(first_line)}") from None


def _read_config_file(path: str, problems: list[str]) -> Mapping[str, Any]:
    """Read a YAML or JSON mapping; report a problem and return ``{}`` when it cannot."""
    where = f"{CONFIG_FILE_VARIABLE}={shown(path)}"
    try:
        data = parse_data(path, read_text_file(path))
    except SettingError as error:
        problems.append(f"{where} {error}; ignored")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(
            f"{where} must hold a mapping of settings, not {type(data).__name__}; ignored"
        )
        return {}
    unknown = [key for key in data if key not in _PARSERS]
    if unknown:
        listed = ", ".join(shown(key, 40) for key in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        problems.append(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {listed}{more} ignored; "
            "accepted keys: " + ", ".join(_PARSERS)
        )
    return {key: value for key, value in data.items() if key in _PARSERS}


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``OTEL_PYTHON_SCOPEWATCH_*`` names that are not settings (typos), one line for all."""
    known = {ENV_PREFIX + name.upper() for name in _PARSERS} | {CONFIG_FILE_VARIABLE}
    unknown = sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)
    if not unknown:
        return []
    listed = ", ".join(printable(name, 60) for name in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    return [
        f"unknown variable{'s' if len(unknown) > 1 else ''} {listed}{more} ignored; "
        "accepted: " + ", ".join(sorted(known))
    ]


def _config_path(
    overrides: Mapping[str, Any], environ: Mapping[str, str], problems: list[str]
) -> str:
    """The config file named by the ``config_file`` kwarg or the environment, or ``""``."""
    for source, raw in (
        ("config_file=", overrides.get("config_file")),
        (f"{CONFIG_FILE_VARIABLE}=", environ.get(CONFIG_FILE_VARIABLE)),
    ):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            return _parse_path(raw)
        except SettingError as error:
            problems.append(f"{source}{shown(raw)} is invalid; accepted: {error}; no file is read")
        return ""
    return ""


def _default(name: str) -> Any:
    default = next(f.default for f in fields(Settings) if f.name == name)
    return sorted(default) if isinstance(default, frozenset) else default


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    warn: bool = True,
) -> Settings:
    """Build the effective settings; never raises.

    An environment variable that is empty (or blank) counts as unset, as the OpenTelemetry
    specification requires of SDK variables. A keyword argument that is ``None`` counts as not
    given. A ``null`` in the config file is an invalid value (``key:`` without a value is a
    mistake more often than a wish for the default).

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
    problems: list[str] = _unknown_variables(environ)
    file_values: Mapping[str, Any] = {}
    config_path = _config_path(overrides, environ, problems)
    if config_path:
        file_values = _read_config_file(config_path, problems)

    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        variable = ENV_PREFIX + name.upper()
        from_env = environ.get(variable)
        for source, present, raw in (
            (f"{name}=", overrides.get(name) is not None, overrides.get(name)),
            (f"{variable}=", bool(from_env and from_env.strip()), from_env),
            (f"{CONFIG_FILE_VARIABLE} key {name}: ", name in file_values, file_values.get(name)),
        ):
            if not present:
                continue
            try:
                values[name] = parse(raw)
            except SettingError as error:
                problems.append(
                    f"{source}{shown(raw)} is invalid; accepted: {error}; "
                    f"using the default {shown(_default(name))}"
                )
            break

    if warn:
        for problem in problems:
            _logger.warning("scopewatch: %s", problem)
    return Settings(**values, problems=tuple(problems))
