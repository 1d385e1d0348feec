"""The background work a request queues.  Each job marks its ``Job`` row finished.

* ``fetch_prices``, an ``async def``: ``asyncio.sleep`` stands for an HTTP call (httpx,
  aiohttp), then the ORM through ``sync_to_async``.  It runs on loopkeeper's event loop.
* ``build_report``, plain blocking code: ``time.sleep`` stands for slow I/O, then the
  ORM directly.  It runs in one of loopkeeper's tracked worker threads.
"""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from django.utils import timezone

from .models import Job

WORK_SECONDS = 1.5  # how long each job pretends to work


def finish(job_id: int) -> None:
    Job.objects.filter(id=job_id).update(finished_at=timezone.now())


async def fetch_prices(job_id: int) -> None:
    await asyncio.sleep(WORK_SECONDS)
    await sync_to_async(finish)(job_id)


def build_report(job_id: int) -> None:
    time.sleep(WORK_SECONDS)
    finish(job_id)
