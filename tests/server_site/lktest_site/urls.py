from __future__ import annotations

from django.urls import path
from lktest_jobs import views

urlpatterns = [
    path("health", views.health),
    path("queue", views.queue),
]
