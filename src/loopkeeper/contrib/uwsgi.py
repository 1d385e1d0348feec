"""uWSGI: drain loopkeeper in ``uwsgi.atexit``, before uWSGI finalizes Python.

uWSGI's Python plugin (``plugins/python/python_plugin.c``, ``uwsgi_python_atexit``)
runs at a worker's exit: unless the worker is busy with a request (or hijacked, or in
async mode), it calls ``uwsgi.atexit`` and then ``Py_Finalize()``, whose first step
runs Python's exit hooks, loopkeeper's drain among them.  A worker that is busy skips
both: uWSGI has no Python hook that runs then.  ``install()`` registers the drain as
``uwsgi.atexit`` (keeping any function already there, called after it), so the drain
runs first, before Python starts shutting down, and the log says which hook drained.
loopkeeper's Django app calls ``install()`` in ``ready()``; elsewhere, call it where
the WSGI application is loaded::

    import loopkeeper.contrib.uwsgi

    loopkeeper.contrib.uwsgi.install()

Run uWSGI with ``--enable-threads`` (loopkeeper logs ``uwsgi_threads_disabled`` at the
first submit without it).  Which stops drain (uWSGI 2.0):

* SIGINT, or SIGTERM with ``--die-on-term``: the master sends SIGINT to each worker; an
  idle worker drains, a worker busy with a request exits without any hook.  A worker is
  busy until it has closed the request, which is after the client has the response
  (Django's ``request_finished`` runs in between).
* A graceful stop (``--hook-master-start "unix_signal:15 gracefully_kill_them_all"``
  makes SIGTERM one) and a graceful reload (SIGHUP, ``--touch-reload``): each worker
  finishes its request, then exits through the hook and drains.  Keep
  ``--worker-reload-mercy`` (60 s by default) above ``shutdown_timeout`` + 1 s.

Workers are forked without Python's at-fork hooks; loopkeeper checks the pid on every
call, so each worker gets a fresh default runner all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._drain import drain

__all__ = ("install",)


class _Drain:
    """``uwsgi.atexit``: drain this process's default runner (a worker's, or the
    master's), then call the function that was there before."""

    def __init__(self, previous: Callable[[], Any] | None) -> None:
        self.previous = previous

    def __call__(self) -> None:
        drain("uwsgi atexit")
        if self.previous is not None:
            self.previous()


def install() -> bool:
    """Drain loopkeeper in ``uwsgi.atexit``.  Idempotent; any thread.

    Returns:
        False outside uWSGI (nothing done), True inside it.
    """
    try:
        import uwsgi  # noqa: PLC0415  exists only inside uWSGI
    except ImportError:
        return False
    previous = getattr(uwsgi, "atexit", None)
    if not isinstance(previous, _Drain):
        uwsgi.atexit = _Drain(previous)
    return True
