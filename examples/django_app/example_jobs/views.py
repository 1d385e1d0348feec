"""A sync view that queues work with loopkeeper and answers at once, and a page that
lists the jobs as they finish."""

from __future__ import annotations

import secrets
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

import loopkeeper

from .jobs import build_report, fetch_prices
from .models import Job
from .tasks import send_digest


def _stats() -> dict[str, Any]:
    stats = loopkeeper.get_runner().stats()
    return {name: getattr(stats, name) for name in stats.__dataclass_fields__}


def index(request: HttpRequest) -> HttpResponse:
    """The jobs of the last batches, their states, and the runner's stats; the page
    refreshes itself every second."""
    return render(
        request,
        "example_jobs/index.html",
        {
            "jobs": Job.objects.all()[:30],
            "stats": _stats(),
        },
    )


@require_POST
def queue(request: HttpRequest) -> HttpResponse:
    """Queue three jobs, then answer: an ``async def`` and a blocking function submitted
    to loopkeeper, and a ``@task`` enqueued through Django's Tasks framework.  They all
    finish after the response."""
    batch = secrets.token_hex(4)
    job = Job.objects.create(batch=batch, kind="async")
    loopkeeper.submit(fetch_prices, job.id, name=f"fetch-prices-{job.id}")
    job = Job.objects.create(batch=batch, kind="blocking")
    loopkeeper.submit(build_report, job.id, name=f"build-report-{job.id}")
    job = Job.objects.create(batch=batch, kind="task")
    send_digest.enqueue(job.id)  # Django's Tasks framework, run by loopkeeper's backend
    Job.objects.filter(batch=batch).update(responded_at=timezone.now())
    if request.headers.get("Accept") == "application/json":
        return JsonResponse({"batch": batch})
    return redirect("index")


def jobs_json(request: HttpRequest) -> JsonResponse:
    """The jobs of one batch (``?batch=``) as JSON, for ``check.py``."""
    jobs = Job.objects.filter(batch=request.GET.get("batch", ""))
    return JsonResponse(
        {
            "jobs": [
                {
                    "kind": job.kind,
                    "state": job.state,
                    "responded_at": job.responded_at and job.responded_at.isoformat(),  # type: ignore[attr-defined]
                    "finished_at": job.finished_at and job.finished_at.isoformat(),  # type: ignore[attr-defined]
                }
                for job in jobs
            ],
            "stats": _stats(),
        }
    )
