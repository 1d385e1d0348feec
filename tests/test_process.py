"""Whole-process promises: the exit drain, a second Ctrl-C, fork, and no signal handlers.

Each test writes a small script to ``tmp_path`` and runs it in a child interpreter
(``sys.executable``, loopkeeper from this checkout's ``src``, ``-W error::RuntimeWarning``),
because what happens at interpreter exit or after ``fork()`` cannot be observed in-process.

Scripts that must prove a task outlived ``main`` wait for ``EXIT_BEGAN``: a
``threading._register_atexit`` callback registered after ``import loopkeeper``.  Those
callbacks run newest first, so it fires just before loopkeeper's exit hook, on the main
thread, after the main module has ended; a task gated on it cannot finish before the
process started exiting, however fast or slow the machine is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import pytest

SRC: Final = Path(__file__).resolve().parents[1] / "src"
CHILD_DEADLINE: Final = 60.0  # seconds any child interpreter may take before the test fails
GRACE: Final = 1.0  # the promise: shutdown gives cancelled work at most 1 s more
SLACK: Final = 8.0  # generous allowance for a loaded machine on top of a promised deadline

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
needs_posix_signals = pytest.mark.skipif(
    sys.platform == "win32", reason="needs POSIX signals sent by PID"
)

# Pasted into scripts after `import loopkeeper` (see the module docstring).
EXIT_BEGAN: Final = """
import asyncio as _asyncio
import threading as _threading
import time as _time

_exit_began = _threading.Event()
_threading._register_atexit(_exit_began.set)  # runs just before loopkeeper's own exit hook


async def wait_until_exit_began():
    deadline = _time.monotonic() + 20
    while not _exit_began.is_set():
        if _time.monotonic() > deadline:
            raise TimeoutError("the interpreter never began to exit")
        await _asyncio.sleep(0.01)
"""

# A task that provably outlives main: it finishes 0.3 s after the interpreter began to exit.
MARKER_TASK: Final = """
import asyncio
import sys
from pathlib import Path


async def write_marker_after_exit(path):
    await wait_until_exit_began()
    await asyncio.sleep(0.3)
    Path(path).write_text("finished")


