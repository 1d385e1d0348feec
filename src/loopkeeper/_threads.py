"""Worker threads that run the blocking parts of tasks.

Owns: the pool's threads, named ``<runner name>-worker-N``, and the queue of jobs for
them.  Any thread may submit a job; workers take jobs in FIFO order.  At most
``max_threads`` workers exist; an idle worker exits after ``idle_timeout`` seconds, except
the last one, which stays for the life of the pool, so that work submitted while the
interpreter shuts down (when Python 3.12.0-3.12.2 refuse to start threads) still has a
thread to run on.  ``close()`` lets queued jobs finish, then the idle workers exit; a
worker stuck in a job is left alone (it is a daemon thread, and shutdown reports it).

This is deliberately not a ``ThreadPoolExecutor``: that refuses new work once
CPython's executor exit hook has run, which is exactly when the exit drain needs it.

After fork, the child never uses a parent's pool (its runner refuses to work there).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from typing import Final

__all__ = ("WorkerPool",)

Job = Callable[[], None]

_STOP: Final = None  # sentinel job: the worker that takes it exits


class WorkerPool:
    """A bounded, reused pool of daemon threads running zero-argument jobs."""

    def __init__(self, prefix: str, max_threads: int, idle_timeout: float = 60.0) -> None:
        self._prefix = prefix
        self._max = max_threads
        self._idle_timeout = idle_timeout
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the counters below
        self._workers = 0  # under _lock: live worker threads
        self._idle = 0  # under _lock: workers waiting for a job
        self._queued = 0  # under _lock: jobs put and not yet taken
        self._busy = 0  # under _lock: workers running a job
        self._closed = False  # under _lock
        self._numbers = itertools.count(1)

    @property
    def busy(self) -> int:
        """Workers running a job now."""
        return self._busy

    def submit(self, job: Job) -> None:
        """Queue ``job``, starting a worker if none is free.  Any thread.

        Raises:
            RuntimeError: the pool is closed, or no worker exists and none can be started.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"worker pool {self._prefix!r} is closed")
            self._queued += 1
            start = self._queued > self._idle and self._workers < self._max
            if start:
                self._workers += 1
        if start:
            try:
                self._start_worker()
            except RuntimeError:  # e.g. "can't create new thread at interpreter shutdown"
                with self._lock:
                    self._workers -= 1
                    if self._workers == 0:
                        self._queued -= 1
                        raise
        self._queue.put(job)

    def prestart(self) -> None:
        """Start the one worker that never times out, now, while threads can start."""
        with self._lock:
            if self._workers or self._closed:
                return
            self._workers += 1
        self._start_worker()

    def close(self) -> None:
        """Let queued jobs finish, then stop every worker as it becomes idle.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = self._workers
        for _ in range(workers):
            self._queue.put(_STOP)

    def _start_worker(self) -> None:
        name = f"{self._prefix}-worker-{next(self._numbers)}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._queue.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._workers > 1 and self._queued == 0 and not self._closed:
                        self._workers -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                if job is _STOP:
                    self._workers -= 1
                    return
                self._queued -= 1
                self._busy += 1
            try:
                job()  # jobs report their own outcome and do not raise
            finally:
                with self._lock:
                    self._busy -= 1
