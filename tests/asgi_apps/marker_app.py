"""The ASGI app that ``test_asgi_servers.py`` runs under real servers.

``GET /health`` answers at once (the readiness probe).  ``GET /queue`` submits ``job`` with
``loopkeeper.submit()`` and answers at once.  The job waits until loopkeeper's drain has
begun (its ``shutdown_started`` warning), then 0.3 s more, then appends
``job <n> finished`` to the marker file: so it is still running when the server starts
to shut down, whatever the machine's speed, and it can only finish if the drain waits.

The inner app rejects the lifespan scope as Django's ``ASGIHandler`` does (the common
case); ``LifespanMiddleware`` answers for it.  Environment: ``LOOPKEEPER_TEST_MARKER``
(the marker file's path), ``LOOPKEEPER_TEST_MIDDLEWARE=0`` (serve without the
middleware, as a control), ``LOOPKEEPER_TEST_SHUTDOWN_TIMEOUT`` (the middleware's
``shutdown_timeout``; 0 makes the drain cancel the job).  loopkeeper logs to stderr at
INFO; every line this module prints starts with ``marker_app:``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import loopkeeper
from loopkeeper.contrib.asgi import LifespanMiddleware

MARKER = Path(os.environ.get("LOOPKEEPER_TEST_MARKER", "marker.txt"))
DRAIN_BEGAN = threading.Event()


def say(text: str) -> None:
    print(f"marker_app: {text} (pid {os.getpid()})", file=sys.stderr, flush=True)


class _DrainWatch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("shutdown_started"):
            DRAIN_BEGAN.set()


_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
_logger = logging.getLogger("loopkeeper")
_logger.addHandler(_handler)
_logger.addHandler(_DrainWatch())
_logger.setLevel(logging.INFO)
_logger.propagate = False  # some servers (daphne) configure the root logger too
# Tell which of Python's exit hooks this server runs.  threading's run first, newest first,
# so this line comes just before loopkeeper's exit drain; plain atexit hooks run later.
threading._register_atexit(say, "threading exit hooks running")  # type: ignore[attr-defined]
atexit.register(say, "atexit hooks running")

_jobs = 0


async def job(number: int) -> None:
    ready = await asyncio.to_thread(DRAIN_BEGAN.wait, 60)
    await asyncio.sleep(0.3)
    line = f"job {number} finished" if ready else f"job {number} gave up waiting for the drain"
    await asyncio.to_thread(_append, line)
    say(line)


def _append(line: str) -> None:
    with MARKER.open("a") as marker:
        marker.write(line + "\n")


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    global _jobs  # noqa: PLW0603  one counter per worker process
    if scope["type"] != "http":
        say(f"{scope['type']} scope received")
        raise ValueError(f"this app only serves http, not {scope['type']}")  # as Django does
    body = b"ok"
    if scope["path"] == "/queue":
        _jobs += 1
        loopkeeper.submit(job, _jobs, name=f"marker-job-{_jobs}")
        body = f"queued job {_jobs}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


app: Callable[[Any, Any, Any], Awaitable[None]] = inner
if os.environ.get("LOOPKEEPER_TEST_MIDDLEWARE", "1") != "0":
    timeout = os.environ.get("LOOPKEEPER_TEST_SHUTDOWN_TIMEOUT")
    app = LifespanMiddleware(inner, shutdown_timeout=float(timeout) if timeout else None)
say("app loaded")