loopkeeper.submit(write_marker_after_exit, sys.argv[1], name="slow-marker")
"""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env.pop("PYTHONWARNINGS", None)
    return env


def _command(script: Path, *args: str) -> list[str]:
    return [sys.executable, "-W", "error::RuntimeWarning", str(script), *args]


def _script(tmp_path: Path, *parts: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text("\n".join(textwrap.dedent(part) for part in parts))
    return path


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(script, *args),
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE,
        env=_child_env(),
        cwd=script.parent,
        check=False,
    )


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def _assert_no_exit_noise(stderr: str) -> None:
    assert "Exception ignored" not in stderr, stderr
    assert "never awaited" not in stderr, stderr
    assert "Task was destroyed" not in stderr, stderr


class _Child:
    """A running child interpreter whose stdout and stderr are collected line by line."""

    def __init__(self, script: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            _command(script, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
            cwd=script.parent,
        )
        self._changed = threading.Condition()
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._open = 2  # streams not at EOF yet
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=("stdout", self.process.stdout), daemon=True),
            threading.Thread(target=self._read, args=("stderr", self.process.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def __enter__(self) -> _Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()  # by PID: SIGKILL, or TerminateProcess on Windows
            self.process.wait(CHILD_DEADLINE)
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def _read(self, stream: str, pipe: IO[str]) -> None:
        for line in pipe:
            with self._changed:
                self._lines[stream].append(line)
                self._changed.notify_all()
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def text(self, stream: str) -> str:
        with self._changed:
            return "".join(self._lines[stream])

    def wait_for_line(self, stream: str, needle: str, timeout: float = CHILD_DEADLINE) -> None:
        """Wait until a line of ``stream`` contains ``needle``; fail at the deadline or EOF."""

        def seen() -> bool:
            return any(needle in line for line in self._lines[stream])

        with self._changed:
            self._changed.wait_for(lambda: seen() or self._open == 0, timeout)
            found = seen()
        assert found, (
            f"the child never wrote {needle!r} to {stream}; "
            f"stdout={self.text('stdout')!r} stderr={self.text('stderr')!r}"
        )

    def wait(self, timeout: float = CHILD_DEADLINE) -> int:
        """Wait for the child to exit; return its exit code once its output is all read."""
        returncode = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return returncode


def _exit_time(child: _Child, after: str, bound: float) -> tuple[int, float]:
    """Wait for ``after`` on stdout, then for the exit; return exit code and seconds taken."""
    child.wait_for_line("stdout", after)
    began = time.monotonic()
    try:
        returncode = child.wait(bound + CHILD_DEADLINE)
    except subprocess.TimeoutExpired:  # pragma: no cover  (a failure, reported below)
        pytest.fail(f"the child did not exit: stderr={child.text('stderr')!r}")
    return returncode, time.monotonic() - began


# -- the exit drain ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "expected_code"),
    [
        pytest.param("pass", 0, id="main-returns"),
        pytest.param("sys.exit(3)", 3, id="sys-exit-3"),
        pytest.param("raise RuntimeError('main-module-failed')", 1, id="uncaught-exception"),
    ],
)
def test_exit_drain_waits_for_unfinished_task_however_main_ends(
    tmp_path: Path, ending: str, expected_code: int
) -> None:
    """At interpreter exit (main returns, ``sys.exit(3)``, an uncaught exception) the default
    runner waits for an unfinished task; the exit code is the one the program chose, and the
    drain is logged: ``shutdown_started`` (WARNING) naming the task as ``id 'name'``, then
    ``shutdown_completed`` at the same level, so the outcome shows wherever the manifest
    does."""
    marker = tmp_path / "marker"
    script = _script(
        tmp_path,
        """
        import logging
        import sys

        import loopkeeper

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        """,
        EXIT_BEGAN,
        MARKER_TASK,
        ending,
    )

    result = _run(script, str(marker))

    assert result.returncode == expected_code, result.stderr
    assert marker.read_text() == "finished", "the task did not finish before the process exited"
    started = _lines_with(result.stderr, "shutdown_started")
    completed = _lines_with(result.stderr, "shutdown_completed")
    assert len(started) == 1, result.stderr
    assert started[0].startswith("WARNING loopkeeper shutdown_started"), started
    assert "unfinished=1" in started[0]
    assert "1 'slow-marker'" in started[0]
    assert len(completed) == 1, result.stderr
    assert completed[0].startswith("WARNING loopkeeper shutdown_completed"), completed
    assert "completed=1" in completed[0]
    assert result.stderr.index("shutdown_started") < result.stderr.index("shutdown_completed")
    if expected_code == 1:
        assert "Traceback (most recent call last)" in result.stderr
        assert "RuntimeError: main-module-failed" in result.stderr
    else:
        assert "Traceback" not in result.stderr, result.stderr
    _assert_no_exit_noise(result.stderr)


def test_exit_drain_warning_reaches_stderr_without_any_logging_configuration(
    tmp_path: Path,
) -> None:
    """With no logging configured at all (a Django project without a ``LOGGING`` entry for
    ``loopkeeper``), the ``shutdown_started`` warning still reaches stderr (Python's
    last-resort handler) naming the task by id and name, and so does the drain's outcome,
    ``shutdown_completed`` with ``completed=1``, after it: the last line says the work
    finished.  INFO lines do not show (the library adds no handler of its own)."""
    marker = tmp_path / "marker"
    script = _script(tmp_path, "import loopkeeper", EXIT_BEGAN, MARKER_TASK)

    result = _run(script, str(marker))

    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "finished"
    started = _lines_with(result.stderr, "shutdown_started")
    assert len(started) == 1, result.stderr
    assert "1 'slow-marker'" in started[0]
    completed = _lines_with(result.stderr, "shutdown_completed")
    assert len(completed) == 1, result.stderr
    assert "completed=1" in completed[0]
    assert result.stderr.index("shutdown_started") < result.stderr.index("shutdown_completed")
    assert "runner_started" not in result.stderr
    _assert_no_exit_noise(result.stderr)


@needs_posix_signals
def test_exit_drain_cancels_a_never_ending_coroutine_at_its_shutdown_timeout(
    tmp_path: Path,
) -> None:
    """A coroutine that never finishes is cancelled once ``shutdown_timeout`` (0.5 s) has
    passed; the process exits within that timeout plus the grace, and the report line
    ``shutdown_incomplete`` counts it as cancelled, not abandoned."""
    script = _script(
        tmp_path,
        """
        import asyncio
        import logging
        import threading

        import loopkeeper

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        loopkeeper.configure(shutdown_timeout=0.5)
        running = threading.Event()


        async def never_ends():
            running.set()
            await asyncio.Event().wait()


        loopkeeper.submit(never_ends, name="never-ends")
        assert running.wait(10)
        print("ready", flush=True)
        """,
    )

    with _Child(script) as child:
        returncode, took = _exit_time(child, "ready", 0.5 + GRACE + SLACK)

    stderr = child.text("stderr")
    assert returncode == 0, stderr
    assert took < 0.5 + GRACE + SLACK, f"exit took {took:.1f}s: {stderr}"
    assert "1 'never-ends'" in _lines_with(stderr, "shutdown_started")[0]
    cancelled = _lines_with(stderr, "task_cancelled")
    assert len(cancelled) == 1, stderr
    assert "task_name='never-ends'" in cancelled[0]
    assert "by_shutdown=True" in cancelled[0]
    incomplete = _lines_with(stderr, "shutdown_incomplete")
    assert len(incomplete) == 1, stderr
    assert incomplete[0].startswith("WARNING loopkeeper shutdown_incomplete")
    assert "cancelled=1" in incomplete[0]
    assert "abandoned=0" in incomplete[0]
    _assert_no_exit_noise(stderr)


UNSTOPPABLE: Final = {
    # name: (the task, what the report says after its name)
    "stuck-sync": (
        """
        def stuck_sync():
            running.set()
            threading.Event().wait(30)  # checks nothing: no way to stop it from outside
        """,
        "(thread 'loopkeeper-worker-1'",
    ),
    "loop-blocker": (
        """
        async def loop_blocker():
            running.set()
            time.sleep(30)  # blocks the loop thread: its cancellation cannot even arrive
        """,
        "(age",
    ),
}


@needs_posix_signals
@pytest.mark.parametrize("task_name", list(UNSTOPPABLE))
def test_exit_drain_abandons_a_task_it_cannot_stop_and_names_it(
    tmp_path: Path, task_name: str
) -> None:
    """A sync task blocked in a thread, or a coroutine that blocks the loop thread itself
    (``time.sleep`` in ``async def``), cannot be cancelled: after ``shutdown_timeout``
    plus the grace it is abandoned, the report names it (a sync task with its worker
    thread ``loopkeeper-worker-1``), and the process exits anyway, within that bound."""
    task, named_as = UNSTOPPABLE[task_name]
    function = task_name.replace("-", "_")
    script = _script(
        tmp_path,
        """
        import logging
        import threading
        import time

        import loopkeeper

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        loopkeeper.configure(shutdown_timeout=0.5)
        running = threading.Event()
        """,
        task,
        f"""
        loopkeeper.submit({function}, name={task_name!r})
        assert running.wait(10)
        print("ready", flush=True)
        """,
    )

    with _Child(script) as child:
        returncode, took = _exit_time(child, "ready", 0.5 + GRACE + SLACK)

    stderr = child.text("stderr")
    assert returncode == 0, stderr
    assert took < 0.5 + GRACE + SLACK, f"exit took {took:.1f}s: {stderr}"
    incomplete = _lines_with(stderr, "shutdown_incomplete")
    assert len(incomplete) == 1, stderr
    assert "abandoned=1" in incomplete[0]
    assert f"1 {task_name!r} {named_as}" in incomplete[0]
    _assert_no_exit_noise(stderr)


@needs_posix_signals
def test_process_with_nothing_pending_exits_at_once(tmp_path: Path) -> None:
    """When every submitted task has finished, exit does not wait: no ``shutdown_started``
    line, a clean ``shutdown_completed``, exit code 0, far sooner than the configured 30 s
    ``shutdown_timeout`` (an idle worker or the loop thread must not hold the exit)."""
    script = _script(
        tmp_path,
        """
        import logging

        import loopkeeper

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        loopkeeper.configure(shutdown_timeout=30)


        async def answer():
            return 42


        def answer_in_thread():
            return 43


        assert loopkeeper.submit(answer).result(timeout=10) == 42
        assert loopkeeper.submit(answer_in_thread).result(timeout=10) == 43
        print("ready", flush=True)
        """,
    )

    with _Child(script) as child:
        returncode, took = _exit_time(child, "ready", 10.0)

    stderr = child.text("stderr")
    assert returncode == 0, stderr
    assert took < 10.0, f"exit took {took:.1f}s with nothing pending: {stderr}"
    assert "shutdown_started" not in stderr
    completed = _lines_with(stderr, "shutdown_completed")
    assert len(completed) == 1, stderr
    assert "completed=0" in completed[0]
    assert "shutdown_incomplete" not in stderr
    _assert_no_exit_noise(stderr)


def test_process_that_never_submits_starts_no_thread_and_logs_nothing(tmp_path: Path) -> None:
    """Importing loopkeeper, configuring it and even calling ``get_runner()`` starts no
    thread, neither during the program nor at exit, and logs nothing even at DEBUG."""
    script = _script(
        tmp_path,
        """
        import atexit
        import json
        import logging
        import threading

        import loopkeeper

        logging.basicConfig(level=logging.DEBUG)
        loopkeeper.configure(shutdown_timeout=5)
        loopkeeper.get_runner()


        def thread_names(when):
            names = sorted(t.name for t in threading.enumerate())
            print(json.dumps({"when": when, "threads": names}), flush=True)


        atexit.register(thread_names, "at-exit")  # runs after loopkeeper's exit hook
        thread_names("end-of-main")
        """,
    )

    result = _run(script)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    seen = [json.loads(line) for line in result.stdout.splitlines()]
    assert seen == [
        {"when": "end-of-main", "threads": ["MainThread"]},
        {"when": "at-exit", "threads": ["MainThread"]},
    ]


# -- a second Ctrl-C ---------------------------------------------------------------------

# Defines never_ends() and the announcer; NEVER_ENDING_TASK then uses them.
NEVER_ENDING_SETUP: Final = """
import asyncio
import logging
import os
import sys
import threading
import time

