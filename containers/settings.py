"""Settings: built-in defaults, then a YAML file, then environment variables, then overrides.

Every setting has a default and a check. An unknown key or a value a check rejects stops
start-up with a SettingsError that names the setting, where the value came from and what the
setting accepts.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from queueing.errors import SettingsError

ENV_PREFIX = "BACKBURNER_"
CONFIG_VARIABLE = "BACKBURNER_CONFIG"

Check = Callable[[Any], Any]


def _whole(minimum: int, maximum: int | None = None) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("a whole number")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"a whole number of at least {minimum}{upper}")
        return value

    return check


def _seconds(minimum: float, *, above: bool = False) -> Check:
    def check(value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError("a number of seconds")
        if value < minimum or (above and value == minimum):
            bound = "above" if above else "at least"
            raise ValueError(f"a number of seconds {bound} {minimum:g}")
        return float(value)

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a text value")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return str(value)

    return check


def _text_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError('a list of text values, e.g. ["a", "b"]')
    return list(value)


def _key_list(value: Any) -> list[str]:
    keys = _text_list(value)
    if any(not key.strip() for key in keys):
        raise ValueError('a list of non-empty keys, e.g. ["a-long-random-key"]')
    return keys


def _sizes(value: Any) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(type(item) is int and 1 <= item <= 10000 for item in value)
    ):
        raise ValueError("a non-empty list of whole numbers from 1 to 10000, e.g. [128, 512]")
    return sorted(set(value))


def _timeouts(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError('a mapping of job type to seconds, e.g. {"csv-profile": 60}')
    check = _seconds(0, above=True)
    return {str(name): check(seconds) for name, seconds in value.items()}


def _path(value: Any) -> str:
    # Relative paths resolve against the working directory at start-up.
    return str(Path(_text(value)).expanduser().absolute())


def _optional_backend(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _choice("local", "redis")(value)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class _Setting:
    default: Any
    check: Check


SCHEMA: dict[str, dict[str, _Setting]] = {
    "server": {
        "host": _Setting("127.0.0.1", _text),
        "port": _Setting(8080, _whole(0, 65535)),
        "threads": _Setting(8, _whole(1, 1024)),
        "max_waiting_requests": _Setting(4, _whole(1)),
        "channel_timeout": _Setting(120, _whole(1)),
        "max_header_bytes": _Setting(65536, _whole(1024)),
        "trusted_proxy": _Setting("", _text),
        "cors_origins": _Setting([], _text_list),
        "long_poll_max_seconds": _Setting(30, _seconds(0, above=True)),
    },
    "queue": {
        "backend": _Setting("memory", _choice("memory", "sqlite", "redis")),
        "max_size": _Setting(1000, _whole(1)),
        "sqlite_path": _Setting("var/backburner.sqlite3", _path),
        "sqlite_synchronous": _Setting("normal", _choice("normal", "full")),
        "redis_url": _Setting("redis://127.0.0.1:6379/0", _text),
    },
    "storage": {
        "backend": _Setting(None, _optional_backend),
        "data_dir": _Setting("var/", _path),
    },
    "workers": {
        "threads": _Setting(4, _whole(0, 1024)),
    },
    "jobs": {
        "timeout_seconds": _Setting(300, _seconds(0, above=True)),
        "timeouts": _Setting({}, _timeouts),
        "lease_seconds": _Setting(30, _seconds(0, above=True)),
        "max_attempts": _Setting(3, _whole(1)),
        "retry_backoff_seconds": _Setting(1, _seconds(0)),
        "retention_seconds": _Setting(86400, _seconds(0, above=True)),
        "delay_enabled": _Setting(True, _flag),
        "delay_max_seconds": _Setting(3600, _seconds(0)),
    },
    "shutdown": {
        "grace_seconds": _Setting(30, _seconds(0)),
    },
    "uploads": {
        "max_bytes": _Setting(52428800, _whole(1)),
    },
    "thumbnails": {
        "sizes": _Setting([128, 512], _sizes),
        "max_pixels": _Setting(50000000, _whole(1)),
    },
    "csv": {
        "max_rows": _Setting(10000000, _whole(1)),
        "max_columns": _Setting(1000, _whole(1)),
        "max_field_bytes": _Setting(1048576, _whole(1)),
        "summary_db": _Setting("var/csv-summaries.sqlite3", _path),
    },
    "handlers": {
        "modules": _Setting([], _text_list),
    },
    "logging": {
        "level": _Setting("INFO", lambda value: _choice(*_LOG_LEVELS)(str(value).upper())),
    },
    "auth": {
        "keys": _Setting([], _key_list),
        "open_metrics": _Setting(False, _flag),
    },
}


def defaults() -> dict[str, dict[str, Any]]:
    return {
        section: {key: copy.deepcopy(setting.default) for key, setting in keys.items()}
        for section, keys in SCHEMA.items()
    }


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Return the checked settings from every source, later sources winning.

    `overrides` is a nested mapping like the YAML file (`{"server": {"port": 0}}`), for command
    line flags and tests. Raises SettingsError for an unknown key or a rejected value.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, dict[str, tuple[Any, str]]] = {
        section: {key: (setting.default, "default") for key, setting in keys.items()}
        for section, keys in SCHEMA.items()
    }
    config_path = environ.get(CONFIG_VARIABLE)
    if config_path:
        _merge(raw, _read_yaml(Path(config_path)), f"config file {config_path}")
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        if "__" in name:
            section, key = _split_variable(name)
            _merge(raw, {section: {key: _parse_scalar(name, value)}}, f"variable {name}={value}")
        else:
            _check_not_misspelled(name)
    if overrides:
        _merge(raw, overrides, "overrides")

    checked: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        checked[section] = {}
        for key, setting in keys.items():
            value, source = raw[section][key]
            try:
                checked[section][key] = setting.check(value)
            except ValueError as error:
                raise SettingsError(
                    f"{section}.{key}", f"invalid value {value!r} from {source}; use {error}"
                ) from None
    # NOTE: the Redis backend (queue, status and files shared by many machines) is designed
    # but not built yet. Rejecting it here gives a clearer message than a failure later.
    for name, value in (
        ("queue.backend", checked["queue"]["backend"]),
        ("storage.backend", checked["storage"]["backend"]),
    ):
        if value == "redis":
            raise SettingsError(
                name, "the redis backend is not available in this version; use memory or sqlite"
            )
    if checked["storage"]["backend"] is None:
        checked["storage"]["backend"] = (
            "redis" if checked["queue"]["backend"] == "redis" else "local"
        )
    return checked


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except OSError as error:
        raise SettingsError(CONFIG_VARIABLE, f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SettingsError(CONFIG_VARIABLE, f"{path} is not valid YAML: {error}") from None
    except UnicodeDecodeError:
        raise SettingsError(
            CONFIG_VARIABLE, f"{path} is not UTF-8 text; save it as UTF-8"
        ) from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise SettingsError(CONFIG_VARIABLE, f"{path} must hold a mapping of sections")
    return content


def _split_variable(name: str) -> tuple[str, str]:
    parts = name[len(ENV_PREFIX) :].lower().split("__")
    if len(parts) != 2 or not all(parts):
        raise SettingsError(
            name,
            "environment settings are named BACKBURNER_<SECTION>__<KEY>, e.g. "
            "BACKBURNER_QUEUE__MAX_SIZE",
        )
    return parts[0], parts[1]


def _check_not_misspelled(name: str) -> None:
    # BACKBURNER_QUEUE_MAX_SIZE looks like a setting with one underscore too few; ignoring it
    # would leave the user wondering why the setting has no effect.
    rest = name[len(ENV_PREFIX) :].lower()
    for section in SCHEMA:
        if rest.startswith(section + "_"):
            fixed = f"{ENV_PREFIX}{section.upper()}__{rest[len(section) + 1 :].upper()}"
            raise SettingsError(
                name, f"settings take two underscores after the section; did you mean {fixed}?"
            )


def _parse_scalar(name: str, value: str) -> Any:
    # Values are YAML scalars or JSON lists and mappings: 8080, true, [128, 512].
    try:
        return yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        raise SettingsError(
            name, f"cannot parse {value!r}; use a YAML scalar, or a JSON list or mapping"
        ) from None


def _merge(
    raw: dict[str, dict[str, tuple[Any, str]]], layer: Mapping[str, Any], source: str
) -> None:
    for section, keys in layer.items():
        if section not in SCHEMA:
            known = ", ".join(SCHEMA)
            raise SettingsError(str(section), f"unknown section in {source}; known: {known}")
        if not isinstance(keys, Mapping):
            raise SettingsError(str(section), f"must be a mapping of settings in {source}")
        for key, value in keys.items():
            if key not in SCHEMA[section]:
                known = ", ".join(SCHEMA[section])
                raise SettingsError(
                    f"{section}.{key}", f"unknown setting in {source}; {section} has: {known}"
                )
            raw[section][key] = (value, source)
