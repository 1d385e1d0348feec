"""Waking somebody who waits for a task, from whichever thread settles it.

A waiter is a zero-argument callable that the settling thread calls once, never
blocking.  Three kinds: a blocked thread (``threading.Event``), a coroutine on any
asyncio loop (``call_soon_threadsafe`` on that loop), and a coroutine under trio
(``TrioToken.run_sync_soon``).  trio is imported only when the caller is already
running under it.  A waiter whose loop has closed meanwhile is dropped silently:
nobody is left to wake.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ("Wake", "wait_until_woken")

Wake = Callable[[], None]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_until_woken(
    register: Callable[[Wake], bool], unregister: Callable[[Wake], None]
) -> None:
    """Wait on the running loop until ``register``'s waker is called.

    ``register(wake)`` stores ``wake`` and returns True, or returns False when there is
    nothing to wait for (the outcome is already known).  If the waiting coroutine is
    cancelled, ``unregister(wake)`` removes the waker; the awaited work goes on.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        await _wait_trio(register, unregister)
        return
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, future)

    if not register(wake):
        return
    try:
        await future
    finally:
        unregister(wake)


async def _wait_trio(register: Callable[[Wake], bool], unregister: Callable[[Wake], None]) -> None:
    trio: Any = sys.modules.get("trio")
    if trio is None or not trio.lowlevel.in_trio_run():
        raise RuntimeError(
            "awaiting a loopkeeper handle needs a running asyncio or trio event loop; "
            "from a plain thread call handle.result() instead"
        )
    event = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake() -> None:
        with contextlib.suppress(trio.RunFinishedError):  # that run is over: nobody waits
            token.run_sync_soon(event.set)

    if not register(wake):
        return
    try:
        await event.wait()
    finally:
        unregister(wake)