import loopkeeper

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
)
loopkeeper.configure(shutdown_timeout=30)
running = threading.Event()


async def never_ends():
    running.set()
    await asyncio.Event().wait()


def announce_when_the_exit_hook_waits():
    # Print once the main thread is inside threading.Event.wait called by loopkeeper's
    # own code: the exit hook's wait, where the second Ctrl-C is meant to land.
    main = threading.main_thread().ident
    package = os.path.dirname(loopkeeper.__file__)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        while frame is not None:
            caller = frame.f_back
            if (
                frame.f_code is threading.Event.wait.__code__
                and caller is not None
                and caller.f_code.co_filename.startswith(package)
            ):
                print("exit hook waiting", flush=True)
                return
            frame = caller
        time.sleep(0.005)

"""

# Submits the task, then starts the announcer: no submit may come after it (the first
# submit waits for the loop thread in threading.Event.wait, from loopkeeper's code).
NEVER_ENDING_START: Final = """
loopkeeper.submit(never_ends, name="never-ends")
assert running.wait(10)
threading.Thread(target=announce_when_the_exit_hook_waits, daemon=True).start()
print("ready", flush=True)
"""

NEVER_ENDING_TASK: Final = NEVER_ENDING_SETUP + NEVER_ENDING_START


@needs_posix_signals
def test_ctrl_c_during_exit_drain_abandons_the_rest_at_once(tmp_path: Path) -> None:
    """A SIGINT while the exit hook waits (``shutdown_timeout=30``) ends the wait at once:
    the task is abandoned and reported (``shutdown_incomplete`` naming it), the process
    exits within seconds, and stderr has no "Exception ignored" and no traceback.  (The
    child announces on stdout when its main thread is inside loopkeeper's
    ``threading.Event.wait``, seen through ``sys._current_frames()``; the signal is sent
    then, not merely after the ``shutdown_started`` line.)

    Exit code 0 on CPython 3.10-3.13: main had already ended normally, and the hook
    swallows the KeyboardInterrupt raised in its wait."""
    script = _script(tmp_path, NEVER_ENDING_TASK)

    with _Child(script) as child:
        child.wait_for_line("stdout", "exit hook waiting")
        began = time.monotonic()
        os.kill(child.process.pid, signal.SIGINT)
        returncode = child.wait()
        took = time.monotonic() - began

    stderr = child.text("stderr")
    assert returncode == 0, stderr
    assert "1 'never-ends'" in _lines_with(stderr, "shutdown_started")[0]
    assert took < GRACE + SLACK, f"exit took {took:.1f}s after Ctrl-C: {stderr}"
    incomplete = _lines_with(stderr, "shutdown_incomplete")
    assert len(incomplete) == 1, stderr
    assert "abandoned=1" in incomplete[0]
    assert "1 'never-ends'" in incomplete[0]
    assert "Traceback" not in stderr, stderr
    _assert_no_exit_noise(stderr)


@needs_posix_signals
def test_double_ctrl_c_exits_at_once_with_the_sigint_status(tmp_path: Path) -> None:
    """The usual double Ctrl-C: the first SIGINT ends main with KeyboardInterrupt and the
    exit drain begins; the second ends the drain at once, the task is abandoned and
    reported, there is no "Exception ignored", and the process ends as killed by SIGINT
    (CPython re-raises an unhandled KeyboardInterrupt as the signal: status -2)."""
    script = _script(tmp_path, NEVER_ENDING_TASK, "threading.Event().wait(60)")

    with _Child(script) as child:
        child.wait_for_line("stdout", "ready")
        os.kill(child.process.pid, signal.SIGINT)
        child.wait_for_line("stdout", "exit hook waiting")
        began = time.monotonic()
        os.kill(child.process.pid, signal.SIGINT)
        returncode = child.wait()
        took = time.monotonic() - began

    stderr = child.text("stderr")
    assert returncode == -signal.SIGINT, stderr
    assert took < GRACE + SLACK, f"exit took {took:.1f}s after the second Ctrl-C: {stderr}"
    assert stderr.count("Traceback") == 1, stderr  # the first Ctrl-C's, in main
    assert stderr.index("KeyboardInterrupt") < stderr.index("shutdown_started")
    incomplete = _lines_with(stderr, "shutdown_incomplete")
    assert len(incomplete) == 1, stderr
    assert "1 'never-ends'" in incomplete[0]
    _assert_no_exit_noise(stderr)


@needs_posix_signals
def test_ctrl_c_during_exit_drain_abandons_every_runners_tasks_quietly(tmp_path: Path) -> None:
    """With two started runners (the default and an explicit one), a Ctrl-C during the first
    runner's drain abandons what is left on both at once: each gets its
    ``shutdown_incomplete`` report naming its task, and asyncio never prints "Task was
    destroyed but it is pending!" for the abandoned tasks as the interpreter goes away."""
    script = _script(
        tmp_path,
        NEVER_ENDING_SETUP,
        """
        explicit = loopkeeper.Runner(name="explicit", shutdown_timeout=30)
        explicit_running = threading.Event()


        async def explicit_never_ends():
            explicit_running.set()
            await asyncio.Event().wait()


        explicit.submit(explicit_never_ends, name="explicit-never-ends")
        assert explicit_running.wait(10)
        """,
        NEVER_ENDING_START,
    )

    with _Child(script) as child:
        child.wait_for_line("stdout", "exit hook waiting")
        began = time.monotonic()
        os.kill(child.process.pid, signal.SIGINT)
        returncode = child.wait()
        took = time.monotonic() - began

    stderr = child.text("stderr")
    assert returncode == 0, stderr
    assert took < 2 * GRACE + SLACK, f"exit took {took:.1f}s after Ctrl-C: {stderr}"
    incomplete = _lines_with(stderr, "shutdown_incomplete")
    assert len(incomplete) == 2, stderr
    assert "1 'explicit-never-ends'" in incomplete[0]  # started first, drained first
    assert "1 'never-ends'" in incomplete[1]
    assert "Traceback" not in stderr, stderr
    _assert_no_exit_noise(stderr)


