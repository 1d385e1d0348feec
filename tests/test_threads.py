"""The worker pool behind sync tasks: bounded, reused, one worker kept for the exit drain."""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import types
from collections.abc import Callable

import pytest

from loopkeeper._threads import Token, WorkerPool, prestart_asgiref_thread

WaitUntil = Callable[..., None]
WAIT = 10.0


def _pool_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{prefix}-worker-")]


def _block(gate: threading.Event) -> None:
    assert gate.wait(WAIT)


def test_idle_workers_time_out_but_the_last_one_stays(wait_until: WaitUntil) -> None:
    """Idle workers exit after idle_timeout, except one, kept for work during interpreter exit."""
    pool = WorkerPool("idle", max_threads=4, idle_timeout=0.01)
    gate = threading.Event()
    started = threading.Barrier(5)

    def job() -> None:
        started.wait(WAIT)
        gate.wait(WAIT)

    for _ in range(4):
        pool.submit(job, Token(None))
    started.wait(WAIT)  # four workers exist, all busy
    assert len(_pool_threads("idle")) == 4
    gate.set()
    wait_until(lambda: len(_pool_threads("idle")) == 1, what="idle workers to time out")
    done = threading.Event()
    pool.submit(done.set, Token(None))  # the kept worker still takes work
    assert done.wait(WAIT)
    pool.close()
    wait_until(lambda: not _pool_threads("idle"), what="the last worker to exit")


def test_close_lets_queued_jobs_finish_then_refuses_work(wait_until: WaitUntil) -> None:
    """close() is graceful for what was queued; a submit afterwards raises RuntimeError."""
    pool = WorkerPool("closing", max_threads=1)
    gate = threading.Event()
    ran: list[int] = []
    pool.submit(lambda: _block(gate), Token(None))
    for i in range(3):
        pool.submit(lambda i=i: ran.append(i), Token(None))  # type: ignore[misc]  # default binds the loop var
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(lambda: None, Token(None))
    gate.set()
    wait_until(lambda: ran == [0, 1, 2], what="queued jobs to run")
    wait_until(lambda: not _pool_threads("closing"), what="workers to exit")


def test_busy_counts_only_workers_running_a_job(wait_until: WaitUntil) -> None:
    """busy is 0 when idle, n while n jobs run."""
    pool = WorkerPool("busy", max_threads=3)
    pool.prestart()
    assert pool.busy == 0
    gate = threading.Event()
    for _ in range(3):
        pool.submit(lambda: _block(gate), Token(None))
    wait_until(lambda: pool.busy == 3, what="three busy workers")
    gate.set()
    wait_until(lambda: pool.busy == 0, what="workers to be idle again")
    pool.close()


def test_prestart_asgiref_thread_starts_asgiref_s_thread_sensitive_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Pythons that refuse threads at exit, the runner starts asgiref's single
    thread-sensitive thread early; a shut-down executor is left alone, without error."""
    sync = pytest.importorskip("asgiref.sync")
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lk-asgiref")
    monkeypatch.setattr(sync.SyncToAsync, "single_thread_executor", executor)
    try:
        prestart_asgiref_thread()
        names = [t.name for t in threading.enumerate()]
        assert "lk-asgiref_0" in names
    finally:
        executor.shutdown(wait=True)

    prestart_asgiref_thread()  # shut down: no error, no thread
    assert "lk-asgiref_0" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize(("worker_id", "started"), [(0, False), (1, True)])
def test_prestart_asgiref_thread_starts_nothing_in_a_uwsgi_master(
    monkeypatch: pytest.MonkeyPatch, worker_id: int, started: bool
) -> None:
    """In a uWSGI master (``uwsgi.worker_id()`` is 0) asgiref's thread is not started:
    uWSGI forks its workers without at-fork hooks, and a worker's exit would join the
    master's thread forever.  In a worker it is started as anywhere else."""
    sync = pytest.importorskip("asgiref.sync")
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lk-uwsgi")
    monkeypatch.setattr(sync.SyncToAsync, "single_thread_executor", executor)
    fake = types.ModuleType("uwsgi")
    fake.worker_id = lambda: worker_id  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    try:
        prestart_asgiref_thread()
        assert ("lk-uwsgi_0" in [t.name for t in threading.enumerate()]) is started
    finally:
        executor.shutdown(wait=True)
