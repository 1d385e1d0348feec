"""The Django tasks that ``django_enqueue`` enqueues, imported once Django is set up.

``django.tasks`` wants each task at module level, where ``@task`` leaves a ``Task`` under the
function's name (django-tasks-db imports it back by that path).  Both use the ``default``
backend, django-tasks-db's; ``django_enqueue`` picks the others with ``.using(backend=...)``.
The argument is what a view would pass: an id, JSON-serialisable for the database backend.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # django-stubs types django.tasks, whichever Django is installed
    from django.tasks import task
else:
    try:
        from django.tasks import task
    except ImportError:  # Django 5.2: the django-tasks backport
        from django_tasks import task


# Without django-stubs (mypy's override for django.*), `task` is untyped.
@task  # type: ignore[untyped-decorator,unused-ignore]
def send_welcome_mail(user_id: int) -> None:
    """A sync task: in a loopkeeper worker thread (nothing runs django-tasks-db's rows)."""


@task  # type: ignore[untyped-decorator,unused-ignore]
async def asend_welcome_mail(user_id: int) -> None:
    """The same as an async task: on loopkeeper's loop."""