@needs_posix_signals
def test_ctrl_c_while_the_manifest_is_being_logged_still_reports_the_task(
    tmp_path: Path,
) -> None:
    """A Ctrl-C can land at any moment of the exit hook, e.g. while a slow log handler
    (network, syslog, a full pipe) is still writing the ``shutdown_started`` manifest.  The
    drain must still end with its report: ``shutdown_incomplete`` naming the abandoned
    task, without "Exception ignored".  (The same gap makes a Ctrl-C sent right after the
    ``shutdown_started`` line reaches the terminal lose the report about 1 time in 10.)"""
    script = _script(
        tmp_path,
        NEVER_ENDING_TASK,
        """
        class SlowHandler(logging.Handler):
            def emit(self, record):
                if record.getMessage().startswith("shutdown_started"):
                    sys.stderr.write("slow handler busy\\n")
                    sys.stderr.flush()
                    threading.Event().wait(20)


        logging.getLogger().addHandler(SlowHandler())  # after the stderr handler
        """,
    )

    with _Child(script) as child:
        child.wait_for_line("stdout", "ready")
        child.wait_for_line("stderr", "slow handler busy")
        os.kill(child.process.pid, signal.SIGINT)
        returncode = child.wait()

    stderr = child.text("stderr")
    assert returncode == 0, stderr
    incomplete = _lines_with(stderr, "shutdown_incomplete")
    assert len(incomplete) == 1, f"the drain's report was lost: {stderr}"
    assert "1 'never-ends'" in incomplete[0]
    _assert_no_exit_noise(stderr)


