"""Work queued by a request finishes before a real ASGI server's process exits.

Each test runs a real server (uvicorn, hypercorn, daphne, granian) as a child process on
127.0.0.1 with ``tests/asgi_apps/marker_app.py``: its ``/queue`` request submits a job with
``loopkeeper.submit()`` and answers at once; the job waits until loopkeeper's drain has
begun, then 0.3 s more, then appends ``job 1 finished`` to a marker file.  The test reads
the response (the marker is still absent then), signals the server by PID, waits for the
process to exit, and checks that the marker line is there and the server's output shows
loopkeeper's drain (``shutdown_started``, the job's line, ``shutdown_completed``, in that
order) and which hook drained: the lifespan middleware, or the interpreter-exit hook.

The app prints ``threading exit hooks running`` from a ``threading._register_atexit``
hook (which runs just before loopkeeper's own exit drain) and ``atexit hooks running``
from a plain ``atexit`` hook, so each test also pins what the server runs at exit; the
README's deployment table is the summary.  A server package that is not installed skips
its tests with the reason, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import pytest

from servers._harness import LAUNCH, ServerProcess, end, free_port, get, require

ROOT: Final = Path(__file__).resolve().parents[1]
APPS: Final = ROOT / "tests" / "asgi_apps"
EXAMPLES: Final = ROOT / "examples"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals sent by PID")


@dataclass(frozen=True)
class Server:
    """How to run one server on a port, and what it does at exit."""

    package: str  # the module that must be importable
    args: tuple[str, ...]  # after `python -m`; {port} is filled in
    lifespan: bool  # sends ASGI lifespan messages (so the middleware drains)

    def command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-c",
            LAUNCH,
            "-m",
            *(arg.format(port=port) for arg in self.args),
        ]


UVICORN: Final = Server(
    "uvicorn", ("uvicorn", "marker_app:app", "--host", "127.0.0.1", "--port", "{port}"), True
)
HYPERCORN: Final = Server(
    "hypercorn", ("hypercorn", "marker_app:app", "--bind", "127.0.0.1:{port}"), True
)
HYPERCORN_TRIO: Final = Server(
    "hypercorn",
    ("hypercorn", "marker_app:app", "--bind", "127.0.0.1:{port}", "--worker-class", "trio"),
    True,
)
DAPHNE: Final = Server(
    "daphne", ("daphne", "-b", "127.0.0.1", "-p", "{port}", "marker_app:app"), False
)
GRANIAN: Final = Server(
    "granian",
    ("granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "marker_app:app"),
    True,
)


@dataclass
class Running(ServerProcess):
    """A server process serving the marker app, and the file its job writes."""

    marker: Path


class Start(Protocol):
    def __call__(
        self, server: Server, *, middleware: bool = True, shutdown_timeout: float | None = None
    ) -> Running: ...


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Start]:
    """Start a server with the marker app (``middleware=False``: without
    ``LifespanMiddleware``); every process it started is ended after the test."""
    started: list[Running] = []

    def start(
        server: Server, *, middleware: bool = True, shutdown_timeout: float | None = None
    ) -> Running:
        require(server.package)
        port = free_port()
        output = tmp_path / f"{server.package}.log"
        marker = tmp_path / "marker.txt"
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(APPS), str(EXAMPLES)])
        env["LOOPKEEPER_TEST_MARKER"] = str(marker)
        env["LOOPKEEPER_TEST_MIDDLEWARE"] = "1" if middleware else "0"
        if shutdown_timeout is not None:
            env["LOOPKEEPER_TEST_SHUTDOWN_TIMEOUT"] = str(shutdown_timeout)
        with output.open("wb") as sink:
            process = subprocess.Popen(
                server.command(port),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
                start_new_session=True,  # its workers too can be ended as one group below
            )
        running = Running(process, port, output, marker)
        started.append(running)
        return running

    yield start
    for running in started:
        end(running.process)


def _queue_a_job(running: Running) -> None:
    running.wait_ready()
    assert get(running.port, "/queue") == "queued job 1"
    assert not running.marker.exists(), "the job finished before the response"


def _assert_drained(running: Running, status: int, expected_status: int) -> str:
    """The job finished before the process exited, and the log shows the drain."""
    text = running.text()
    assert status == expected_status, text
    assert running.marker.read_text() == "job 1 finished\n", text
    started = text.index("shutdown_started runner='loopkeeper' unfinished=1")
    finished = text.index("marker_app: job 1 finished")
    completed = text.index("shutdown_completed runner='loopkeeper' completed=1")
    assert started < finished < completed, text
    return text


# -- servers that speak lifespan: the middleware drains ---------------------------------------


@pytest.mark.parametrize(
    ("server", "sig", "status"),
    [
        pytest.param(UVICORN, signal.SIGTERM, -signal.SIGTERM, id="uvicorn-SIGTERM"),
        pytest.param(UVICORN, signal.SIGINT, 0, id="uvicorn-SIGINT"),
        pytest.param(HYPERCORN, signal.SIGTERM, 0, id="hypercorn-SIGTERM"),
        pytest.param(HYPERCORN, signal.SIGINT, 0, id="hypercorn-SIGINT"),
        pytest.param(HYPERCORN_TRIO, signal.SIGTERM, 0, id="hypercorn-trio-SIGTERM"),
        pytest.param(GRANIAN, signal.SIGTERM, 0, id="granian-SIGTERM"),
        pytest.param(GRANIAN, signal.SIGINT, 0, id="granian-SIGINT"),
    ],
)
def test_lifespan_middleware_drains_before_the_server_exits(
    serve: Start,
    server: Server,
    sig: signal.Signals,
    status: int,
) -> None:
    """Under a server that speaks lifespan, the job a request queued finishes before the
    process exits, drained by ``LifespanMiddleware`` on ``lifespan.shutdown``: the drain is
    logged before any exit hook runs (uvicorn on SIGTERM runs none at all)."""
    running = serve(server)
    _queue_a_job(running)
    text = _assert_drained(running, running.stop(sig), status)
    assert "marker_app: lifespan scope received" in text
    completed = text.index("shutdown_completed")
    if "threading exit hooks running" in text:
        assert completed < text.index("threading exit hooks running"), text


@pytest.mark.parametrize(
    ("server", "shown"),
    [
        pytest.param(
            UVICORN, "ERROR:    loopkeeper: runner 'loopkeeper' did not drain", id="uvicorn"
        ),
        pytest.param(
            HYPERCORN,
            "LifespanFailureError: Lifespan failure in shutdown. 'loopkeeper: runner",
            id="hypercorn",
        ),
        pytest.param(
            GRANIAN, "[ERROR] loopkeeper: runner 'loopkeeper' did not drain", id="granian"
        ),
    ],
)
def test_drain_that_cancelled_work_is_reported_to_the_server_as_shutdown_failed(
    serve: Start, server: Server, shown: str
) -> None:
    """With ``shutdown_timeout=0`` the drain cancels the queued job, and the server gets
    ``lifespan.shutdown.failed`` with the report: uvicorn and granian log it as an error,
    hypercorn raises it in the worker (a traceback).  Each still shuts down."""
    running = serve(server, shutdown_timeout=0)
    _queue_a_job(running)
    running.stop(signal.SIGTERM)
    text = running.text()
    assert not running.marker.exists(), text
    assert "shutdown_incomplete runner='loopkeeper' completed=0 cancelled=1" in text
    assert shown in text
    assert "cancelled=1" in text[text.index(shown) :]


def test_uvicorn_sigterm_runs_no_exit_hook_so_without_the_middleware_work_is_lost(
    serve: Start,
) -> None:
    """Why the middleware exists: uvicorn re-raises SIGTERM after its own shutdown, so no
    exit hook runs, and without ``LifespanMiddleware`` the queued job is lost silently (no
    drain, not even the warning that names it).  If uvicorn changes this, this test fails
    and the README's deployment table needs a new row."""
    running = serve(UVICORN, middleware=False)
    _queue_a_job(running)
    status = running.stop(signal.SIGTERM)
    text = running.text()
    assert status == -signal.SIGTERM, text
    assert not running.marker.exists(), text
    assert "exit hooks running" not in text, text
    assert "shutdown_" not in text, text


