"""The registry of job types: duplicates refused, extensions loaded from modules."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from handlers.registry import JSON, Registry, load_registry
from queueing.errors import DuplicateRegistration, RegistryError, SettingsError, UnknownJobType
from queueing.jobs import Notification


@dataclass(frozen=True, kw_only=True)
class Hello(Notification):
    name: str = ""


def parse(submission: object, intake: object) -> Hello:
    raise NotImplementedError


def greet(notification: Hello, context: object) -> dict[str, str]:
    return {"greeting": f"hello {notification.name}"}


def test_duplicate_job_type_is_refused() -> None:
    registry = Registry()
    registry.job_type("hello", Hello, parse)
    with pytest.raises(DuplicateRegistration, match="job type 'hello'"):
        registry.job_type("hello", Hello, parse)


def test_notification_belongs_to_one_job_type() -> None:
    registry = Registry()
    registry.job_type("hello", Hello, parse)
    with pytest.raises(DuplicateRegistration, match="already belongs to job type 'hello'"):
        registry.job_type("hi", Hello, parse)


def test_duplicate_handler_is_refused() -> None:
    registry = Registry()
    registry.handler(Hello, "greet", greet)
    with pytest.raises(DuplicateRegistration, match="handler 'greet'"):
        registry.handler(Hello, "greet", greet)


def test_duplicate_resource_is_refused() -> None:
    registry = Registry()
    registry.resource("db", lambda settings: iter([1]))
    with pytest.raises(DuplicateRegistration, match="resource 'db'"):
        registry.resource("db", lambda settings: iter([2]))


def test_job_type_without_handler_is_refused_at_freeze() -> None:
    registry = Registry()
    registry.job_type("hello", Hello, parse)
    with pytest.raises(RegistryError, match="no handler"):
        registry.freeze()


def test_frozen_registry_refuses_registration() -> None:
    registry = Registry()
    registry.freeze()
    with pytest.raises(RegistryError, match="frozen"):
        registry.job_type("hello", Hello, parse)


def test_unknown_job_type_lists_known_types() -> None:
    registry = Registry()
    registry.job_type("hello", Hello, parse, accepts=JSON)
    with pytest.raises(UnknownJobType) as caught:
        registry.get("nope")
    assert caught.value.known == ["hello"]


def test_notification_payload_round_trips() -> None:
    registry = Registry()
    registry.job_type("hello", Hello, parse)
    notification = Hello(job_id="j", name="ada")
    assert registry.decode("hello", notification.to_payload()) == notification


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("bb_ext_")]:
        del sys.modules[name]


def test_extension_module_registers_its_job_type(module_dir: Path) -> None:
    (module_dir / "bb_ext_words.py").write_text(
        textwrap.dedent("""
        from dataclasses import dataclass
        from queueing.jobs import Notification

        @dataclass(frozen=True, kw_only=True)
        class CountWords(Notification):
            text: str

        def parse(submission, intake):
            return CountWords(job_id=intake.job_id, text=submission.json["text"])

        def count(notification, context):
            return {"words": len(notification.text.split())}

        def register(registry):
            registry.job_type("word-count", CountWords, parse)
            registry.handler(CountWords, "count", count)
    """)
    )
    registry = load_registry(["bb_ext_words"])
    assert registry.names() == ["word-count"]


def test_missing_extension_module_stops_start_up(module_dir: Path) -> None:
    message = r"handlers\.modules.*cannot import module 'bb_ext_gone'"
    with pytest.raises(SettingsError, match=message):
        load_registry(["bb_ext_gone"])


def test_module_without_register_stops_start_up(module_dir: Path) -> None:
    (module_dir / "bb_ext_empty.py").write_text("VALUE = 1\n")
    with pytest.raises(SettingsError, match="has no register"):
        load_registry(["bb_ext_empty"])