# -- fork ----------------------------------------------------------------------------------

FORK_SCRIPT: Final = """
import asyncio
import json
import logging
import os
import sys
import threading
import warnings
from pathlib import Path

import loopkeeper

logging.basicConfig(
    level=logging.DEBUG, stream=sys.stderr, format="%(process)d %(levelname)s %(message)s"
)
# the fork() to use:
FORK_SETUP


async def answer():
    return 42


def answer_in_thread():
    return 43


parked = threading.Event()


async def parked_in_parent():
    parked.set()
    await asyncio.Event().wait()  # nobody ever sets it


parent_handle = loopkeeper.submit(parked_in_parent, name="parent-only-task")
parent_runner = loopkeeper.get_runner()
explicit = loopkeeper.Runner(name="explicit-runner")
explicit.start()
assert parked.wait(10)
sys.stdout.flush()
sys.stderr.flush()
pid = fork()
if pid == 0:  # the child: its stderr goes to a file of its own
    err = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)
    os.close(err)
    seen = {}
    try:
        runner = loopkeeper.get_runner()
        seen["fresh_default_runner"] = runner is not parent_runner
        seen["async_result"] = runner.submit(answer, name="child-async").result(timeout=10)
        seen["sync_result"] = runner.submit(answer_in_thread, name="child-sync").result(
            timeout=10
        )
        seen["parent_handle_cancel"] = parent_handle.cancel()
        try:
            parent_handle.result(timeout=0.1)
        except BaseException as exc:
            seen["parent_handle_result"] = type(exc).__name__
        else:
            seen["parent_handle_result"] = "returned"
        try:
            explicit.submit(answer)
        except BaseException as exc:
            seen["explicit_submit"] = type(exc).__name__
        else:
            seen["explicit_submit"] = "accepted"
    except BaseException as exc:
        seen["error"] = repr(exc)
    Path(sys.argv[2]).write_text(json.dumps(seen))
    sys.exit(0)  # a normal exit, so that the exit hook runs

_, status = os.waitpid(pid, 0)
state_after_child = parent_handle.state.name
explicit_result = explicit.submit(answer).result(timeout=10)
cancelled = parent_handle.cancel()
try:
    parent_handle.result(timeout=10)
except BaseException as exc:
    outcome = type(exc).__name__
else:
    outcome = "returned"
explicit.shutdown(timeout=10)
print(json.dumps({
    "child_exit_code": os.waitstatus_to_exitcode(status),
    "state_after_child": state_after_child,
    "explicit_result": explicit_result,
    "cancel": cancelled,
    "outcome": outcome,
    "final_state": parent_handle.state.name,
}), flush=True)
"""

