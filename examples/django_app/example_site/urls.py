from __future__ import annotations

from django.conf import settings
from django.urls import URLPattern, path
from django.utils.module_loading import import_string
from example_jobs import views

urlpatterns: list[URLPattern] = [
    path("", views.index, name="index"),
    path("queue", views.queue, name="queue"),
    path("jobs.json", views.jobs_json, name="jobs-json"),
]
if settings.HAS_LOOPKEEPER_APP:  # loopkeeper's health check: counts for anyone, names for staff
    status = import_string("loopkeeper.contrib.django.views.status")
    urlpatterns.append(path("loopkeeper/status", status, name="loopkeeper-status"))
