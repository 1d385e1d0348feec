"""A Starlette app whose requests queue work on loopkeeper, drained when the server stops.

::

    pip install loopkeeper-runner starlette uvicorn
    cd examples && uvicorn asgi_app:app
    curl -X POST http://127.0.0.1:8000/signup/42    # "welcome!" at once; the mail follows
    curl http://127.0.0.1:8000/report               # awaits a loopkeeper task, loop stays free
    # Ctrl-C: uvicorn sends lifespan.shutdown; the middleware waits for the mail to be
    # sent, then loopkeeper logs its report (shutdown_completed) and uvicorn exits.

FastAPI is the same: ``app = FastAPI(lifespan=lifespan)``, then
``app.add_middleware(LifespanMiddleware)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import loopkeeper
from loopkeeper.contrib.asgi import LifespanMiddleware

if TYPE_CHECKING:
    from starlette.requests import Request

# loopkeeper logs to the stdlib logger "loopkeeper"; uvicorn configures only its own
# loggers, so without a handler you would see loopkeeper's warnings but not its INFO lines.
logging.basicConfig(level=logging.INFO, format="%(levelname)-9s %(name)s: %(message)s")


async def send_welcome_mail(user_id: int) -> None:
    await asyncio.sleep(1.0)  # stands in for a call to a mail API
    print(f"mail sent to user {user_id}", flush=True)


async def build_report() -> str:
    await asyncio.sleep(0.1)  # work that must not be tied to this request's loop
    return "report ready\n"


async def signup(request: Request) -> PlainTextResponse:
    user_id = int(request.path_params["user_id"])
    loopkeeper.submit(send_welcome_mail, user_id, name="welcome-mail", timeout=30)
    return PlainTextResponse("welcome!\n")  # the mail is sent after the response


async def report(request: Request) -> PlainTextResponse:
    # Awaiting a handle waits without blocking the server's loop.
    return PlainTextResponse(await loopkeeper.submit(build_report, name="report"))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    # The app's own shutdown runs before loopkeeper's drain, so it may still queue work.
    loopkeeper.submit(asyncio.sleep, 0.1, name="flush-metrics")


app = LifespanMiddleware(
    Starlette(
        routes=[
            Route("/signup/{user_id:int}", signup, methods=["POST"]),
            Route("/report", report),
        ],
        lifespan=lifespan,
    ),
    shutdown_timeout=25,  # keep it below your server's graceful timeout
)
