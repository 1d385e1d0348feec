"""What a task carries from its submitter, on purpose: ``carry()``.

Owns: the process-wide set of things to carry, as one ``Hooks`` whose ``capture()`` the
runners call at every ``submit()`` (beside their own hooks).  Tasks still start in a
fresh ``contextvars.Context``; what is named here is read in the submitting thread and
set again inside the task, and the threads it uses inherit it:

- a ``ContextVar``: its value at ``submit()`` (nothing when it has none);
- ``"structlog"``: structlog's bound context variables (``bind_contextvars``), so a
  task's log lines keep the request's ``request_id``;
- ``"opentelemetry"``: the task runs in a span of its own (named after the task), linked
  to the span that submitted it and ended with the task, its status set by its outcome
  (needs ``opentelemetry-api``: ``pip install loopkeeper-runner[opentelemetry]``).

Threads: ``carry()`` from any thread, normally at start-up.  The set is replaced, never
changed in place, so ``submit()`` reads it without a lock.  A forked child keeps it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import structlog

from ._hooks import Hooks
from ._validation import describe

if TYPE_CHECKING:
    from ._handles import TaskHandle

__all__ = ("Carried", "carried", "carry")

_BUILT_IN: Final = ("structlog", "opentelemetry")
_NOTHING: Final[Any] = object()


class Carried(Hooks):
    """The things ``carry()`` named: one ``capture()`` for all of them."""

    def __init__(
        self, variables: tuple[contextvars.ContextVar[Any], ...], built_in: frozenset[str]
    ) -> None:
        self.variables = variables
        self.built_in = built_in
        self._structlog = "structlog" in built_in
        self._opentelemetry = "opentelemetry" in built_in

    def capture(self) -> Callable[[], object] | None:
        values = [
            (var, value) for var in self.variables if (value := var.get(_NOTHING)) is not _NOTHING
        ]
        bound = structlog.contextvars.get_contextvars() if self._structlog else None
        link = _submitting_span() if self._opentelemetry else None
        tracing = self._opentelemetry

        def apply() -> None:
            for var, value in values:
                var.set(value)
            if bound:
                structlog.contextvars.bind_contextvars(**bound)
            if tracing:
                _start_task_span(link)

        return apply


_lock = threading.Lock()  # serialises carry(); readers take _carried without it
_carried: Carried | None = None


def carried() -> Carried | None:
    """What ``carry()`` named so far, or None.  Any thread; no lock."""
    return _carried


def carry(*what: contextvars.ContextVar[Any] | Literal["structlog", "opentelemetry"]) -> None:
    """Carry each of ``what`` from the submitter into every task submitted from now on.

    Any thread; normally once at start-up.  Each item is a ``contextvars.ContextVar``
    (its value at ``submit()`` is set inside the task and the threads it uses), or one of
    the built-in opt-ins: ``"structlog"`` (structlog's bound context variables) and
    ``"opentelemetry"`` (each task runs in a span of its own, linked to the submitter's
    span).  Carrying the same thing twice changes nothing::

        REQUEST_ID = contextvars.ContextVar("request_id")
        loopkeeper.carry(REQUEST_ID, "structlog")

    Raises:
        TypeError: an item is neither a ``ContextVar`` nor a built-in name.
        ValueError: an unknown built-in name.
        ModuleNotFoundError: ``"opentelemetry"`` without ``opentelemetry-api`` installed.
    """
    global _carried  # noqa: PLW0603  the one process-wide set, replaced as a whole
    variables: list[contextvars.ContextVar[Any]] = []
    built_in: set[str] = set()
    for item in what:
        if isinstance(item, contextvars.ContextVar):
            variables.append(item)
        elif isinstance(item, str):
            if item not in _BUILT_IN:
                raise ValueError(
                    f"carry(): unknown name {item!r}; expected a contextvars.ContextVar or "
                    f"one of {', '.join(map(repr, _BUILT_IN))}"
                )
            if item == "opentelemetry":
                _require_opentelemetry()
            built_in.add(item)
        else:
            raise TypeError(
                f"carry(): expected a contextvars.ContextVar or one of "
                f"{', '.join(map(repr, _BUILT_IN))}, got {describe(item)}"
            )
    with _lock:
        old = _carried
        old_vars = old.variables if old is not None else ()
        new_vars = old_vars + tuple(v for v in dict.fromkeys(variables) if v not in old_vars)
        new_built_in = (old.built_in if old is not None else frozenset()) | built_in
        if new_vars or new_built_in:
            _carried = Carried(new_vars, frozenset(new_built_in))


def forget_all() -> None:
    """Carry nothing any more (for tests).  Any thread."""
    global _carried  # noqa: PLW0603  the one process-wide set, replaced as a whole
    with _lock:
        _carried = None


# -- OpenTelemetry ----------------------------------------------------------------------------


def _require_opentelemetry() -> None:
    try:
        import opentelemetry.trace  # noqa: F401, PLC0415  optional extra
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "carry('opentelemetry') needs opentelemetry-api: "
            "pip install loopkeeper-runner[opentelemetry]"
        ) from exc


def _submitting_span() -> Any:
    """Submitting thread: the current span's context, if there is a valid one."""
    from opentelemetry import trace  # noqa: PLC0415  optional extra, checked by carry()

    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def _start_task_span(link: Any) -> None:
    """In the task's context: start its span, make it current, end it with the task."""
    from opentelemetry import context as otel_context  # noqa: PLC0415  optional extra
    from opentelemetry import trace  # noqa: PLC0415

    from ._threads import CURRENT_TASK  # noqa: PLC0415  no cycle at import time

    handle = CURRENT_TASK.get()
    if handle is None:  # pragma: no cover  apply() runs only inside a task
        return
    tracer = trace.get_tracer("loopkeeper")
    span = tracer.start_span(
        handle.name,
        context=otel_context.Context(),  # a root: the task outlives the request's trace
        links=[trace.Link(link)] if link is not None else None,
        attributes={"loopkeeper.task.id": handle.id, "loopkeeper.task.name": handle.name},
    )
    otel_context.attach(trace.set_span_in_context(span))  # the task's own context
    handle.add_done_callback(lambda h: _end_task_span(span, h))


def _end_task_span(span: Any, handle: TaskHandle[Any]) -> None:
    from opentelemetry import trace  # noqa: PLC0415  optional extra

    from ._handles import TaskState  # noqa: PLC0415

    state = handle.state
    span.set_attribute("loopkeeper.task.state", state.value)
    if state is TaskState.FAILED:
        error = handle.exception()
        if error is not None:
            span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__qualname__))
    elif state is TaskState.SUCCEEDED:
        span.set_status(trace.Status(trace.StatusCode.OK))
    span.end()
