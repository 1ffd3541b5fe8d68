"""The publisher: runs every handler registered for a notification and records each outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from queueing.context import JobContext
from queueing.errors import InvalidInput, JobInterrupted
from queueing.jobs import ErrorType, HandlerOutcome, JobStatus, Notification

logger = logging.getLogger(__name__)


class HandlerLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def run(self) -> Callable[[Any, JobContext], Mapping[str, Any] | None]: ...


def publish(
    notification: Notification,
    handlers: Sequence[HandlerLike],
    context: JobContext,
    earlier: Mapping[str, HandlerOutcome],
    on_error: Callable[[BaseException], None] | None = None,
) -> list[HandlerOutcome]:
    """Run each handler in order and return one outcome per handler.

    Handlers that succeeded in an earlier attempt (`earlier`) keep their outcome and do not run
    again. A failing handler does not stop the others: they are independent subscribers. After
    a cancel or timeout the remaining handlers do not start. `on_error` receives every unexpected
    exception a handler raised.
    """
    outcomes: list[HandlerOutcome] = []
    for handler in handlers:
        done = earlier.get(handler.name)
        if done is not None:
            outcomes.append(done)
            context.result_so_far.update(done.output or {})
            continue
        if context.canceled:
            reason = context.cancel_token.reason or "canceled"
            outcomes.append(HandlerOutcome(handler.name, JobStatus.CANCELED, f"not run: {reason}"))
            continue
        outcome = _run_one(notification, handler, context, on_error)
        if outcome.output:
            context.result_so_far.update(outcome.output)
        outcomes.append(outcome)
    return outcomes


def _run_one(
    notification: Notification,
    handler: HandlerLike,
    context: JobContext,
    on_error: Callable[[BaseException], None] | None,
) -> HandlerOutcome:
    name = handler.name
    try:
        output = handler.run(notification, context)
    except JobInterrupted as interrupted:
        logger.info("Handler %s of job %s stopped: %s.", name, context.job_id, interrupted.reason)
        return HandlerOutcome(name, JobStatus.CANCELED, f"stopped: {interrupted.reason}")
    except InvalidInput as invalid:
        logger.info("Handler %s of job %s rejected its input: %s", name, context.job_id, invalid)
        return HandlerOutcome(
            name, JobStatus.FAILED, str(invalid), error_type=ErrorType.INVALID_INPUT
        )
    # A handler may raise anything, SystemExit included; none of it may end the worker thread.
    except BaseException as error:
        logger.exception("Handler %s of job %s raised.", name, context.job_id)
        if on_error is not None:
            on_error(error)
        message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return HandlerOutcome(name, JobStatus.FAILED, message, error_type=ErrorType.HANDLER_ERROR)
    if output is not None and not isinstance(output, Mapping):
        message = f"returned {type(output).__name__}; a handler returns a dict or None"
        logger.error("Handler %s of job %s %s.", name, context.job_id, message)
        return HandlerOutcome(name, JobStatus.FAILED, message, error_type=ErrorType.HANDLER_ERROR)
    return HandlerOutcome(name, JobStatus.SUCCEEDED, output=dict(output or {}))
