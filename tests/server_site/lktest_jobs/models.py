from __future__ import annotations

from django.db import models


class Row(models.Model):
    """One finished job: which, in which process, and whether loopkeeper was draining."""

    key: models.CharField[str, str] = models.CharField(max_length=100, unique=True)
    pid: models.IntegerField[int, int] = models.IntegerField()
    during_drain: models.BooleanField[bool, bool] = models.BooleanField()
