"""``loopkeeper.contrib.asgi.LifespanMiddleware`` against a hand-written ASGI server.

``FakeServer`` plays the server's side of one lifespan scope the way uvicorn and
hypercorn do: it calls the app once with the scope, feeds ``lifespan.startup`` and later
``lifespan.shutdown`` through a queue (an anyio memory stream, so the same server runs
under asyncio and trio), records every reply, and fails the test if the app's call
raises or is still running at the end.  Each test uses its own ``Runner(name=...)``;
the default runner is process-global, so the one test that needs it runs in a child
interpreter.  Real servers are in ``test_asgi_servers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
import structlog

import loopkeeper
from loopkeeper.contrib.asgi import LifespanMiddleware, Message, Receive, Scope, Send

DEADLINE: Final = 20.0  # seconds any single exchange may take before the test fails
SRC: Final = Path(__file__).resolve().parents[1] / "src"
ASGI_LOGGER: Final = "loopkeeper.asgi"  # the middleware's own lines

STARTUP: Final = {"type": "lifespan.startup"}
SHUTDOWN: Final = {"type": "lifespan.shutdown"}
STARTUP_COMPLETE: Final = {"type": "lifespan.startup.complete"}
SHUTDOWN_COMPLETE: Final = {"type": "lifespan.shutdown.complete"}

both_loops = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


# -- the fake server -----------------------------------------------------------------------


class FakeServer:
    """The server's side of one lifespan scope: a queue to the app, a record of replies."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._to_app, self._inbox = anyio.create_memory_object_stream[Message](8)
        self._reply_in, self._reply_out = anyio.create_memory_object_stream[Message](8)
        self.replies: list[Message] = []  # every reply, in order, the same objects
        self.returned = anyio.Event()  # the app's call returned normally

    async def receive(self) -> Message:
        return await self._inbox.receive()

    async def send(self, message: Message) -> None:
        self.replies.append(message)
        await self._reply_in.send(message)

    async def run(self) -> None:
        await self.app(self.scope, self.receive, self.send)  # an exception fails the test
        self.returned.set()

    async def startup(self) -> Message:
        """Send lifespan.startup; return the reply."""
        await self._to_app.send(dict(STARTUP))
        return await self.reply()

    async def shutdown(self) -> Message:
        """Send lifespan.shutdown; return the reply."""
        await self._to_app.send(dict(SHUTDOWN))
        return await self.reply()

    async def reply(self) -> Message:
        with anyio.fail_after(DEADLINE):
            return await self._reply_out.receive()

    async def wait_returned(self) -> None:
        with anyio.fail_after(DEADLINE):
            await self.returned.wait()

    def close(self) -> None:
        for stream in (self._to_app, self._inbox, self._reply_in, self._reply_out):
            stream.close()


@contextlib.asynccontextmanager
async def serving(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
) -> AsyncIterator[FakeServer]:
    """Run ``app``'s lifespan call as a task; on leaving, it must have returned normally."""
    server = FakeServer(app)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.run)
            yield server
            await server.wait_returned()
    finally:
        server.close()


