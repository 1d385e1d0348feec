"""A signup, and the mails its tasks send."""

from __future__ import annotations

from django.db import models


class Signup(models.Model):  # type: ignore[misc]  # Django ships no types
    email = models.CharField(max_length=100)


class Mail(models.Model):  # type: ignore[misc]
    to = models.CharField(max_length=100)
    kind = models.CharField(max_length=20)