OS_FORK: Final = """
def fork():  # Python 3.12+ warns about fork() with threads running: expected here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()
"""

# C fork() called with the GIL held: no os.register_at_fork hook runs, as under uWSGI.
RAW_FORK: Final = """
import ctypes

fork = ctypes.PyDLL(None).fork
fork.restype = ctypes.c_int"""


@needs_fork
@pytest.mark.parametrize(
    "fork",
    [
        pytest.param(OS_FORK, id="os.fork"),
        pytest.param(
            RAW_FORK,
            id="fork-without-at-fork-hooks",
            marks=pytest.mark.skipif(sys.platform != "linux", reason="C fork() via ctypes"),
        ),
    ],
)
def test_forked_child_gets_a_fresh_runner_and_never_touches_the_parents_tasks(
    tmp_path: Path, fork: str
) -> None:
    """After fork, with or without at-fork hooks run: the child's ``get_runner()`` is a new
    runner that works (async and sync tasks); a parent's handle there changes nothing
    (``cancel()`` is False, ``result()`` raises RuntimeError, not TimeoutError); a Runner made
    before the fork refuses ``submit`` (RuntimeError); the child's exit drain neither waits
    for nor mentions the parent's task.  In the parent the task is untouched: still running
    after the child exited, then cancellable as usual."""
    child_stderr = tmp_path / "child.stderr"
    child_seen = tmp_path / "child.json"
    script = _script(tmp_path, FORK_SCRIPT.replace("FORK_SETUP", fork))

    result = _run(script, str(child_stderr), str(child_seen))

    assert result.returncode == 0, result.stderr
    assert json.loads(child_seen.read_text()) == {
        "fresh_default_runner": True,
        "async_result": 42,
        "sync_result": 43,
        "parent_handle_cancel": False,
        "parent_handle_result": "RuntimeError",
        "explicit_submit": "RuntimeError",
    }
    assert json.loads(result.stdout) == {
        "child_exit_code": 0,
        "state_after_child": "RUNNING",
        "explicit_result": 42,
        "cancel": True,
        "outcome": "CancelledError",
        "final_state": "CANCELLED",
    }
    grandchild_log = child_stderr.read_text()
    assert "shutdown_completed" in grandchild_log, grandchild_log  # its exit hook ran
    assert "parent-only-task" not in grandchild_log
    assert "shutdown_started" not in grandchild_log
    _assert_no_exit_noise(grandchild_log)
    cancelled = _lines_with(result.stderr, "task_cancelled")
    assert len(cancelled) == 1, result.stderr  # by the parent, once
    assert "task_name='parent-only-task' by_shutdown=False" in cancelled[0]
    _assert_no_exit_noise(result.stderr)


@needs_fork
def test_forked_child_default_runner_keeps_the_configured_options(tmp_path: Path) -> None:
    """Options set with ``configure()`` before a fork (a preforking server imports the app,
    which configures loopkeeper, then forks workers) apply to the child's fresh default
    runner too, not the built-in defaults."""
    script = _script(
        tmp_path,
        """
        import json
        import os
        import warnings

        import loopkeeper

        loopkeeper.configure(shutdown_timeout=3.5, max_pending=7, name="configured")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        runner = loopkeeper.get_runner()
        options = [runner.name, runner.shutdown_timeout, runner.max_pending]
        if pid == 0:
            print(json.dumps({"child": options}), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"parent": options}), flush=True)
        """,
    )

    result = _run(script)

    assert result.returncode == 0, result.stderr
    seen = [json.loads(line) for line in result.stdout.splitlines()]
    assert seen == [
        {"child": ["configured", 3.5, 7]},
        {"parent": ["configured", 3.5, 7]},
    ]


# -- signals and environment ---------------------------------------------------------------


def test_no_signal_handler_or_environment_variable_is_ever_changed(tmp_path: Path) -> None:
    """loopkeeper installs no signal handler and sets no wakeup fd, ever: SIGINT, SIGTERM,
    SIGHUP, SIGCHLD and SIGUSR1 keep their handlers through import, async and sync tasks on
    the default and an explicit runner, and shutdown; ``os.environ`` is unchanged too."""
    script = _script(
        tmp_path,
        """
        import json
        import os
        import signal

        NAMES = [n for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGCHLD", "SIGUSR1")
                 if hasattr(signal, n)]


        def handlers():
            return {n: repr(signal.getsignal(getattr(signal, n))) for n in NAMES}


        before = handlers()
        environ_before = dict(os.environ)

        import loopkeeper

        after_import = handlers()


        async def answer():
            return 42


        def answer_in_thread():
            return 43


        explicit = loopkeeper.Runner(name="explicit")
        for runner in (loopkeeper.get_runner(), explicit):
            assert runner.submit(answer).result(timeout=10) == 42
            assert runner.submit(answer_in_thread).result(timeout=10) == 43
        after_use = handlers()
        assert loopkeeper.shutdown(timeout=10).clean
        assert explicit.shutdown(timeout=10).clean
        after_shutdown = handlers()
        print(json.dumps({
            "names": NAMES,
            "import": after_import == before,
            "use": after_use == before,
            "shutdown": after_shutdown == before,
            "changed": {n: [before[n], after_shutdown[n]] for n in NAMES
                        if before[n] != after_shutdown[n]},
            "environ": dict(os.environ) == environ_before,
            "wakeup_fd": signal.set_wakeup_fd(-1),
        }), flush=True)
        """,
    )

    result = _run(script)

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert "SIGINT" in seen["names"]
    assert seen == {
        "names": seen["names"],
        "import": True,
        "use": True,
        "shutdown": True,
        "changed": {},
        "environ": True,
        "wakeup_fd": -1,
    }


