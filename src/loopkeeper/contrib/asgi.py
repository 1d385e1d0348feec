"""ASGI lifespan middleware: start loopkeeper with the server, drain it before the server exits.

::

    from loopkeeper.contrib.asgi import LifespanMiddleware

    application = LifespanMiddleware(get_asgi_application())  # Django's asgi.py
    app = LifespanMiddleware(Starlette(routes=routes, lifespan=lifespan))  # Starlette, FastAPI

Some ASGI servers never run Python's exit hooks (uvicorn re-raises SIGTERM after its own
shutdown and dies of it; granian's forked workers end with ``os._exit``, which skips plain
``atexit`` hooks), so loopkeeper's exit drain cannot be relied on everywhere.  The ASGI
lifespan protocol is the one shutdown hook they all share.  The README's "Deployment"
table says what each server runs at exit.

What the middleware does with each scope:

- ``http`` and ``websocket`` (anything but ``lifespan``): passed to the app untouched, the
  same scope, receive and send objects; the cost is one dictionary look-up.
- ``lifespan.startup``: the runner starts at once (``Runner.start()``), so the first
  request does not pay for it, and only then does the app get the message, so its own
  startup code may submit work.  ``runner=None`` means ``loopkeeper.get_runner()``
  looked up here, at startup, not when the middleware was made: ``configure()`` may come
  later, and a worker forked after the import gets its own runner.  If the runner
  cannot start (it was shut down, or an explicit ``Runner`` was made before a fork), the
  server gets ``lifespan.startup.failed`` saying why, and the app is not called.
- The app's replies (``lifespan.startup.complete`` or ``.failed``) reach the server
  unchanged, message included.
- ``lifespan.shutdown``: the app gets it first.  When the app has answered (its own
  shutdown is over, and it may have submitted work meanwhile), the runner is drained
  with ``await runner.ashutdown(shutdown_timeout)``, which waits on another thread
  while the server's loop keeps running, and logs its report (``shutdown_completed``,
  or ``shutdown_incomplete`` naming what was left).  Only then does the server get the
  reply.

Which reply after the drain (decided here, not by the ASGI spec): if the drain was clean,
the app's own reply goes to the server unchanged.  If the runner had to cancel or abandon
work (``ShutdownReport.clean`` is false), the server gets ``lifespan.shutdown.failed``
whose ``message`` is the report: the spec defines that reply as "failed to shut down
cleanly", and lost work is exactly that, so the server's own log says so next to
loopkeeper's ``shutdown_incomplete`` warning.  Measured: uvicorn and granian log the
message at ERROR (uvicorn adds "Application shutdown failed. Exiting."); hypercorn's
asyncio worker raises it (a ``LifespanFailureError`` traceback), its trio worker says
nothing; all of them finish shutting down as usual.  An app that itself replied
``lifespan.shutdown.failed`` keeps its reply, unchanged; the report is still logged.

An app that does not speak lifespan is answered for: Django's ``ASGIHandler`` raises on
the scope, other apps return without answering.  Following the ASGI spec, an exception
from the app during lifespan means "lifespan not supported", not "startup failed": the
server gets exactly one reply to each lifespan message all the same (startup completes,
shutdown completes after the drain), and the middleware's own call returns normally.  An
app that wants to stop the server sends ``lifespan.startup.failed``, as Starlette does.
An exception raised before the app received anything (Django's case) or after the app's
own ``.failed`` reply (Starlette re-raises) is logged at DEBUG
(``asgi_lifespan_unsupported``); any other is logged at WARNING with its traceback
(``asgi_lifespan_app_failed``): the app began to speak lifespan, then crashed.
Exceptions raised by the *server's* receive or send (hypercorn raises on a ``.failed``
reply) always propagate unchanged, and nothing more is sent after one.

Set the server's own graceful timeout for the lifespan shutdown above
``shutdown_timeout`` plus one second (the grace loopkeeper gives cancelled work).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, final

import loopkeeper

from ._core import check_optional_seconds, describe, log_to

__all__ = ("ASGIApp", "AnyASGIApp", "LifespanMiddleware", "Message", "Receive", "Scope", "Send")

Scope = MutableMapping[str, Any]
"""An ASGI connection scope (the same alias as Starlette's)."""
Message = MutableMapping[str, Any]
"""An ASGI event, in either direction."""
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application, typed as Starlette types it."""
AnyASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
"""An ASGI 3 application however it is typed: Starlette's mappings, asgiref's TypedDicts
(django-stubs types Django's ``ASGIHandler`` so), or not at all."""

_STARTUP: Final = "lifespan.startup"
_SHUTDOWN: Final = "lifespan.shutdown"
_REPLIES: Final = {
    "lifespan.startup.complete": _STARTUP,
    "lifespan.startup.failed": _STARTUP,
    "lifespan.shutdown.complete": _SHUTDOWN,
    "lifespan.shutdown.failed": _SHUTDOWN,
}  # each reply type, and the message it answers

# One line to ``loopkeeper.asgi``, written the way every loopkeeper logger writes.
_log: Final = functools.partial(log_to, "loopkeeper.asgi")


@final
class LifespanMiddleware:
    """Start a loopkeeper runner on ASGI ``lifespan.startup`` and drain it on shutdown.

    Wrap the outermost ASGI app, or add it as a Starlette/FastAPI middleware
    (``app.add_middleware(LifespanMiddleware)``); the module docstring describes each
    message.  Construct it anywhere; the server calls it on its own loop (asyncio or
    trio).  Nothing happens at construction: no runner is looked up or started.

    Args:
        app: the ASGI 3 application to wrap.
        runner: the runner to start and drain; None (the default): the process's
            default runner, ``loopkeeper.get_runner()``, looked up at startup.
        shutdown_timeout: seconds the drain waits for unfinished tasks before
            cancelling them; None (the default): the runner's own ``shutdown_timeout``.

    Raises:
        TypeError, ValueError: ``app`` is not callable, ``runner`` is not a
            ``loopkeeper.Runner``, or ``shutdown_timeout`` is not None or a number of
            seconds >= 0.

    Example::

        app = LifespanMiddleware(app, shutdown_timeout=25)  # uvicorn main:app
    """

    def __init__(
        self,
        app: AnyASGIApp,
        /,
        *,
        runner: loopkeeper.Runner | None = None,
        shutdown_timeout: float | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app: expected an ASGI application (a callable), got {describe(app)}")
        if runner is not None and not isinstance(runner, loopkeeper.Runner):
            raise TypeError(f"runner: expected a loopkeeper.Runner or None, got {describe(runner)}")
        self.app: Final = app
        self.runner: Final = runner
        self.shutdown_timeout: Final = check_optional_seconds(
            shutdown_timeout, param="shutdown_timeout"
        )

    def __repr__(self) -> str:
        runner = "default runner" if self.runner is None else f"runner={self.runner.name!r}"
        return f"<LifespanMiddleware {runner} app={self.app!r}>"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI entry point.  The server's loop only.

        Typed ``Any`` so that servers and frameworks typed either way (Starlette's
        ``Scope``/``Receive``/``Send`` or asgiref's TypedDicts) accept the middleware.
        """
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        return await self._lifespan(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first.get("type") != _STARTUP:  # not what the ASGI spec promises: stay out of it
            return await self.app(scope, _replay(first, receive), send)
        runner = self.runner
        try:
            if runner is None:
                runner = loopkeeper.get_runner()
            runner.start()
        except Exception as exc:  # noqa: BLE001  told to the server, which logs it and stops
            name = "the default runner" if runner is None else f"runner {runner.name!r}"
            await send(
                {
                    "type": "lifespan.startup.failed",
                    "message": f"loopkeeper: {name} could not start: {exc}",
                }
            )
            return None
        exchange = _Exchange(runner, self.shutdown_timeout, first, receive, send)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception as exc:
            if exchange.server_failed:  # the server's own error, or the app's reaction to it
                raise
            exchange.note_app_failure(exc, self.app)
        if exchange.server_failed:
            return None
        return await exchange.answer_the_rest()


@final
class _Exchange:
    """One lifespan scope between the server and the app: who holds which message.

    The server's loop only; the app's receive and send and the middleware run there,
    one at a time, so nothing here needs a lock.
    """

    def __init__(
        self,
        runner: loopkeeper.Runner,
        timeout: float | None,
        startup: Message,
        receive: Receive,
        send: Send,
    ) -> None:
        self._runner: Final = runner
        self._timeout: Final = timeout
        self._receive: Final = receive
        self._send: Final = send
        self._buffered: Message | None = startup  # received from the server, not yet by the app
        self._unanswered: set[str] = {_STARTUP}  # lifespan messages the server awaits replies to
        self._received_any = False  # the app called receive at least once
        self._startup_failed = False  # the app replied startup.failed: no shutdown will come
        self._app_failed = False  # the app itself replied startup.failed or shutdown.failed
        self._shutdown_received = False  # the server sent lifespan.shutdown
        self.server_failed = False  # the server's receive or send raised: send nothing more

    async def receive(self) -> Message:
        """The app's receive: the buffered startup first, then the server's messages."""
        self._received_any = True
        message = self._buffered
        if message is not None:
            self._buffered = None
            return message
        message = await self._from_server()
        if message.get("type") == _SHUTDOWN:
            self._shutdown_received = True
            self._unanswered.add(_SHUTDOWN)
        return message

    async def send(self, message: Message) -> None:
        """The app's send: replies pass through; a shutdown reply waits for the drain."""
        kind: object = message.get("type")
        answers = _REPLIES.get(kind) if isinstance(kind, str) else None
        if answers is None or answers not in self._unanswered:
            return await self._to_server(message)  # not a reply we owe: the server judges it
        self._unanswered.discard(answers)
        if kind == "lifespan.startup.failed":
            self._startup_failed = self._app_failed = True
        elif answers == _SHUTDOWN:
            self._app_failed = kind == "lifespan.shutdown.failed"
            failure = await self._drain()
            if failure is not None and kind == "lifespan.shutdown.complete":
                message = {"type": "lifespan.shutdown.failed", "message": failure}
        return await self._to_server(message)

    def note_app_failure(self, exc: Exception, app: object) -> None:
        """The app raised: per the ASGI spec it does not speak lifespan; we answer for it.

        Quiet (DEBUG) when that is all it means: it raised before receiving anything
        (Django), or after its own ``.failed`` reply (Starlette re-raises).  Otherwise it
        crashed half-way, which deserves a WARNING with the traceback.
        """
        if not self._received_any or self._app_failed:
            _log(logging.DEBUG, "asgi_lifespan_unsupported", app=repr(app), error=repr(exc))
            return
        _log(
            logging.WARNING,
            "asgi_lifespan_app_failed",
            app=repr(app),
            unanswered=sorted(self._unanswered),
            exc_info=exc,
        )

    async def answer_the_rest(self) -> None:
        """After the app returned or raised: reply to what it left unanswered."""
        if self._startup_failed:
            return  # the server stops without a shutdown message
        if _STARTUP in self._unanswered:
            self._unanswered.discard(_STARTUP)
            await self._to_server({"type": "lifespan.startup.complete"})
        if not self._shutdown_received:
            while (await self._from_server()).get("type") != _SHUTDOWN:
                pass  # the spec knows no other message: shutdown is the server's last word
            self._shutdown_received = True
            self._unanswered.add(_SHUTDOWN)
        if _SHUTDOWN in self._unanswered:
            self._unanswered.discard(_SHUTDOWN)
            failure = await self._drain()
            if failure is None:
                await self._to_server({"type": "lifespan.shutdown.complete"})
            else:
                await self._to_server({"type": "lifespan.shutdown.failed", "message": failure})

    async def _drain(self) -> str | None:
        """Shut the runner down without blocking this loop; None if it drained clean,
        else the text for ``lifespan.shutdown.failed``."""
        runner = self._runner
        try:
            report = await runner.ashutdown(self._timeout)
        except Exception as exc:  # noqa: BLE001  told to the server instead
            return f"loopkeeper: shutting down runner {runner.name!r} failed: {exc!r}"
        if report.clean:
            return None
        return f"loopkeeper: runner {runner.name!r} did not drain cleanly: {report!r}"

    async def _from_server(self) -> Message:
        try:
            return await self._receive()
        except BaseException:
            self.server_failed = True
            raise

    async def _to_server(self, message: Message) -> None:
        try:
            await self._send(message)
        except BaseException:
            self.server_failed = True
            raise


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive that returns ``first`` once, then the server's messages."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
