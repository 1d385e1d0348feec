"""gunicorn: drain loopkeeper as each worker exits, and check that gunicorn waits long enough.

In ``gunicorn.conf.py``, one line::

    from loopkeeper.contrib.gunicorn import post_worker_init, worker_exit

``worker_exit`` drains the worker's default runner (its ``shutdown_timeout``, then the
1 s grace) on the worker's main thread, before the interpreter's own exit hooks, whether
the worker stops because the master got SIGTERM, because it reached ``--max-requests``,
or because it failed.  The exit hook would drain a plain ``sys.exit`` too; ``worker_exit``
also runs where that hook comes too late or not at all, and it says in the log which
hook drained.  ``post_worker_init`` logs ``gunicorn_timeout_too_short`` (a warning) when
the drain does not fit in what gunicorn allows:

* ``graceful_timeout``: how long the master waits for its workers after SIGTERM before
  it sends SIGKILL;
* ``timeout``: how long a worker may go silent before the master aborts it (SIGABRT, then
  SIGKILL).  A worker that exits on its own (``--max-requests``) sends no heartbeat while
  it drains, so this bounds its drain too.  0 turns it off.

Set both above ``SHUTDOWN_TIMEOUT`` + 1 s.  If gunicorn aborts the worker during the
drain anyway, its ``SystemExit`` ends the drain: the unfinished tasks are reported
abandoned (``shutdown_incomplete``, naming each) and the hook returns normally.

If your config already defines one of these hooks, call ours from it::

    from loopkeeper.contrib import gunicorn as loopkeeper_gunicorn

    def worker_exit(server, worker):
        ...  # yours
        loopkeeper_gunicorn.worker_exit(server, worker)
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ._drain import drain, log, needed_seconds

__all__ = ("post_worker_init", "worker_exit")


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook: warn when a drain would not fit in
    ``graceful_timeout`` or ``timeout``.  Starts nothing."""
    needed = needed_seconds()
    for setting in ("graceful_timeout", "timeout"):
        value = getattr(worker.cfg, setting)
        if setting == "timeout" and not value:
            continue  # no heartbeat timeout: nothing aborts a worker that drains
        if value < needed:
            log(
                logging.WARNING,
                "gunicorn_timeout_too_short",
                setting=setting,
                seconds=value,
                needed=needed,
                advice=f"set gunicorn's {setting} above loopkeeper's shutdown_timeout + 1 s",
            )


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit`` hook: drain the worker's default runner.  Never raises.

    gunicorn's master also calls it for a worker that was already gone: nothing to do
    there (the master's own runner, if any, drains at the master's exit).
    """
    if worker.pid != os.getpid():
        return
    drain("gunicorn worker_exit")