# -- asyncio.to_thread at exit -------------------------------------------------------------


@pytest.mark.parametrize(
    "blocking_call",
    [
        "await asyncio.to_thread(time.sleep, 0.2)",
        "await sync_to_async(time.sleep, thread_sensitive=False)(0.2)",
        "await loopkeeper.run_in_thread(time.sleep, 0.2)",
        "await asyncio.wrap_future(own_executor.submit(time.sleep, 0.2))",
    ],
    ids=["asyncio.to_thread", "sync_to_async", "run_in_thread", "own-ThreadPoolExecutor"],
)
def test_exit_drain_lets_a_task_using_asyncio_to_thread_finish(
    tmp_path: Path, blocking_call: str
) -> None:
    """A task that runs blocking code in a thread (``asyncio.to_thread``, asgiref's
    ``sync_to_async``, ``run_in_thread``) only after the interpreter began to exit still
    gets its thread and finishes: the drain runs before the executors shut down, and the
    loop's default executor runs on the runner's own workers, which exist already
    (CPython 3.12.0-3.12.2 refuse to start a thread once shutdown began, gh-113964).
    The application's own ``ThreadPoolExecutor`` (made before exit, first used during the
    drain) still takes work: the drain's hook runs before ``concurrent.futures`` shuts its
    executors down (later, their ``submit`` raises "cannot schedule new futures")."""
    marker = tmp_path / "marker"
    script = _script(
        tmp_path,
        """
        import asyncio
        import concurrent.futures
        import logging
        import sys
        import time
        from pathlib import Path

        from asgiref.sync import sync_to_async

        import loopkeeper

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        own_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        """,
        EXIT_BEGAN,
        f"""
        async def sleep_in_thread_after_exit(path):
            await wait_until_exit_began()
            {blocking_call}
            Path(path).write_text("finished")


        loopkeeper.submit(sleep_in_thread_after_exit, sys.argv[1], name="to-thread-task")
        """,
    )

    result = _run(script, str(marker))

    assert result.returncode == 0, result.stderr
    assert "task_failed" not in result.stderr, result.stderr
    assert marker.exists(), f"the task did not finish: {result.stderr}"
    assert marker.read_text() == "finished"
    assert "1 'to-thread-task'" in _lines_with(result.stderr, "shutdown_started")[0]
    _assert_no_exit_noise(result.stderr)


# -- user code that calls back into loopkeeper at exit ------------------------------------


@needs_posix_signals
def test_exit_drain_runs_a_callback_that_calls_shutdown_and_the_process_exits(
    tmp_path: Path,
) -> None:
    """A done callback calls ``loopkeeper.shutdown()``; the exit drain (``shutdown_timeout``
    0.2 s) abandons the task, runs the callback, whose ``shutdown()`` returns the drain's
    report, and the process exits within the timeout plus the grace."""
    script = _script(
        tmp_path,
        """
        import threading

        import loopkeeper

        loopkeeper.configure(shutdown_timeout=0.2)
        started = threading.Event()
        never = threading.Event()


        def blocked():
            started.set()
            never.wait()


        def on_done(handle):
            print("callback:", repr(loopkeeper.shutdown()), flush=True)


        handle = loopkeeper.submit(blocked, name="blocked")
        handle.add_done_callback(on_done)
        assert started.wait(10)
        print("ready", flush=True)
        """,
    )

    with _Child(script) as child:
        returncode, took = _exit_time(child, "ready", 0.2 + GRACE + SLACK)

    stderr = child.text("stderr")
    assert returncode == 0, stderr
    assert took < 0.2 + GRACE + SLACK, f"exit took {took:.1f}s: {stderr}"
    callback = _lines_with(child.text("stdout"), "callback:")
    assert len(callback) == 1, child.text("stdout")
    assert "<ShutdownReport clean=False" in callback[0]
    assert "1 'blocked'" in callback[0]
    _assert_no_exit_noise(stderr)


# -- fork: what the child inherits ----------------------------------------------------------

# Waits for the forked child with a deadline, so a child that hangs fails the test instead
# of the test run; the child reports through its stdout (the same pipe as the parent's).
WAIT_FOR_CHILD: Final = """
import signal
import time


def wait_for_child(pid):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    print(json.dumps({"child": "hung"}), flush=True)
    return None
"""


