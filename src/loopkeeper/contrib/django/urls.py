"""URL patterns of the app: ``path("loopkeeper/", include("loopkeeper.contrib.django.urls"))``
serves the status view at ``loopkeeper/status/`` (URL name ``loopkeeper:status``)."""

from __future__ import annotations

from django.urls import path

from . import views

__all__ = ("app_name", "urlpatterns")

app_name = "loopkeeper"
urlpatterns = [path("status/", views.status, name="status")]
