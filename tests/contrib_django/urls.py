"""ROOT_URLCONF of the in-process Django tests: the app's URL patterns, as documented."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("loopkeeper/", include("loopkeeper.contrib.django.urls"))]