@needs_fork
@pytest.mark.parametrize(
    "fork",
    [
        pytest.param(OS_FORK, id="os.fork"),
        pytest.param(
            RAW_FORK,
            id="fork-without-at-fork-hooks",
            marks=pytest.mark.skipif(sys.platform != "linux", reason="C fork() via ctypes"),
        ),
    ],
)
def test_thread_sensitive_sync_to_async_works_in_a_forked_child(tmp_path: Path, fork: str) -> None:
    """The parent ran asgiref's thread-sensitive ``sync_to_async`` in a task (so asgiref's
    process-wide thread exists there), then forks, with or without at-fork hooks (a gunicorn
    ``--preload`` master, uWSGI): in the child, a task's ``sync_to_async(func)`` runs."""
    pytest.importorskip("asgiref")
    script = _script(
        tmp_path,
        """
        import json
        import os
        import sys
        import warnings

        from asgiref.sync import sync_to_async

        import loopkeeper
        """,
        fork,
        WAIT_FOR_CHILD,
        """
        def where():
            return "ran"


        async def via_sync_to_async():
            return await sync_to_async(where)()


        assert loopkeeper.submit(via_sync_to_async).result(timeout=10) == "ran"
        sys.stdout.flush()
        pid = fork()
        if pid == 0:
            try:
                outcome = loopkeeper.submit(via_sync_to_async).result(timeout=10)
            except BaseException as exc:
                outcome = repr(exc)
            os.write(1, (json.dumps({"child": outcome}) + "\\n").encode())
            os._exit(0)
        wait_for_child(pid)
        """,
    )

    result = _run(script)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"child": "ran"}, result.stdout


@needs_fork
def test_add_done_callback_in_a_forked_child_never_takes_the_parents_lock(
    tmp_path: Path,
) -> None:
    """In a forked child, ``add_done_callback`` on a parent's handle touches no lock of the
    parent's runner (another parent thread held it at the fork): on a finished handle the
    callback runs at once, on an unfinished one it raises ``RuntimeError`` (its outcome
    cannot be known there), as ``result()`` does."""
    script = _script(
        tmp_path,
        """
        import asyncio
        import json
        import os
        import sys
        import threading
        import warnings

        import loopkeeper
        """,
        OS_FORK,
        WAIT_FOR_CHILD,
        """
        runner = loopkeeper.Runner(name="parent-runner")
        finished = runner.submit(asyncio.sleep, 0, "done")
        assert finished.result(timeout=10) == "done"
        unfinished = runner.submit(asyncio.Event().wait)
        held = threading.Event()
        release = threading.Event()


        def hold_the_ledger_lock():
            with runner._ledger.lock:
                held.set()
                release.wait(30)


        holder = threading.Thread(target=hold_the_ledger_lock)
        holder.start()
        assert held.wait(10)
        sys.stdout.flush()
        pid = fork()
        if pid == 0:
            seen = {}
            finished.add_done_callback(lambda h: seen.update(finished=h.result()))
            try:
                unfinished.add_done_callback(lambda h: None)
            except RuntimeError as exc:
                seen["unfinished"] = "RuntimeError: " + str(exc)
            else:
                seen["unfinished"] = "accepted"
            os.write(1, (json.dumps({"child": seen}) + "\\n").encode())
            os._exit(0)
        wait_for_child(pid)
        release.set()
        holder.join(10)
        unfinished.cancel()
        runner.shutdown(timeout=10)
        """,
    )

    result = _run(script)

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])["child"]
    assert seen["finished"] == "done", result.stdout
    assert seen["unfinished"].startswith("RuntimeError: "), seen
    assert "forked child" in seen["unfinished"]


# -- one default runner per process --------------------------------------------------------


def test_configure_after_get_runner_reconfigures_the_one_default_runner_in_place(
    tmp_path: Path,
) -> None:
    """``configure()`` after ``get_runner()`` (but before the first submit) changes that
    same runner: a caller that held it starts the configured runner, and the process has
    one default loop thread, under the configured name."""
    script = _script(
        tmp_path,
        """
        import json
        import threading

        import loopkeeper

        held = loopkeeper.get_runner()
        loopkeeper.configure(name="configured", shutdown_timeout=3, max_threads=2)
        assert held.submit(lambda: 42).result(timeout=10) == 42
        assert loopkeeper.submit(lambda: 43).result(timeout=10) == 43
        print(json.dumps({
            "same": held is loopkeeper.get_runner(),
            "options": [held.name, held.shutdown_timeout, held.max_threads],
            "loop_threads": sorted(
                t.name for t in threading.enumerate() if t.name in ("loopkeeper", "configured")
            ),
            "workers": sorted({t.name.rsplit("-", 1)[0] for t in threading.enumerate()
                               if "-worker-" in t.name}),
        }), flush=True)
        """,
    )

    result = _run(script)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "same": True,
        "options": ["configured", 3, 2],
        "loop_threads": ["configured"],
        "workers": ["configured-worker"],
    }
