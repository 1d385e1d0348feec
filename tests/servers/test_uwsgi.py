"""uWSGI (the ``pyuwsgi`` wheel: uWSGI 2.0 built as a Python extension, the same server
as the ``uwsgi`` binary): work queued by requests is written before each worker exits.

The site's app config calls ``loopkeeper.contrib.uwsgi.install()``, so each worker
drains in ``uwsgi.atexit``.  The app is loaded in the master before uWSGI forks its
workers (no ``--lazy-apps``), and it runs a loopkeeper job while it loads: each worker
must still get a runner of its own, although uWSGI forks without Python's at-fork hooks.

A worker that SIGINT reaches while it is still closing a request (the client has the
whole response, but Django's ``request_finished`` and uWSGI's own bookkeeping run after
it) counts as busy: it exits without ``uwsgi.atexit``, and its jobs are lost.  That is
uWSGI's rule, and the module docstring of ``loopkeeper.contrib.uwsgi`` says so; so each
test stops the server only once the master reports every worker idle (``wait_idle``).

``pyuwsgi`` runs inside an interpreter that already has threads, so ``uwsgi.has_threads``
is always true there: the warning for a worker without ``--enable-threads`` is tested
with a stand-in ``uwsgi`` module in ``tests/test_server_hooks.py``.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._harness import START_DEADLINE, Served, require

if TYPE_CHECKING:
    from .conftest import Serve

KEYS = ["k0", "k1", "k2", "k3"]


def uwsgi(*args: str) -> list[str]:
    require("pyuwsgi")
    script = shutil.which("uwsgi", path=str(Path(sys.executable).parent)) or "uwsgi"
    return [
        script,
        "--master",
        "--enable-threads",
        "--processes",
        "2",
        "--http-socket",
        "127.0.0.1:{port}",
        "--module",
        "lktest_site.wsgi:application",
        "--stats",
        "{stats}",
        *args,
    ]


def worker_states(served: Served) -> list[str]:
    """Each worker's state as the master reports it on its stats socket: ``busy`` while
    the worker has a request open, the very test ``uwsgi.atexit`` is skipped on."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(served.stats))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return [str(worker["status"]) for worker in json.loads(b"".join(chunks))["workers"]]


def wait_idle(served: Served) -> None:
    """Wait until every worker has closed its last request: a SIGINT that reaches a
    worker still closing one (after the client has the response) skips its drain."""
    deadline = time.monotonic() + START_DEADLINE
    while (states := worker_states(served)) != ["idle"] * len(states):
        if time.monotonic() > deadline:
            pytest.fail(f"workers not idle after {START_DEADLINE}s: {states}\n{served.text()}")
        time.sleep(0.05)


STOPS = {
    "uwsgi-sigint": ((), signal.SIGINT),
    "uwsgi-die-on-term": (("--die-on-term",), signal.SIGTERM),
    "uwsgi-graceful": (
        ("--hook-master-start", "unix_signal:15 gracefully_kill_them_all"),
        signal.SIGTERM,
    ),
}


def test_idle_workers_drain_in_uwsgi_atexit_once_each(serve: Serve) -> None:
    """uWSGI ``--master --enable-threads --processes 2``, stopped while idle, three ways
    side by side: SIGINT, SIGTERM with ``--die-on-term``, and SIGTERM made a graceful stop
    (``gracefully_kill_them_all``).  Each worker drains in ``uwsgi.atexit``, once, and
    every row is written."""
    servers = {name: serve(uwsgi(*args), name=name) for name, (args, _) in STOPS.items()}
    for name, served in servers.items():
        served.wait_ready()
        for key in KEYS:
            served.queue(f"{name}-{key}")
    for served in servers.values():
        wait_idle(served)
    for name, served in servers.items():
        served.signal(STOPS[name][1])
    for name, served in servers.items():
        assert served.wait_exit() in (0, 30), served.text()  # 30: uWSGI's own exit code
        written = served.assert_all_written([f"{name}-{key}" for key in KEYS])
        text = served.text()
        assert "server_drain_started runner='loopkeeper' hook='uwsgi atexit'" in text, text
        workers = {
            pid for key, (pid, _) in written.items() if key.split("-", 1)[1].startswith(name)
        }
        assert text.count("shutdown_started") == len(workers), text  # one drain per worker
        assert "uwsgi_threads_disabled" not in text, text


def test_workers_forked_without_at_fork_hooks_get_a_runner_of_their_own(serve: Serve) -> None:
    """The app runs a loopkeeper job while it loads, in the master, before uWSGI forks its
    workers without Python's at-fork hooks: each worker still gets a runner of its own,
    runs its jobs and drains them (the rows carry the workers' pids, not the master's)."""
    served = serve(uwsgi(), name="uwsgi", LK_SUBMIT_AT_IMPORT="loop", LK_SHUTDOWN_TIMEOUT="3")
    served.wait_ready()
    for key in KEYS:
        served.queue(key)
    wait_idle(served)
    assert served.stop(signal.SIGINT) in (0, 30), served.text()
    written = served.assert_all_written(KEYS)
    assert served.process.pid not in {pid for pid, _ in written.values()}, written


def test_worker_reload_mercy_shorter_than_the_drain_kills_it_with_the_manifest_logged(
    serve: Serve,
) -> None:
    """The negative case: with ``--worker-reload-mercy 2`` the master SIGKILLs a worker
    still draining after 2 s.  The jobs are lost, and the drain's first line names them."""
    served = serve(uwsgi("--worker-reload-mercy", "2"), name="uwsgi")
    served.wait_ready()
    served.queue("lost", after=60)
    wait_idle(served)
    served.stop(signal.SIGINT)
    text = served.text()
    assert "shutdown_started runner='loopkeeper' unfinished=2" in text, text
    assert "'sync-lost'" in text, text
    assert "'async-lost'" in text, text
    assert served.rows() == {}
