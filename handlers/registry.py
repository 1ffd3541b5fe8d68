"""The registry of job types, their handlers and their per-job resources.

A module adds job types with a `register(registry)` function (see `load_registry`). A job type
names its notification class and a `parse` function that turns a request into a notification.
Handlers subscribe to a notification class, and every handler of it runs for each job.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from queueing.context import JobContext
from queueing.errors import (
    DuplicateRegistration,
    InvalidInput,
    RegistryError,
    SettingsError,
    UnknownJobType,
)
from queueing.files import FileStore
from queueing.jobs import Notification

ContentKind = Literal["json", "multipart"]
JSON: frozenset[ContentKind] = frozenset({"json"})
MULTIPART: frozenset[ContentKind] = frozenset({"multipart"})


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart request; `stream` is seekable and positioned at 0."""

    field: str
    filename: str | None
    stream: BinaryIO


@dataclass(frozen=True)
class Submission:
    """A job request, free of any web framework: the JSON object, or the multipart parts."""

    content: ContentKind
    json: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, UploadedFile] = field(default_factory=dict)

    def check_names(self, allowed: Sequence[str]) -> None:
        """Raise InvalidInput naming the first key or form field that is not in `allowed`."""
        names = list(self.json) if self.content == "json" else [*self.fields, *self.files.keys()]
        for name in names:
            if name not in allowed:
                expected = ", ".join(allowed) or "none"
                raise InvalidInput(name, f"unknown field; this job type takes: {expected}")

    def require_file(self, name: str) -> UploadedFile:
        upload = self.files.get(name)
        if upload is None:
            if name in self.fields:
                raise InvalidInput(name, "must be a file part, not a text field")
            raise InvalidInput(name, "missing; send the file as a multipart part of this name")
        return upload


@dataclass(frozen=True)
class Intake:
    """The inputs `parse` may use while it accepts a job: the job's id, settings, file store."""

    job_id: str
    settings: Mapping[str, Any]
    files: FileStore

    def save_upload(self, name: str, data: bytes | BinaryIO) -> int:
        return self.files.save(self.job_id, name, data)


Parse = Callable[[Submission, Intake], Notification]
HandlerFunction = Callable[[Any, JobContext], Mapping[str, Any] | None]
ResourceFactory = Callable[[Mapping[str, Any]], Iterator[Any]]


@dataclass(frozen=True)
class Handler:
    """One subscriber of a notification: `run` returns its part of the result document."""

    name: str
    run: HandlerFunction


@dataclass(frozen=True)
class JobType:
    """A kind of work a client can start with `POST /jobs/<name>`."""

    name: str
    notification: type[Notification]
    parse: Parse
    accepts: frozenset[ContentKind]
    description: str = ""


class Registry:
    """Job types, handlers and per-job resources, each registered once.

    Built once at start-up; after `freeze()` it is read-only and safe to share between threads.
    """

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}
        self._by_notification: dict[type[Notification], JobType] = {}
        self._handlers: dict[type[Notification], tuple[Handler, ...]] = {}
        self._resources: dict[str, ResourceFactory] = {}
        self._frozen = False

    # Registration ------------------------------------------------------------------------------

    def job_type(
        self,
        name: str,
        notification: type[Notification],
        parse: Parse,
        *,
        accepts: frozenset[ContentKind] = JSON,
        description: str = "",
    ) -> None:
        self._check_open()
        if name in self._types:
            raise DuplicateRegistration(f"job type {name!r} is already registered")
        if notification in self._by_notification:
            owner = self._by_notification[notification].name
            raise DuplicateRegistration(
                f"notification {notification.__name__} already belongs to job type {owner!r}"
            )
        job_type = JobType(name, notification, parse, frozenset(accepts), description)
        self._types[name] = job_type
        self._by_notification[notification] = job_type

    def handler(self, notification: type[Notification], name: str, run: HandlerFunction) -> None:
        self._check_open()
        existing = self._handlers.get(notification, ())
        if any(handler.name == name for handler in existing):
            raise DuplicateRegistration(
                f"handler {name!r} is already registered for {notification.__name__}"
            )
        self._handlers[notification] = (*existing, Handler(name, run))

    def resource(self, name: str, factory: ResourceFactory) -> None:
        """Register a per-job resource: `factory(settings)` yields it once, then cleans up."""
        self._check_open()
        if name in self._resources:
            raise DuplicateRegistration(f"resource {name!r} is already registered")
        self._resources[name] = factory

    def freeze(self) -> None:
        """Check that every job type has a handler, then refuse further registrations."""
        for job_type in self._types.values():
            if not self._handlers.get(job_type.notification):
                raise RegistryError(f"job type {job_type.name!r} has no handler registered")
        self._frozen = True

    def _check_open(self) -> None:
        if self._frozen:
            raise RegistryError("the registry is frozen; register job types at start-up")

    # Lookup ------------------------------------------------------------------------------------

    def get(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobType(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._types)

    def for_notification(self, notification: type[Notification]) -> JobType:
        try:
            return self._by_notification[notification]
        except KeyError:
            raise RegistryError(f"no job type for notification {notification.__name__}") from None

    def handlers_for(self, notification: type[Notification]) -> tuple[Handler, ...]:
        return self._handlers.get(notification, ())

    def decode(self, job_type: str, payload: Mapping[str, Any]) -> Notification:
        """Rebuild a notification stored by a durable backend."""
        return self.get(job_type).notification.from_payload(payload)

    @property
    def resources(self) -> Mapping[str, ResourceFactory]:
        return dict(self._resources)


BUILTIN_MODULES = ("handlers.thumbnails", "handlers.csv_profile", "handlers.delay")


def load_registry(modules: Sequence[str]) -> Registry:
    """Build and freeze a registry from modules that each have a `register(registry)` function."""
    registry = Registry()
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise SettingsError(
                "handlers.modules", f"cannot import module {module_name!r}: {error}"
            ) from error
        register = getattr(module, "register", None)
        if not callable(register):
            raise SettingsError(
                "handlers.modules",
                f"module {module_name!r} has no register(registry) function",
            )
        register(registry)
    registry.freeze()
    return registry