async def http_get(app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> list[Message]:
    """One fake HTTP request through ``app``; the messages it sent back."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with anyio.fail_after(DEADLINE):
        await app(scope, receive, send)
    return sent


# -- inner apps ----------------------------------------------------------------------------


async def respond(send: Send, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def django_like(scope: Scope, receive: Receive, send: Send) -> None:
    """Rejects the lifespan scope at once, as Django's ``ASGIHandler`` does."""
    if scope["type"] != "http":
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
    await respond(send)


class StarletteLike:
    """Speaks lifespan by hand the way Starlette's router does; records what it did."""

    def __init__(
        self,
        runner: loopkeeper.Runner,
        events: list[str],
        *,
        on_shutdown: Callable[[], object] = list,
    ) -> None:
        self.runner = runner
        self.events = events
        self.on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await respond(send)
            return
        assert (await receive())["type"] == "lifespan.startup"
        self.events.append(f"app startup, loop running: {loop_thread_running(self.runner)}")
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        self.events.append("app shutdown")
        self.on_shutdown()
        await send({"type": "lifespan.shutdown.complete"})


# -- helpers -------------------------------------------------------------------------------


def loop_thread_running(runner: loopkeeper.Runner) -> bool:
    """Whether the runner's loop thread (named after the runner) exists now."""
    return any(t.name == runner.name for t in threading.enumerate())


class EventLog(logging.Handler):
    """Collects loopkeeper's log events (from any thread) for the test to look at."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[str]:
        return [str(getattr(r, "event", r.getMessage())) for r in self.records]

    async def wait_for(self, event: str) -> None:
        """Wait on the calling loop (never blocking it) until ``event`` was logged."""
        with anyio.fail_after(DEADLINE):
            while event not in self.events():
                await anyio.sleep(0.005)


@pytest.fixture
def log_events() -> Iterator[EventLog]:
    """Every loopkeeper log record at DEBUG and above (core and ``loopkeeper.asgi``)."""
    handler = EventLog()
    logger = logging.getLogger("loopkeeper")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


_runner_numbers: Final = itertools.count(1)


@pytest.fixture
def make_runner(request: pytest.FixtureRequest) -> Iterator[Callable[..., loopkeeper.Runner]]:
    """A factory of runners named ``asgi-<n>`` (unique in the process, so a thread name
    identifies one runner); every one is shut down after the test."""
    made: list[loopkeeper.Runner] = []

    def make(**options: Any) -> loopkeeper.Runner:
        options.setdefault("shutdown_timeout", 10)
        runner = loopkeeper.Runner(name=f"asgi-{next(_runner_numbers)}", **options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.shutdown(timeout=5)


# -- startup -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_startup_starts_the_runner_before_replying(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """``lifespan.startup`` starts the runner eagerly: its loop thread exists the moment the
    server has ``lifespan.startup.complete``, before any request submitted anything."""
    runner = make_runner()
    middleware = LifespanMiddleware(django_like, runner=runner)
    assert not loop_thread_running(runner), "nothing may start at construction"
    async with serving(middleware) as server:
        assert await server.startup() == STARTUP_COMPLETE
        assert loop_thread_running(runner)
        assert runner.stats().submitted == 0
        assert await server.shutdown() == SHUTDOWN_COMPLETE


@pytest.mark.anyio
@both_loops
async def test_shutdown_drains_request_work_while_the_server_loop_keeps_running(
    make_runner: Callable[..., loopkeeper.Runner], log_events: EventLog
) -> None:
    """A task a request submitted finishes before the server gets ``shutdown.complete``,
    and the drain never blocks the server's loop: the task can only finish after a ticker
    on the server's loop has ticked five times *during* the drain (after loopkeeper logged
    ``shutdown_started``).  Under asyncio and trio alike."""
    runner = make_runner()
    gate = threading.Event()
    order: list[str] = []

    async def job() -> None:
        while not gate.is_set():
            await asyncio.sleep(0.005)
        order.append("job finished")

    handles: list[loopkeeper.TaskHandle[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("http only")
        handles.append(runner.submit(job, name="queued-by-request"))
        await respond(send)

    middleware = LifespanMiddleware(app, runner=runner)
    ticks_during_drain = 0

    async def ticker() -> None:
        nonlocal ticks_during_drain
        await log_events.wait_for("shutdown_started")
        with anyio.fail_after(DEADLINE):
            while ticks_during_drain < 5:
                await anyio.sleep(0.005)
                ticks_during_drain += 1
        gate.set()

    async with serving(middleware) as server:
        assert await server.startup() == STARTUP_COMPLETE
        sent = await http_get(middleware)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert not handles[0].done(), "the job ran before the drain"
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            reply = await server.shutdown()
            order.append(f"server got {reply['type']}")

    assert order == ["job finished", "server got lifespan.shutdown.complete"]
    assert ticks_during_drain == 5
    assert handles[0].state is loopkeeper.TaskState.SUCCEEDED
    assert server.replies == [STARTUP_COMPLETE, SHUTDOWN_COMPLETE]
    assert "shutdown_completed" in log_events.events(), "the report is logged"


@pytest.mark.anyio
async def test_runner_that_cannot_start_fails_startup_with_the_reason(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """A runner that cannot start (here: already shut down) gives the server one
    ``lifespan.startup.failed`` naming the runner and why; the app is never called."""
    runner = make_runner()
    runner.shutdown()
    called: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    async with serving(LifespanMiddleware(app, runner=runner)) as server:
        reply = await server.startup()
    assert reply["type"] == "lifespan.startup.failed"
    assert repr(runner.name) in reply["message"]
    assert "shut" in reply["message"].lower()
    assert server.replies == [reply]
    assert called == []


# -- inner apps that do not speak lifespan -------------------------------------------------


@pytest.mark.anyio
async def test_app_that_raises_on_lifespan_is_answered_for(
    make_runner: Callable[..., loopkeeper.Runner], log_events: EventLog
) -> None:
    """An app that raises on the lifespan scope (Django's ``ASGIHandler``) is answered for:
    one ``startup.complete``, one ``shutdown.complete`` after the drain, the middleware's
    call returns normally, and the exception is only a DEBUG line."""
    runner = make_runner()
    handle_box: list[loopkeeper.TaskHandle[str]] = []

    async def work() -> str:
        return "done"

    async with serving(LifespanMiddleware(django_like, runner=runner)) as server:
        assert await server.startup() == STARTUP_COMPLETE
        handle_box.append(runner.submit(work))
        assert await server.shutdown() == SHUTDOWN_COMPLETE
    assert server.replies == [STARTUP_COMPLETE, SHUTDOWN_COMPLETE]
    assert handle_box[0].result(timeout=0) == "done"
    unsupported = [r for r in log_events.records if "asgi_lifespan_unsupported" in r.getMessage()]
    assert [r.levelno for r in unsupported] == [logging.DEBUG]
    assert "Django can only handle" in unsupported[0].getMessage()
    assert not [
        r for r in log_events.records if r.levelno >= logging.WARNING and r.name == ASGI_LOGGER
    ]


async def returns_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    """Ignores lifespan without reading anything."""


async def reads_startup_then_returns(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the startup message, then returns without answering it."""
    await receive()


async def answers_startup_then_returns(scope: Scope, receive: Receive, send: Send) -> None:
    """Completes startup, then returns instead of waiting for shutdown."""
    await receive()
    await send({"type": "lifespan.startup.complete"})


async def reads_shutdown_then_returns(scope: Scope, receive: Receive, send: Send) -> None:
    """Completes startup, reads the shutdown message, returns without answering it."""
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "app",
    [
        returns_at_once,
        reads_startup_then_returns,
        answers_startup_then_returns,
        reads_shutdown_then_returns,
    ],
)
async def test_app_that_returns_without_answering_is_answered_for(
    make_runner: Callable[..., loopkeeper.Runner],
    log_events: EventLog,
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
) -> None:
    """Whenever an app returns leaving a lifespan message unanswered, the middleware
    answers it: the server gets exactly one reply to each message, and the drain still
    waits for in-flight work (released only once the drain has begun) before
    ``shutdown.complete``."""
    runner = make_runner()
    gate = threading.Event()

    async def job() -> None:
        await asyncio.to_thread(gate.wait, DEADLINE)

    async with serving(LifespanMiddleware(app, runner=runner)) as server:
        assert await server.startup() == STARTUP_COMPLETE
        handle = runner.submit(job, name="in-flight")
        replies: list[Message] = []

        async def shutdown() -> None:
            replies.append(await server.shutdown())

        async with anyio.create_task_group() as tg:
            tg.start_soon(shutdown)
            await log_events.wait_for("shutdown_started")
            assert replies == []
            gate.set()
    assert replies == [SHUTDOWN_COMPLETE]
    assert handle.state is loopkeeper.TaskState.SUCCEEDED
    assert server.replies == [STARTUP_COMPLETE, SHUTDOWN_COMPLETE]