# -- daphne: no lifespan, the interpreter-exit hook drains ------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_daphne_exit_hook_drains_before_the_process_exits(
    serve: Start,
    sig: signal.Signals,
) -> None:
    """daphne sends no lifespan messages, but it stops its reactor and lets the
    interpreter exit normally, so loopkeeper's exit hook drains the job (the drain comes
    after the exit hooks began, and the middleware never saw a lifespan scope)."""
    running = serve(DAPHNE)
    _queue_a_job(running)
    text = _assert_drained(running, running.stop(sig), 0)
    assert "lifespan scope received" not in text
    assert text.index("threading exit hooks running") < text.index("shutdown_started"), text
    assert "atexit hooks running" in text


# -- the example, as a new user runs it ----------------------------------------------------------


def test_example_app_finishes_its_work_on_ctrl_c_under_uvicorn(serve: Start) -> None:
    """``examples/asgi_app.py`` under uvicorn, as its docstring says to run it: the
    signup answers at once, ``/report`` awaits a loopkeeper task, and on Ctrl-C (SIGINT)
    the welcome mail is sent before loopkeeper logs ``shutdown_completed`` and uvicorn
    reports its shutdown complete."""
    example = Server(
        "starlette", ("uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", "{port}"), True
    )
    require("uvicorn")
    running = serve(example)
    running.wait_ready()
    assert get(running.port, "/signup/42", method="POST") == "welcome!\n"
    assert get(running.port, "/report") == "report ready\n"
    status = running.stop(signal.SIGINT)
    text = running.text()
    assert status == 0, text
    sent = text.index("mail sent to user 42")
    completed = text.index("shutdown_completed runner='loopkeeper'")
    assert sent < completed < text.index("Application shutdown complete."), text
