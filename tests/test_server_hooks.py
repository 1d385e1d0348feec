"""The server hooks on their own (``loopkeeper.contrib.gunicorn``, ``uwsgi``, ``runserver``
and what they share): what each checks and calls, with stand-ins for the servers.

Under the real servers they are proved in ``tests/servers/``; here are the promises a
real server cannot show cheaply or at all: an interrupted drain in one interpreter, the
timeout warnings' arithmetic, a uWSGI worker without threads (the ``pyuwsgi`` wheel
always has them), and hooks that are chained, idempotent or no-ops where they must be.
A drain shuts the process's default runner down, so those run in a child interpreter.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, Final

import pytest

import loopkeeper
from loopkeeper.contrib import gunicorn, runserver, uwsgi

SRC: Final = Path(__file__).resolve().parents[1] / "src"


PRELUDE: Final = """
import asyncio, logging, signal, sys, threading, time
import loopkeeper
from loopkeeper.contrib._drain import drain

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
"""


def _child(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_drain_then_exit_drains_once_and_reports_once(tmp_path: Path) -> None:
    """A server hook drains the default runner; the interpreter-exit hook that runs later
    finds it closed: one ``shutdown_started``, one ``shutdown_completed``."""
    done = _child(
        tmp_path,
        """
        handle = loopkeeper.submit(asyncio.sleep, 0.2, name="short")
        report = drain("test hook")
        print("state", handle.state.name, "clean", report.clean)
        """,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "server_drain_started runner='loopkeeper' hook='test hook' unfinished=1" in out
    assert "state SUCCEEDED clean True" in out
    assert out.count("shutdown_started") == 1, out
    assert out.count("shutdown_completed") == 1, out


def test_drain_of_a_runner_that_never_ran_a_task_does_nothing(tmp_path: Path) -> None:
    """A worker that never submitted logs no drain, and may still submit afterwards."""
    done = _child(
        tmp_path,
        """
        print("report", drain("test hook"))
        print("later", loopkeeper.submit(asyncio.sleep, 0, 7).result(timeout=10))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "report None" in done.stdout
    assert "later 7" in done.stdout
    assert "server_drain_started" not in done.stdout


