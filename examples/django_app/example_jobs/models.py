from __future__ import annotations

from django.db import models


class Job(models.Model):
    """One piece of background work a request queued, and when it finished."""

    id: int  # the automatic primary key (typed for mypy; django-stubs runs without its plugin)

    batch: models.CharField[str, str] = models.CharField(max_length=32)
    kind: models.CharField[str, str] = models.CharField(max_length=20)
    queued_at: models.DateTimeField[object, object] = models.DateTimeField(auto_now_add=True)
    responded_at: models.DateTimeField[object, object] = models.DateTimeField(null=True)
    finished_at: models.DateTimeField[object, object] = models.DateTimeField(null=True)

    class Meta:
        ordering = ("-id",)

    @property
    def state(self) -> str:
        return "done" if self.finished_at else "running"
