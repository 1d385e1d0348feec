"""The jobs a request queues: a sync one (a worker thread, ORM write) and an async one
(``asyncio.sleep``, then the ORM through ``sync_to_async``).

Each first waits for its ack file (``LK_TEST_DIR/ack-<key>``), which the test creates
only after it has checked that the row is absent: so "the job was not done when the
response arrived" is a fact, not a race.  Then it waits until loopkeeper's drain has
begun (at most ``DRAIN_WAIT`` seconds), then ``after`` seconds more, and writes its row,
recording whether the drain was under way.  A job can only finish during a drain if
the drain waits for it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings

import loopkeeper

from .drain import DRAIN_BEGAN
from .models import Row

DRAIN_WAIT = 20.0  # seconds a job waits for the drain before it writes anyway
ACK_WAIT = 30.0  # seconds a job waits for its ack


def _ack(key: str) -> Path:
    return Path(settings.TEST_DIR) / f"ack-{key}"


def _write(key: str, during_drain: bool) -> None:
    Row.objects.create(key=key, pid=os.getpid(), during_drain=during_drain)


def sync_job(key: str, after: float) -> None:
    deadline = time.monotonic() + ACK_WAIT
    while not _ack(key).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    during = DRAIN_BEGAN.wait(DRAIN_WAIT)
    time.sleep(after)
    _write(f"sync-{key}", during)


async def async_job(key: str, after: float) -> None:
    deadline = time.monotonic() + ACK_WAIT
    while not _ack(key).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    deadline = time.monotonic() + DRAIN_WAIT
    while not DRAIN_BEGAN.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(after)
    await sync_to_async(_write)(f"async-{key}", DRAIN_BEGAN.is_set())


def queue(key: str, after: float) -> None:
    loopkeeper.submit(sync_job, key, after, name=f"sync-{key}")
    loopkeeper.submit(async_job, key, after, name=f"async-{key}")


async def _touch_asgiref_thread() -> None:
    await sync_to_async(os.getpid)()  # starts asgiref's thread-sensitive thread here


async def _nothing() -> None:
    pass


def warm_up(asgiref: bool) -> None:
    """Use loopkeeper now (with ``asgiref``: asgiref's thread too), in whichever process
    loads the app."""
    job = _touch_asgiref_thread if asgiref else _nothing
    loopkeeper.submit(job, name="warm-up").result(timeout=30)
