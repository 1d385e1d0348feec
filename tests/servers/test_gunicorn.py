"""gunicorn: work queued by requests is written before each worker exits.

gunicorn runs with the README's ``gunicorn.conf.py`` (``examples/django_app/``), whose
``worker_exit`` hook drains loopkeeper in each worker.  The site's jobs write their rows
only once the drain has begun (see ``_harness``), so a row proves the drain waited for it.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from ._harness import EXAMPLE, Served, python_m, require

if TYPE_CHECKING:
    from .conftest import Serve

CONF = str(EXAMPLE / "gunicorn.conf.py")


def gunicorn(*args: str) -> list[str]:
    require("gunicorn")
    return python_m("gunicorn", "-c", CONF, "--bind", "127.0.0.1:{port}", *args, "lktest_site.wsgi")


def _queue_on_every_worker(served: Served, workers: int) -> list[str]:
    """Queue jobs until each of ``workers`` worker processes has some."""
    keys: list[str] = []
    pids: set[int] = set()
    while len(pids) < workers:
        assert len(keys) < 50, f"requests never reached {workers} workers:\n{served.text()}"
        key = f"k{len(keys)}"
        pids.add(served.queue(key))
        keys.append(key)
    return keys


def test_sigterm_to_the_master_drains_every_worker_in_worker_exit(serve: Serve) -> None:
    """SIGTERM to gunicorn's master, sync workers (``--workers 2``) and gthread workers
    (``--threads 4``), two servers side by side: each worker's ``worker_exit`` drains its
    jobs once (one ``shutdown_started``, one ``shutdown_completed`` per worker that had
    work), and every row is written before gunicorn exits 0."""
    servers = [
        serve(gunicorn("--workers", "2"), name="gunicorn-sync"),
        serve(gunicorn("--worker-class", "gthread", "--threads", "4"), name="gunicorn-gthread"),
    ]
    keys = {id(served): [f"{served.output.stem}-k{n}" for n in range(4)] for served in servers}
    for served in servers:
        served.wait_ready()
        for key in keys[id(served)]:
            served.queue(key)
    for served in servers:
        served.signal(signal.SIGTERM)
    for served in servers:
        assert served.wait_exit() == 0, served.text()
        written = served.assert_all_written(keys[id(served)])
        text = served.text()
        workers = {pid for key, (pid, _) in written.items() if served.output.stem in key}
        hook = "server_drain_started runner='loopkeeper' hook='gunicorn worker_exit'"
        assert text.count(hook) == len(workers), text  # each worker with work drained once
        assert text.count("shutdown_started") == len(workers), text
        assert text.count("shutdown_completed") == len(workers), text
        assert "gunicorn_timeout_too_short" not in text, text


def test_max_requests_recycling_drains_the_old_worker_while_a_new_one_serves(
    serve: Serve,
) -> None:
    """A worker that reaches ``--max-requests`` with jobs in flight drains them in
    ``worker_exit`` before it exits; its replacement serves the next requests."""
    served = serve(gunicorn("--workers", "1", "--max-requests", "2"), name="gunicorn")
    served.wait_ready()
    first = served.queue("old")
    keys = ["old"]
    while True:  # the worker recycles after its second request (a retried probe counts too)
        key = f"next{len(keys)}"
        pid = served.queue(key)
        keys.append(key)
        if pid != first:
            break
        assert len(keys) < 5, served.text()
    hook = "server_drain_started runner='loopkeeper' hook='gunicorn worker_exit'"
    assert hook in served.text(), served.text()  # the old worker drained before it exited
    assert served.stop(signal.SIGTERM) == 0, served.text()
    written = served.assert_all_written(keys)
    assert written["sync-old"][0] == written["async-old"][0] == first


def test_preload_with_loopkeeper_used_at_import_still_runs_the_work_in_the_workers(
    serve: Serve,
) -> None:
    """``--preload`` with the app using loopkeeper (and asgiref's thread) while it loads,
    in the master: each worker still gets its own runner, its ``sync_to_async`` works,
    and its jobs are written by the worker that queued them."""
    served = serve(
        gunicorn("--preload", "--workers", "2"),
        name="gunicorn",
        LK_SUBMIT_AT_IMPORT="1",
        LK_SHUTDOWN_TIMEOUT="3",
    )
    served.wait_ready()
    keys = [f"k{n}" for n in range(4)]
    for key in keys:
        served.queue(key)
    master = served.process.pid
    assert served.stop(signal.SIGTERM) == 0, served.text()
    written = served.assert_all_written(keys)
    assert master not in {pid for pid, _ in written.values()}, written


def test_graceful_timeout_shorter_than_the_drain_is_warned_and_the_kill_leaves_the_manifest(
    serve: Serve,
) -> None:
    """With ``--graceful-timeout 2`` and a 10 s ``shutdown_timeout``, each worker warns at
    start; on SIGTERM the master SIGKILLs the draining worker after 2 s, and what is lost
    is named in the log by the drain's first line (``shutdown_started``)."""
    served = serve(gunicorn("--workers", "1", "--graceful-timeout", "2"), name="gunicorn")
    served.wait_ready()
    served.queue("lost", after=60)
    assert served.stop(signal.SIGTERM) == 0, served.text()
    text = served.text()
    assert "gunicorn_timeout_too_short setting='graceful_timeout' seconds=2" in text, text
    assert "shutdown_started runner='loopkeeper' unfinished=2" in text, text
    assert "'sync-lost'" in text, text
    assert "'async-lost'" in text, text
    assert served.rows() == {}


def test_heartbeat_timeout_aborting_a_recycling_drain_reports_the_jobs_abandoned(
    serve: Serve,
) -> None:
    """A worker recycling on ``--max-requests`` is bounded by ``--timeout``: gunicorn
    aborts it (SIGABRT, a ``SystemExit`` raised inside the drain).  The hook then reports
    the unfinished jobs abandoned, by name, and raises nothing (no traceback)."""
    served = serve(
        gunicorn("--workers", "1", "--max-requests", "2", "--timeout", "2"), name="gunicorn"
    )
    served.wait_ready()
    served.queue("cut", after=60)  # request 2: the worker recycles with the jobs in flight
    served.wait_for("shutdown_incomplete")
    assert served.stop(signal.SIGTERM) == 0, served.text()
    text = served.text()
    assert "gunicorn_timeout_too_short setting='timeout' seconds=2" in text, text
    assert "server_drain_interrupted" in text, text
    incomplete = text[text.index("shutdown_incomplete") :]
    assert "abandoned=2" in incomplete, text
    assert "'sync-cut'" in incomplete, text
    assert "'async-cut'" in incomplete, text
    assert "Traceback" not in text, text
    assert "exit_drain_failed" not in text, text