@pytest.mark.anyio
async def test_app_that_crashes_holding_startup_is_answered_for_and_logged(
    make_runner: Callable[..., loopkeeper.Runner], log_events: EventLog
) -> None:
    """An app that raises after receiving ``lifespan.startup`` without answering means, per
    the ASGI spec, "lifespan unsupported", not "startup failed": the server gets
    ``startup.complete`` all the same, and the crash is a WARNING with its traceback."""

    async def crashes(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("boom in startup")

    async with serving(LifespanMiddleware(crashes, runner=make_runner())) as server:
        assert await server.startup() == STARTUP_COMPLETE
        assert await server.shutdown() == SHUTDOWN_COMPLETE
    assert server.replies == [STARTUP_COMPLETE, SHUTDOWN_COMPLETE]
    warnings = [
        r for r in log_events.records if r.levelno >= logging.WARNING and r.name == ASGI_LOGGER
    ]
    assert len(warnings) == 1
    assert "asgi_lifespan_app_failed" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None
    assert str(warnings[0].exc_info[1]) == "boom in startup"


# -- inner apps that speak lifespan --------------------------------------------------------


@pytest.mark.anyio
async def test_app_speaking_lifespan_gets_both_messages_and_its_shutdown_work_is_drained(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """A Starlette-like app gets its own startup (the runner already running) and
    shutdown; its shutdown runs before the drain, so work it submits while shutting down
    is drained too; each of its replies reaches the server exactly once."""
    runner = make_runner()
    events: list[str] = []
    handles: list[loopkeeper.TaskHandle[None]] = []

    async def flush() -> None:
        await asyncio.sleep(0.05)
        events.append("flush finished")

    app = StarletteLike(runner, events, on_shutdown=lambda: handles.append(runner.submit(flush)))
    async with serving(LifespanMiddleware(app, runner=runner)) as server:
        assert await server.startup() == STARTUP_COMPLETE
        assert events == ["app startup, loop running: True"]
        reply = await server.shutdown()
        events.append(f"server got {reply['type']}")
    assert events == [
        "app startup, loop running: True",
        "app shutdown",
        "flush finished",
        "server got lifespan.shutdown.complete",
    ]
    assert handles[0].state is loopkeeper.TaskState.SUCCEEDED
    assert server.replies == [STARTUP_COMPLETE, SHUTDOWN_COMPLETE]


@pytest.mark.anyio
async def test_app_startup_failed_reaches_the_server_unchanged(
    make_runner: Callable[..., loopkeeper.Runner], log_events: EventLog
) -> None:
    """The app's ``lifespan.startup.failed`` reaches the server as the very message the
    app sent, message included, once; the app then re-raising (as Starlette does) is not
    an error of the middleware's call, and nothing more is sent."""
    failed = {"type": "lifespan.startup.failed", "message": "database unreachable"}

    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            raise ConnectionError("database unreachable")
        except ConnectionError:
            await send(failed)
            raise

    async with serving(LifespanMiddleware(fails, runner=make_runner())) as server:
        reply = await server.startup()
        await server.wait_returned()
    assert reply is failed
    assert reply == {"type": "lifespan.startup.failed", "message": "database unreachable"}
    assert server.replies == [failed]
    assert not [
        r for r in log_events.records if r.levelno >= logging.WARNING and r.name == ASGI_LOGGER
    ]


@pytest.mark.anyio
async def test_app_shutdown_failed_reaches_the_server_unchanged_after_the_drain(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """An app's own ``lifespan.shutdown.failed`` is forwarded unchanged, after the drain."""
    runner = make_runner()
    failed = {"type": "lifespan.shutdown.failed", "message": "could not close the pool"}
    order: list[str] = []

    async def work() -> None:
        await asyncio.sleep(0.05)
        order.append("work finished")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        runner.submit(work)
        await send(failed)

    async with serving(LifespanMiddleware(app, runner=runner)) as server:
        assert await server.startup() == STARTUP_COMPLETE
        reply = await server.shutdown()
        order.append("server got reply")
    assert reply is failed
    assert order == ["work finished", "server got reply"]
    assert server.replies == [STARTUP_COMPLETE, failed]


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["wrapped", "add_middleware"])
async def test_real_starlette_app_lifespan_runs_inside_the_middleware(
    make_runner: Callable[..., loopkeeper.Runner], how: str
) -> None:
    """With real Starlette (wrapped, or added with ``add_middleware``): both startups,
    Starlette's shutdown before the drain, and work submitted in Starlette's shutdown is
    drained before the server gets ``shutdown.complete``."""
    _require("starlette")
    from starlette.applications import Starlette  # noqa: PLC0415  optional: skipped if missing

    runner = make_runner()
    events: list[str] = []

    async def flush() -> None:
        await asyncio.sleep(0.05)
        events.append("flush finished")

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        events.append(f"app startup, loop running: {loop_thread_running(runner)}")
        yield
        events.append("app shutdown")
        runner.submit(flush)

    app = Starlette(lifespan=lifespan)
    asgi: Callable[[Scope, Receive, Send], Awaitable[None]]
    if how == "wrapped":
        asgi = LifespanMiddleware(app, runner=runner)
    else:
        app.add_middleware(LifespanMiddleware, runner=runner)
        asgi = app
    async with serving(asgi) as server:
        assert await server.startup() == STARTUP_COMPLETE
        reply = await server.shutdown()
        events.append(f"server got {reply['type']}")
    assert events == [
        "app startup, loop running: True",
        "app shutdown",
        "flush finished",
        "server got lifespan.shutdown.complete",
    ]
    assert server.replies == [STARTUP_COMPLETE, SHUTDOWN_COMPLETE]


@pytest.mark.anyio
async def test_real_starlette_startup_failure_reaches_the_server_unchanged(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """Starlette turns an exception in its lifespan into ``lifespan.startup.failed`` with
    the traceback as message, then re-raises: the server gets that message, once."""
    _require("starlette")
    from starlette.applications import Starlette  # noqa: PLC0415  optional: skipped if missing

    async def connect() -> None:
        raise ConnectionError("database unreachable")

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        await connect()
        yield

    async with serving(
        LifespanMiddleware(Starlette(lifespan=lifespan), runner=make_runner())
    ) as server:
        reply = await server.startup()
        await server.wait_returned()
    assert reply["type"] == "lifespan.startup.failed"
    assert "ConnectionError: database unreachable" in reply["message"]
    assert server.replies == [reply]


# -- the drain's verdict ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_drain_that_had_to_cancel_work_replies_shutdown_failed_with_the_report(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """Work that outlives ``shutdown_timeout`` is cancelled, and the server gets
    ``lifespan.shutdown.failed`` whose message is the report: the lost work is named.  The
    middleware's own ``shutdown_timeout`` overrides the runner's (30 s here): the reply
    comes within it plus loopkeeper's 1 s grace, with a generous allowance."""
    runner = make_runner(shutdown_timeout=30)
    never = threading.Event()

    async def endless() -> None:
        await asyncio.to_thread(never.wait, DEADLINE)  # cancellation stops the await

    async with serving(
        LifespanMiddleware(django_like, runner=runner, shutdown_timeout=0.2)
    ) as server:
        assert await server.startup() == STARTUP_COMPLETE
        handle = runner.submit(endless, name="endless-export")
        begun = anyio.current_time()
        reply = await server.shutdown()
        took = anyio.current_time() - begun
    never.set()
    assert reply["type"] == "lifespan.shutdown.failed"
    assert "did not drain cleanly" in reply["message"]
    assert "cancelled=1" in reply["message"]
    assert repr(runner.name) in reply["message"]
    assert handle.state is loopkeeper.TaskState.CANCELLED
    assert took < 0.2 + 1.0 + 8.0
    assert server.replies == [STARTUP_COMPLETE, reply]


@pytest.mark.anyio
async def test_drain_of_an_app_reply_that_had_to_cancel_work_turns_complete_into_failed(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """A Starlette-like app replies ``shutdown.complete``; if the drain after it had to
    cancel work, the server gets ``shutdown.failed`` with the report instead, once."""
    runner = make_runner()
    never = threading.Event()

    async def endless() -> None:
        await asyncio.to_thread(never.wait, DEADLINE)

    app = StarletteLike(runner, [], on_shutdown=lambda: runner.submit(endless, name="endless"))
    async with serving(LifespanMiddleware(app, runner=runner, shutdown_timeout=0)) as server:
        assert await server.startup() == STARTUP_COMPLETE
        reply = await server.shutdown()
    never.set()
    assert reply["type"] == "lifespan.shutdown.failed"
    assert "cancelled=1" in reply["message"]
    assert server.replies == [STARTUP_COMPLETE, reply]


# -- the server's own errors -----------------------------------------------------------------


class LifespanFailureError(Exception):
    """What hypercorn raises from its send when it gets a ``.failed`` reply."""


@pytest.mark.anyio
async def test_exception_from_the_servers_send_propagates_and_nothing_more_is_sent(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """hypercorn raises from ``send`` on a ``.failed`` reply and expects its exception back:
    it leaves the middleware unchanged (even through an app that re-raises), and the
    middleware sends nothing after it."""
    sent: list[Message] = []

    async def receive() -> Message:
        return dict(STARTUP)

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"].endswith(".failed"):
            raise LifespanFailureError(message.get("message", ""))

    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            raise ConnectionError("database unreachable")
        except ConnectionError:
            await send({"type": "lifespan.startup.failed", "message": "db"})
            raise

    middleware = LifespanMiddleware(fails, runner=make_runner())
    with pytest.raises(LifespanFailureError, match="db"):
        await middleware({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.failed", "message": "db"}]


class ServerGone(Exception):
    """A server's receive failing (its connection to the app is gone)."""


async def swallows_server_errors(scope: Scope, receive: Receive, send: Send) -> None:
    """Speaks lifespan, but returns quietly when the server's receive fails."""
    await receive()
    await send({"type": "lifespan.startup.complete"})
    with contextlib.suppress(ServerGone):
        await receive()


@pytest.mark.anyio
@pytest.mark.parametrize("app", [django_like, swallows_server_errors])
async def test_exception_from_the_servers_receive_ends_the_exchange(
    make_runner: Callable[..., loopkeeper.Runner],
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
) -> None:
    """If the server's receive raises, the middleware answers nothing more: the exception
    leaves the middleware (whether the middleware or the app was receiving), unless the
    app itself chose to swallow it and return."""
    messages = [dict(STARTUP)]
    sent: list[Message] = []

    async def receive() -> Message:
        if messages:
            return messages.pop()
        raise ServerGone

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = LifespanMiddleware(app, runner=make_runner())
    if app is django_like:
        with pytest.raises(ServerGone):
            await middleware({"type": "lifespan"}, receive, send)
    else:
        await middleware({"type": "lifespan"}, receive, send)
    assert sent == [STARTUP_COMPLETE]


@pytest.mark.anyio
async def test_messages_the_middleware_does_not_owe_reach_the_server_unchanged(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """What the app sends that answers nothing the server asked (an extension's event, a
    second reply to the same message) is forwarded as is, for the server to judge as it
    would without the middleware; the middleware's own bookkeeping is not confused."""
    extension = {"type": "lifespan.extension.event", "data": 1}
    duplicate = {"type": "lifespan.startup.complete"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(extension)
        await send({"type": "lifespan.startup.complete"})
        await send(duplicate)
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async with serving(LifespanMiddleware(app, runner=make_runner())) as server:
        assert await server.startup() is extension
        assert await server.reply() == STARTUP_COMPLETE
        assert await server.reply() is duplicate
        assert await server.shutdown() == SHUTDOWN_COMPLETE
    assert len(server.replies) == 4


@pytest.mark.anyio
async def test_drain_that_raises_is_told_to_the_server_as_shutdown_failed(
    make_runner: Callable[..., loopkeeper.Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the drain itself raises (``ashutdown`` refuses, e.g. in a forked child), the
    server gets ``lifespan.shutdown.failed`` naming the runner and the error, and the
    middleware's call returns normally."""
    runner = make_runner()

    async def refuses(timeout: float | None = None) -> loopkeeper.ShutdownReport:
        raise RuntimeError("runner made in another process")

    monkeypatch.setattr(runner, "ashutdown", refuses)
    async with serving(LifespanMiddleware(django_like, runner=runner)) as server:
        assert await server.startup() == STARTUP_COMPLETE
        reply = await server.shutdown()
    assert reply["type"] == "lifespan.shutdown.failed"
    assert repr(runner.name) in reply["message"]
    assert "runner made in another process" in reply["message"]


# -- async views -----------------------------------------------------------------------------


@pytest.mark.anyio
@both_loops
async def test_async_view_awaits_a_task_without_blocking_the_server_loop(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """An async endpoint may ``await runner.submit(...)``: the server's loop stays free
    while it waits.  The task can only finish after a ticker on the server's loop has
    ticked five times during the wait, so a blocking wait would never return."""
    runner = make_runner()
    gate = threading.Event()
    ticks = 0

    async def build_report() -> str:
        if not await asyncio.to_thread(gate.wait, DEADLINE):
            raise TimeoutError("the server's loop never ticked: the wait blocked it")
        return "report ready"

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("http only")
        await respond(send, (await runner.submit(build_report)).encode())

    async def ticker() -> None:
        nonlocal ticks
        with anyio.fail_after(DEADLINE):
            while ticks < 5:
                await anyio.sleep(0.005)
                ticks += 1
        gate.set()

    middleware = LifespanMiddleware(endpoint, runner=runner)
    async with serving(middleware) as server:
        assert await server.startup() == STARTUP_COMPLETE
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            sent = await http_get(middleware)
        assert await server.shutdown() == SHUTDOWN_COMPLETE
    assert sent[1]["body"] == b"report ready"
    assert ticks == 5


# -- other scopes ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_other_scopes_pass_through_untouched(
    make_runner: Callable[..., loopkeeper.Runner], kind: str
) -> None:
    """``http`` and ``websocket`` scopes reach the app as the very same scope, receive and
    send objects; the app's exception comes back unchanged; no runner is started."""
    runner = make_runner()
    seen: list[tuple[object, object, object]] = []
    problem = KeyError("from the app")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))
        raise problem

    async def receive() -> Message:
        raise AssertionError("the middleware must not call receive")

    async def send(message: Message) -> None:
        raise AssertionError("the middleware must not call send")

    scope: Scope = {"type": kind, "path": "/"}
    with pytest.raises(KeyError) as caught:
        await LifespanMiddleware(app, runner=runner)(scope, receive, send)
    assert caught.value is problem
    assert seen == [(scope, receive, send)]
    assert seen[0][0] is scope
    assert seen[0][1] is receive
    assert seen[0][2] is send
    assert scope == {"type": kind, "path": "/"}
    assert not loop_thread_running(runner)


@pytest.mark.anyio
async def test_lifespan_that_does_not_begin_with_startup_is_left_to_the_app(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """A server that breaks the spec (no ``lifespan.startup`` first) is none of the
    middleware's business: the app gets the message and answers alone."""
    got: list[Message] = []
    first = {"type": "lifespan.something"}

    async def receive() -> Message:
        return first

    async def send(message: Message) -> None:
        got.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "echo", "of": await receive()})

    runner = make_runner()
    await LifespanMiddleware(app, runner=runner)({"type": "lifespan"}, receive, send)
    assert got == [{"type": "echo", "of": first}]
    assert not loop_thread_running(runner)


# -- construction ----------------------------------------------------------------------------


def test_shutdown_timeout_takes_what_the_core_takes() -> None:
    """``inf`` (wait as long as it takes) and None, as ``Runner.shutdown()`` does."""
    assert LifespanMiddleware(django_like, shutdown_timeout=float("inf")).shutdown_timeout == (
        float("inf")
    )
    assert LifespanMiddleware(django_like).shutdown_timeout is None


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"shutdown_timeout": -1}, ValueError, "shutdown_timeout"),
        ({"shutdown_timeout": float("nan")}, ValueError, "shutdown_timeout"),
        ({"shutdown_timeout": "10"}, TypeError, "shutdown_timeout"),
        ({"shutdown_timeout": True}, TypeError, "shutdown_timeout"),
        ({"runner": "loopkeeper"}, TypeError, "runner"),
    ],
)
def test_bad_options_are_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    """Bad options raise at construction, naming the option and what it got."""
    with pytest.raises(error, match=needle):
        LifespanMiddleware(django_like, **kwargs)


@pytest.mark.anyio
async def test_lifespan_lines_go_through_structlog_when_it_is_configured(
    make_runner: Callable[..., loopkeeper.Runner],
) -> None:
    """Like the core's, the middleware's log lines go through structlog once the
    application configured it."""
    from structlog.testing import capture_logs  # noqa: PLC0415  only this test needs it

    structlog.reset_defaults()
    try:
        with capture_logs() as logs:
            async with serving(LifespanMiddleware(django_like, runner=make_runner())) as server:
                assert await server.startup() == STARTUP_COMPLETE
                assert await server.shutdown() == SHUTDOWN_COMPLETE
    finally:
        structlog.reset_defaults()
    unsupported = [e for e in logs if e["event"] == "asgi_lifespan_unsupported"]
    assert len(unsupported) == 1
    assert "Django can only handle" in unsupported[0]["error"]


def test_app_must_be_callable() -> None:
    """Wrapping something that is not an app fails at once, not at the first request."""
    with pytest.raises(TypeError, match="app: expected an ASGI application"):
        LifespanMiddleware("myproject.asgi:application")  # type: ignore[arg-type]


def test_repr_names_the_runner_and_the_app(make_runner: Callable[..., loopkeeper.Runner]) -> None:
    """The repr says which runner and which app; construction starts nothing."""
    assert repr(LifespanMiddleware(django_like)).startswith(
        "<LifespanMiddleware default runner app="
    )
    runner = make_runner()
    middleware = LifespanMiddleware(django_like, runner=runner, shutdown_timeout=3)
    assert f"runner={runner.name!r}" in repr(middleware)
    assert middleware.shutdown_timeout == 3.0
    assert not loop_thread_running(runner)


# -- the default runner ----------------------------------------------------------------------

DEFAULT_RUNNER_SCRIPT: Final = """
import asyncio, json, threading
import loopkeeper
from loopkeeper.contrib.asgi import LifespanMiddleware

async def app(scope, receive, send):
    raise ValueError("http only")

middleware = LifespanMiddleware(app)  # runner=None: looked up at startup, not here
loopkeeper.configure(name="configured-after-construction", shutdown_timeout=5)

async def main():
    inbox = asyncio.Queue()
    replies = []
    async def send(message):
        replies.append(message)
    await inbox.put({"type": "lifespan.startup"})
    done = []
    async def job():
        await asyncio.sleep(0.05)
        done.append(True)
    task = asyncio.ensure_future(middleware({"type": "lifespan"}, inbox.get, send))
    while not replies:
        await asyncio.sleep(0.001)
    threads = sorted(t.name for t in threading.enumerate())
    loopkeeper.submit(job)
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 20)
    print(json.dumps({"replies": replies, "threads": threads, "done": done,
                      "closed": repr(loopkeeper.get_runner())}))

asyncio.run(main())
"""


def test_default_runner_is_looked_up_at_startup(tmp_path: Path) -> None:
    """``runner=None`` uses the process's default runner as it is at startup: options
    configured after the middleware was made apply, its loop thread runs by
    ``startup.complete``, and the shutdown drains it.  In a child interpreter, because the
    default runner is process-global."""
    script = tmp_path / "default_runner.py"
    script.write_text(textwrap.dedent(DEFAULT_RUNNER_SCRIPT))
    result = _run_child(script)
    assert result["replies"] == [STARTUP_COMPLETE, SHUTDOWN_COMPLETE]
    assert "configured-after-construction" in result["threads"]
    assert result["done"] == [True]
    assert result["closed"] == "<Runner name='configured-after-construction' closed>"


DJANGO_SCRIPT: Final = """
import asyncio, json, threading
import django
from django.conf import settings

settings.configure(
    ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="test", INSTALLED_APPS=[], MIDDLEWARE=[]
)
django.setup()

from django.core.asgi import get_asgi_application
from django.http import HttpResponse
from django.urls import path

import loopkeeper
from loopkeeper.contrib.asgi import LifespanMiddleware

done = []


async def send_mail():
    await asyncio.sleep(0.05)
    done.append("mail sent")


def signup(request):  # a plain sync view
    loopkeeper.submit(send_mail, name="welcome-mail")
    return HttpResponse("welcome!")


urlpatterns = [path("signup", signup)]
application = LifespanMiddleware(get_asgi_application())  # the README's asgi.py line


async def main():
    inbox, replies = asyncio.Queue(), []

    async def send(message):
        replies.append(message)

    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(application({"type": "lifespan"}, inbox.get, send))
    while not replies:
        await asyncio.sleep(0.001)
    running = [t.name for t in threading.enumerate() if t.name == "loopkeeper"]

    response = []
    async def http_send(message):
        response.append(message)
    body = [{"type": "http.request", "body": b"", "more_body": False}]
    async def http_receive():  # the body once, then nothing until Django stops listening
        if body:
            return body.pop()
        await asyncio.Event().wait()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/signup", "raw_path": b"/signup", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }
    await application(scope, http_receive, http_send)
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 20)
    print(json.dumps({
        "replies": replies, "running_at_startup": running, "done": done,
        "status": response[0]["status"], "body": response[1]["body"].decode(),
    }))

asyncio.run(main())
"""


def test_real_django_asgi_handler_is_answered_for(tmp_path: Path) -> None:
    """Django's real ``ASGIHandler`` (``get_asgi_application()``) raises on the lifespan
    scope; wrapped as the README says, the server gets ``startup.complete`` (loopkeeper
    running by then) and, after the drain of the work a sync view queued,
    ``shutdown.complete``.  In a child interpreter: Django's settings are process-global."""
    _require("django")
    script = tmp_path / "django_asgi.py"
    script.write_text(textwrap.dedent(DJANGO_SCRIPT))
    result = _run_child(script)
    assert result["replies"] == [STARTUP_COMPLETE, SHUTDOWN_COMPLETE]
    assert result["running_at_startup"] == ["loopkeeper"]
    assert (result["status"], result["body"]) == (200, "welcome!")
    assert result["done"] == ["mail sent"]


def _run_child(script: Path) -> Any:
    """Run ``script`` with this checkout's loopkeeper; return the JSON it printed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _require(module: str) -> Any:
    """Import an optional test dependency; skip with a reason if missing (fail on CI)."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{module} is not installed (pip install {module}); CI requires it")