def test_drain_cut_short_by_systemexit_reports_the_rest_abandoned_and_raises_nothing(
    tmp_path: Path,
) -> None:
    """gunicorn aborts a worker whose drain outlasts ``timeout`` with SIGABRT, whose handler
    raises ``SystemExit`` in the main thread, inside the drain.  The drain then reports
    the unfinished task abandoned, by name, and returns; nothing raises, no traceback."""
    done = _child(
        tmp_path,
        """
        def abort(signum, frame):
            sys.exit(1)  # what gunicorn's handle_abort does

        signal.signal(signal.SIGALRM, abort)
        release = threading.Event()
        loopkeeper.submit(release.wait, 30, name="held-job")
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        report = drain("test hook")
        print("abandoned", [info.name for info in report.abandoned])
        release.set()
        """,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "server_drain_interrupted runner='loopkeeper' hook='test hook' by='SystemExit(1)'" in out
    assert "abandoned ['held-job']" in out
    assert out.count("shutdown_started") == 1, out
    assert out.count("shutdown_incomplete") == 1, out
    assert "Traceback" not in done.stderr, done.stderr


def test_drain_called_on_the_loop_thread_logs_why_and_leaves_it_to_the_exit_hook(
    tmp_path: Path,
) -> None:
    """A server hook that runs on loopkeeper's own loop thread cannot wait for the drain
    there: ``server_drain_failed`` says so, nothing raises, and the interpreter-exit hook
    drains later from the main thread, once."""
    done = _child(
        tmp_path,
        """
        async def from_the_loop():
            return drain("test hook")

        print("returned", loopkeeper.submit(from_the_loop).result(timeout=10))
        loopkeeper.submit(asyncio.sleep, 0.2, name="later")
        """,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "returned None" in out, out
    assert "server_drain_failed runner='loopkeeper' hook='test hook'" in out, out
    assert out.count("shutdown_completed runner='loopkeeper' completed=1") == 1, out


def _worker(pid: int, **cfg: float) -> Any:
    return types.SimpleNamespace(pid=pid, cfg=types.SimpleNamespace(**cfg))


@pytest.mark.parametrize(
    ("graceful_timeout", "timeout", "warned"),
    [
        pytest.param(30, 30, [], id="both-fit"),
        pytest.param(5, 30, ["graceful_timeout"], id="graceful-too-short"),
        pytest.param(30, 5, ["timeout"], id="timeout-too-short"),
        pytest.param(30, 0, [], id="timeout-off"),
        pytest.param(11, 11, [], id="exactly-enough"),
        pytest.param(10, 10, ["graceful_timeout", "timeout"], id="no-room-for-the-grace"),
    ],
)
def test_gunicorn_post_worker_init_warns_when_the_drain_does_not_fit(
    caplog: pytest.LogCaptureFixture,
    unconfigured_structlog: None,
    graceful_timeout: float,
    timeout: float,
    warned: list[str],
) -> None:
    """The drain needs ``shutdown_timeout`` (10 s here) + 1 s of grace; each of gunicorn's
    ``graceful_timeout`` and ``timeout`` (0: off) that is shorter gets a warning."""
    assert loopkeeper.get_runner().shutdown_timeout == 10.0
    with caplog.at_level(logging.WARNING, logger="loopkeeper.servers"):
        gunicorn.post_worker_init(
            _worker(os.getpid(), graceful_timeout=graceful_timeout, timeout=timeout)
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "loopkeeper.servers"]
    assert [line.split("setting=")[1].split("'")[1] for line in lines] == warned
    for line in lines:
        assert line.startswith("gunicorn_timeout_too_short"), line
        assert "needed=11.0" in line, line


def test_gunicorn_worker_exit_in_the_master_leaves_its_runner_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn's master calls ``worker_exit`` for a worker that was already gone: the
    master's own runner is not drained there."""
    calls: list[str] = []
    monkeypatch.setattr(gunicorn, "drain", calls.append)
    gunicorn.worker_exit(object(), _worker(os.getpid() + 1))
    assert calls == []
    gunicorn.worker_exit(object(), _worker(os.getpid()))
    assert calls == ["gunicorn worker_exit"]


def test_uwsgi_install_outside_uwsgi_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``install()`` returns False where there is no ``uwsgi`` module."""
    monkeypatch.setitem(sys.modules, "uwsgi", None)  # makes `import uwsgi` fail
    assert uwsgi.install() is False


def test_uwsgi_install_drains_in_atexit_before_the_hook_already_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``install()`` sets ``uwsgi.atexit`` to the drain, calls the previous function after
    it, and is idempotent."""
    order: list[str] = []
    fake = types.ModuleType("uwsgi")
    fake.atexit = lambda: order.append("previous")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    monkeypatch.setattr(uwsgi, "drain", order.append)
    assert uwsgi.install() is True
    assert uwsgi.install() is True
    fake.atexit()
    assert order == ["uwsgi atexit", "previous"]


def test_uwsgi_worker_without_threads_warns_at_the_first_submit(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    unconfigured_structlog: None,
    runner: loopkeeper.Runner,
) -> None:
    """Inside uWSGI without ``--enable-threads`` (``uwsgi.has_threads`` is 0), the first
    submit logs ``uwsgi_threads_disabled`` naming the flag; with threads, nothing."""
    fake = types.ModuleType("uwsgi")
    fake.has_threads = 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    with caplog.at_level(logging.WARNING, logger="loopkeeper"):
        runner.submit(lambda: None).result(timeout=10)
        runner.submit(lambda: None).result(timeout=10)
    lines = [r.getMessage() for r in caplog.records if "uwsgi_threads_disabled" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "--enable-threads" in lines[0]

    fake.has_threads = 1  # type: ignore[attr-defined]
    caplog.clear()
    with loopkeeper.Runner(name="threaded") as threaded:
        threaded.submit(lambda: None).result(timeout=10)
    assert "uwsgi_threads_disabled" not in caplog.text


def test_runserver_connect_drains_on_file_changed_and_lets_the_reload_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The receiver ``connect()`` adds (once, however often called) drains when the
    autoreloader reports a change, and answers None, so Django goes on to reload."""
    pytest.importorskip("django")
    from django.utils.autoreload import file_changed  # noqa: PLC0415

    uid = "loopkeeper.contrib.runserver"
    connected_before = any(entry[0][0] == uid for entry in file_changed.receivers)
    calls: list[str] = []
    monkeypatch.setattr(runserver, "drain", calls.append)
    runserver.connect()
    runserver.connect()
    try:
        results = file_changed.send(sender=object(), file_path=Path("views.py"))
    finally:
        if not connected_before:  # loopkeeper's Django app, set up by other tests, keeps it
            file_changed.disconnect(dispatch_uid=uid)
    assert calls == ["runserver reload"]
    ours = [result for receiver, result in results if receiver is runserver._on_file_changed]
    assert ours == [None]
