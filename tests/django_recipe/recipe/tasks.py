"""Background work that uses the ORM: one sync task, one async task."""

from __future__ import annotations

from .models import Mail, Signup


def send_welcome_mail(signup_id: int) -> None:
    """A sync task: runs in a loopkeeper worker thread (or, eager, in the caller's)."""
    signup = Signup.objects.get(pk=signup_id)
    Mail.objects.create(to=signup.email, kind="welcome")


async def send_receipt(signup_id: int) -> None:
    """An async task: the ORM through Django's async methods (thread-sensitive)."""
    signup = await Signup.objects.aget(pk=signup_id)
    await Mail.objects.acreate(to=signup.email, kind="receipt")


def signup_exists(signup_id: int) -> bool:
    """A sync task that only reads."""
    return bool(Signup.objects.filter(pk=signup_id).exists())
