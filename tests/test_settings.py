"""Settings: defaults, YAML file, environment variables, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from containers.settings import load_settings
from queueing.errors import SettingsError


def test_defaults_match_the_documented_table() -> None:
    settings = load_settings(environ={})
    assert settings["server"]["host"] == "127.0.0.1"
    assert settings["server"]["port"] == 8080
    assert settings["queue"]["backend"] == "memory"
    assert settings["queue"]["max_size"] == 1000
    assert settings["storage"]["backend"] == "local"
    assert settings["workers"]["threads"] == 4
    assert settings["jobs"]["max_attempts"] == 3
    assert settings["uploads"]["max_bytes"] == 52428800
    assert settings["thumbnails"]["sizes"] == [128, 512]


def test_yaml_file_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "backburner.yaml"
    config.write_text("queue:\n  max_size: 10\nthumbnails:\n  sizes: [64, 256]\n")
    settings = load_settings(environ={"BACKBURNER_CONFIG": str(config)})
    assert settings["queue"]["max_size"] == 10
    assert settings["thumbnails"]["sizes"] == [64, 256]


def test_environment_overrides_yaml(tmp_path: Path) -> None:
    config = tmp_path / "backburner.yaml"
    config.write_text("queue:\n  max_size: 10\n")
    environ = {
        "BACKBURNER_CONFIG": str(config),
        "BACKBURNER_QUEUE__MAX_SIZE": "20",
        "BACKBURNER_THUMBNAILS__SIZES": "[128,512,1024]",
        "BACKBURNER_JOBS__DELAY_ENABLED": "false",
        "BACKBURNER_JOBS__TIMEOUTS": '{"csv-profile": 60}',
    }
    settings = load_settings(environ=environ)
    assert settings["queue"]["max_size"] == 20
    assert settings["thumbnails"]["sizes"] == [128, 512, 1024]
    assert settings["jobs"]["delay_enabled"] is False
    assert settings["jobs"]["timeouts"] == {"csv-profile": 60.0}


def test_overrides_win_over_environment() -> None:
    environ = {"BACKBURNER_SERVER__PORT": "9000"}
    assert (
        load_settings(environ=environ, overrides={"server": {"port": 9100}})["server"]["port"]
        == 9100
    )


def test_variables_without_double_underscore_are_not_settings() -> None:
    environ = {"BACKBURNER_URL": "http://x", "BACKBURNER_KEY": "k", "BACKBURNER_CONFIG": ""}
    assert load_settings(environ=environ)["server"]["port"] == 8080


def test_relative_paths_resolve_against_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={"BACKBURNER_STORAGE__DATA_DIR": "data"})
    assert settings["storage"]["data_dir"] == str(tmp_path / "data")


def test_redis_backend_is_refused_until_it_exists() -> None:
    with pytest.raises(SettingsError, match=r"queue\.backend: the redis backend is not available"):
        load_settings(environ={"BACKBURNER_QUEUE__BACKEND": "redis"})


def test_unknown_variable_stops_start_up() -> None:
    with pytest.raises(SettingsError, match=r"queue\.max_sise: unknown setting in variable"):
        load_settings(environ={"BACKBURNER_QUEUE__MAX_SISE": "5"})


def test_unknown_section_stops_start_up() -> None:
    with pytest.raises(SettingsError, match="unknown section"):
        load_settings(environ={"BACKBURNER_QUEUES__MAX_SIZE": "5"})


def test_unknown_yaml_key_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "backburner.yaml"
    config.write_text("server:\n  prot: 80\n")
    with pytest.raises(
        SettingsError, match=rf"server\.prot: unknown setting in config file {config}"
    ):
        load_settings(environ={"BACKBURNER_CONFIG": str(config)})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "BACKBURNER_QUEUE__MAX_SIZE",
            "lots",
            r"queue\.max_size: invalid value 'lots'.*whole number",
        ),
        ("BACKBURNER_QUEUE__MAX_SIZE", "0", r"at least 1"),
        ("BACKBURNER_QUEUE__BACKEND", "kafka", r"one of memory, sqlite, redis"),
        ("BACKBURNER_SERVER__PORT", "70000", r"at most 65535"),
        ("BACKBURNER_THUMBNAILS__SIZES", "[0]", r"whole numbers from 1 to 10000"),
        ("BACKBURNER_JOBS__TIMEOUT_SECONDS", "-1", r"seconds above 0"),
        ("BACKBURNER_JOBS__DELAY_ENABLED", "maybe", r"true or false"),
    ],
)
def test_bad_value_names_setting_and_what_it_takes(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(environ={variable: value})
    assert variable in str(caught.value)


def test_missing_config_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(environ={"BACKBURNER_CONFIG": str(tmp_path / "missing.yaml")})


def test_invalid_yaml_stops_start_up(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(environ={"BACKBURNER_CONFIG": str(config)})
