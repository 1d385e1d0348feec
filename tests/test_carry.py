"""``loopkeeper.carry()``: what a task carries from its submitter, on purpose.

Tasks start in a fresh context; what ``carry()`` names is read at ``submit()`` and set
inside the task and the threads it uses: a ``ContextVar``, structlog's bound context
variables, and an OpenTelemetry span per task linked to the submitter's span (checked
with the SDK's in-memory exporter).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

import loopkeeper
from loopkeeper import _carry

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("lk_test_request_id")


@pytest.fixture(autouse=True)
def carry_nothing_after() -> Iterator[None]:
    """Each test starts and ends with nothing carried (the set is process-wide)."""
    _carry.forget_all()
    yield
    _carry.forget_all()


def submit_in(context: contextvars.Context, runner: loopkeeper.Runner, func: Any) -> Any:
    return context.run(runner.submit, func)


def test_a_carried_variable_has_the_submitters_value_in_the_task_and_its_threads(
    runner: loopkeeper.Runner,
) -> None:
    """The value at ``submit()`` is set in the task's coroutine, its ``to_thread`` and
    ``run_in_thread`` threads, and a sync task; a submitter without a value gives none."""
    loopkeeper.carry(REQUEST_ID)

    def read() -> str:
        return REQUEST_ID.get("unset")

    async def read_everywhere() -> list[str]:
        return [read(), await asyncio.to_thread(read), await loopkeeper.run_in_thread(read)]

    request = contextvars.copy_context()
    request.run(REQUEST_ID.set, "req-42")
    assert submit_in(request, runner, read_everywhere).result(timeout=5) == ["req-42"] * 3
    assert submit_in(request, runner, read).result(timeout=5) == "req-42"
    assert runner.submit(read).result(timeout=5) == "unset"


def test_without_carry_a_task_sees_none_of_the_submitters_context(
    runner: loopkeeper.Runner,
) -> None:
    """The default stays a fresh context: nothing of the submitter's leaks in."""

    async def read() -> str:
        return REQUEST_ID.get("unset")

    request = contextvars.copy_context()
    request.run(REQUEST_ID.set, "req-1")
    assert submit_in(request, runner, read).result(timeout=5) == "unset"


@pytest.mark.usefixtures("unconfigured_structlog")  # capture_logs() leaves it configured
def test_structlog_bound_context_follows_the_task(runner: loopkeeper.Runner) -> None:
    """With ``carry("structlog")`` a task's log lines carry the request's bound
    ``request_id``, in the coroutine and in its threads."""
    loopkeeper.carry("structlog")

    def log_line() -> None:
        structlog.get_logger().info("inside")

    async def job() -> None:
        log_line()
        await asyncio.to_thread(log_line)

    request = contextvars.copy_context()
    request.run(structlog.contextvars.bind_contextvars, request_id="req-7")
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        submit_in(request, runner, job).result(timeout=5)
    inside = [line for line in logs if line["event"] == "inside"]
    assert [line.get("request_id") for line in inside] == ["req-7", "req-7"]


def test_carry_refuses_what_it_cannot_carry() -> None:
    """Anything but a ContextVar or a built-in name is refused, naming what was given."""
    with pytest.raises(TypeError, match=r"expected a contextvars.ContextVar .* got 42"):
        loopkeeper.carry(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown name 'request_id'"):
        loopkeeper.carry("request_id")  # type: ignore[arg-type]
    assert _carry.carried() is None


def test_carrying_twice_carries_once(runner: loopkeeper.Runner) -> None:
    """``carry()`` of the same variable again changes nothing."""
    loopkeeper.carry(REQUEST_ID)
    loopkeeper.carry(REQUEST_ID, "structlog")
    carried = _carry.carried()
    assert carried is not None
    assert carried.variables == (REQUEST_ID,)
    assert carried.built_in == frozenset({"structlog"})


@pytest.fixture
def spans() -> Iterator[Any]:
    """The OpenTelemetry SDK with an in-memory exporter, as the global tracer provider."""
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    from opentelemetry import trace  # noqa: PLC0415

    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # a test may install its own provider
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()


def test_each_task_runs_in_a_span_linked_to_the_submitters(
    runner: loopkeeper.Runner, spans: Any, wait_until: Callable[..., None]
) -> None:
    """With ``carry("opentelemetry")`` a task runs in a span of its own, named after it,
    linked to the span that submitted it, current in its threads too, and ended with
    the task's outcome as its status."""
    from opentelemetry import trace  # noqa: PLC0415

    loopkeeper.carry("opentelemetry")
    seen: list[int] = []

    def in_thread() -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)

    async def job() -> None:
        await asyncio.to_thread(in_thread)

    async def failing() -> None:
        raise LookupError("gone")

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        ok = runner.submit(job, name="send-mail")
        bad = runner.submit(failing, name="broken")
    ok.result(timeout=5)
    bad.exception(timeout=5)
    # A span ends in its task's done callback, which runs after result() was woken.
    wait_until(lambda: len(spans.get_finished_spans()) == 3, what="both task spans to end")
    finished = {span.name: span for span in spans.get_finished_spans()}
    task_span = finished["send-mail"]
    assert task_span.parent is None
    assert [link.context.span_id for link in task_span.links] == [
        request.get_span_context().span_id
    ]
    assert seen == [task_span.context.span_id]
    assert task_span.attributes["loopkeeper.task.id"] == ok.id
    assert task_span.status.status_code is trace.StatusCode.OK
    assert finished["broken"].status.status_code is trace.StatusCode.ERROR
