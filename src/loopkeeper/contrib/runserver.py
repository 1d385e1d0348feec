"""Django's ``runserver``: drain loopkeeper before the autoreloader restarts the server.

When a watched file changes, the autoreloader's child process sends Django's
``file_changed`` signal on its main thread, then exits (``sys.exit(3)``) so that its
parent starts a fresh child.  Left to the interpreter-exit hook, the drain would run
while the exiting child still accepts connections, and on Python 3.12.0-3.12.2 each of
them fails with a "can't create new thread at interpreter shutdown" traceback.
``connect()`` drains in a ``file_changed`` receiver instead, before the exit: the old
child keeps serving meanwhile (with the old code; a ``submit()`` there raises
``RunnerClosedError``), the drain's ``shutdown_started`` line names what it waits for,
and the exit hook later finds nothing left.  loopkeeper's Django app calls ``connect()``
in ``ready()``.

What the reloader does not allow, and so is documented rather than fixed:

* Ctrl-C with the autoreloader: the parent gives its child 0.25 s after the interrupt,
  then SIGKILL (Python's ``subprocess.run``).  The drain starts and its
  ``shutdown_started`` line names what will be lost; it cannot finish.
* SIGTERM to ``runserver --noreload``: Python's default action ends the process at once;
  no hook runs.  (With the autoreloader, Django turns SIGTERM into ``sys.exit(0)`` in the
  child, so SIGTERM to the child drains.)
"""

from __future__ import annotations

from typing import Any

from ._drain import drain

__all__ = ("connect",)

_UID = "loopkeeper.contrib.runserver"


def _on_file_changed(sender: Any, file_path: Any, **kwargs: Any) -> None:
    """The autoreloader's main thread, just before it exits to reload.  Returns None so
    the reload goes on."""
    drain("runserver reload")


def connect() -> None:
    """Drain loopkeeper when runserver's autoreloader is about to reload.  Idempotent."""
    from django.utils.autoreload import file_changed  # noqa: PLC0415  Django is optional

    file_changed.connect(_on_file_changed, dispatch_uid=_UID, weak=False)
