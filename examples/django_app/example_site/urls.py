from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path
from example_jobs import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("queue", views.queue, name="queue"),
    path("jobs.json", views.jobs_json, name="jobs-json"),
    # loopkeeper's health check: counts for anyone, task names for staff
    path("loopkeeper/", include("loopkeeper.contrib.django.urls")),  # loopkeeper/status/
]
