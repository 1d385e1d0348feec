"""The peers: each way of running a task from a synchronous thread that the benchmark compares.

    loopkeeper            loopkeeper.Runner(max_pending=10_000_000, watchdog_threshold=None)
    loopkeeper+watchdog   the same with the default watchdog (3 s) on
    rcts                  asyncio.run_coroutine_threadsafe(coro, loop) on a dedicated loop thread
    limit                 loop.call_soon_threadsafe(loop.create_task, coro): no handle at all,
                          the most one loop thread can do per coroutine
    anyio                 anyio.from_thread.start_blocking_portal(); portal.start_task_soon(fn)
    threadpool            concurrent.futures.ThreadPoolExecutor(32).submit(sync_fn)
    thread-per-task       threading.Thread(target=sync_fn).start()

Each is started once, on its own threads, and serves every round.  ``--uvloop`` gives every
asyncio peer a uvloop loop (loopkeeper through ``Runner(loop_factory=uvloop.new_event_loop)``,
anyio through ``use_uvloop``).  rcts is the reference every ratio divides by.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, Final

import anyio.from_thread

import loopkeeper

Job = Callable[[], Any]

WAIT_S: Final = 120.0  # no single measurement may hang the run
POOL_WORKERS: Final = 32  # ThreadPoolExecutor workers (Python's default here: cpus + 4)
REFERENCE: Final = "rcts"  # every ratio is peer / this peer, within one round


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    import uvloop  # noqa: PLC0415  optional: only --uvloop needs it

    return uvloop.new_event_loop


class Peer:
    """One way of running a task from a synchronous thread."""

    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[str] = "async"  # "async": submit() gets an async function; "sync": a callable
    task_scale: ClassVar[float] = 1.0  # slow peers run this fraction of the task counts
    memory_scale: ClassVar[float] = 1.0
    in_scaling: ClassVar[bool] = False  # measured by the scaling metrics too
    in_mixed: ClassVar[bool] = True  # measured by the task-interleaved latency
    uses_loop: ClassVar[bool] = True  # --uvloop changes it
    concurrency_limit: int | None = None  # tasks running at once at most (pools)

    def __init__(self, use_uvloop: bool) -> None:
        self.use_uvloop = use_uvloop and self.uses_loop

    def start(self) -> None:
        """Bring the peer up; return when submit() may be called."""

    def submit(self, fn: Job) -> object:
        raise NotImplementedError

    def drain(self, timeout: float) -> None:
        """Graceful shutdown: stop accepting, finish the accepted work, release threads."""

    def stop(self) -> None:
        """Abrupt cleanup; safe after drain()."""

    def settle(self) -> None:
        """Between measurements (not timed): release what finished work left behind."""


class LoopThread:
    """An event loop run forever by a daemon thread: what rcts and limit users write."""

    def __init__(self, name: str, use_uvloop: bool) -> None:
        self._name = name
        self._factory = uvloop_factory() if use_uvloop else asyncio.new_event_loop
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def start(self) -> asyncio.AbstractEventLoop:
        ready = threading.Event()

        def main() -> None:
            loop = self._factory()
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                leftovers = asyncio.all_tasks(loop)
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    loop.run_until_complete(asyncio.wait(leftovers, timeout=5))
                loop.close()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self._name}: the event loop did not start")
        return self.loop

    def wait_all_tasks(self, timeout: float) -> bool:
        """Wait for every task on the loop: the drain a bare loop's user has to write.

        Scheduled with run_coroutine_threadsafe (FIFO behind every create_task already
        requested), so the tasks submitted before it are all visible to it.
        """

        async def wait_all() -> bool:
            loop = asyncio.get_running_loop()
            me = asyncio.current_task()
            deadline = loop.time() + timeout
            while True:
                pending = asyncio.all_tasks() - {me}
                if not pending:
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                await asyncio.wait(pending, timeout=remaining)

        return asyncio.run_coroutine_threadsafe(wait_all(), self.loop).result(timeout + 5)

    def stop(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join(30)


class _LoopPeer(Peer):
    def start(self) -> None:
        self._lt = LoopThread(f"bench-{self.name}", self.use_uvloop)
        self.loop = self._lt.start()

    def drain(self, timeout: float) -> None:
        self._lt.wait_all_tasks(timeout)
        self._lt.stop()

    def stop(self) -> None:
        self._lt.stop()


class Limit(_LoopPeer):
    name = "limit"
    description = "loop.call_soon_threadsafe(loop.create_task, coro): no handle (the limit)"
    in_scaling = True

    def submit(self, fn: Job) -> object:
        self.loop.call_soon_threadsafe(self.loop.create_task, fn())
        return None


class Rcts(_LoopPeer):
    name = "rcts"
    description = "asyncio.run_coroutine_threadsafe(coro, loop) -> concurrent.futures.Future"
    in_scaling = True

    def submit(self, fn: Job) -> object:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop)


class Loopkeeper(Peer):
    name = "loopkeeper"
    description = "loopkeeper.Runner(max_pending=10_000_000, watchdog_threshold=None).submit(fn)"
    in_scaling = True
    watchdog: ClassVar[bool] = False

    def start(self) -> None:
        options: dict[str, Any] = {"name": f"bench-{self.name}", "max_pending": 10_000_000}
        if not self.watchdog:
            options["watchdog_threshold"] = None
        if self.use_uvloop:
            options["loop_factory"] = uvloop_factory()
        self._runner = loopkeeper.Runner(**options)
        self._runner.start()

    def submit(self, fn: Job) -> object:
        return self._runner.submit(fn)

    def drain(self, timeout: float) -> None:
        self._runner.shutdown(timeout=timeout)

    def stop(self) -> None:
        self._runner.shutdown(timeout=0)  # idempotent: returns the first report


class LoopkeeperWatchdog(Loopkeeper):
    name = "loopkeeper+watchdog"
    description = "loopkeeper.Runner(max_pending=10_000_000), the default watchdog (3 s) on"
    in_scaling = False
    in_mixed = False  # the same code as loopkeeper on this path: its pair would add nothing
    watchdog = True


class AnyioPortal(Peer):
    name = "anyio"
    description = "anyio.from_thread.start_blocking_portal(); portal.start_task_soon(fn)"
    task_scale = 0.1  # start_task_soon waits for a round trip to the loop thread
    memory_scale = 0.1

    def start(self) -> None:
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal("asyncio", {"use_uvloop": self.use_uvloop})
        )

    def submit(self, fn: Job) -> object:
        return self._portal.start_task_soon(fn)

    def drain(self, timeout: float) -> None:
        self._stack.close()  # leaving the portal waits for its tasks (it takes no deadline)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # the portal is already closed
            self._portal.call(self._portal.stop, True)
        self._stack.close()


class ThreadPool(Peer):
    name = "threadpool"
    description = f"ThreadPoolExecutor(max_workers={POOL_WORKERS}).submit(sync_fn)"
    kind = "sync"
    uses_loop = False

    def start(self) -> None:
        self.concurrency_limit = POOL_WORKERS
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=POOL_WORKERS)

    def submit(self, fn: Job) -> object:
        return self._pool.submit(fn)

    def drain(self, timeout: float) -> None:
        self._pool.shutdown(wait=True)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ThreadPerTask(Peer):
    name = "thread-per-task"
    description = "threading.Thread(target=sync_fn).start()"
    kind = "sync"
    uses_loop = False
    task_scale = 0.1
    memory_scale = 0.01  # 1,000 parked threads, reported per 100k

    def start(self) -> None:
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Job) -> object:
        thread = threading.Thread(target=fn, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    def settle(self) -> None:
        self.drain(WAIT_S)


PEERS: Final[dict[str, type[Peer]]] = {
    cls.name: cls
    for cls in (
        Loopkeeper,
        LoopkeeperWatchdog,
        Rcts,
        Limit,
        AnyioPortal,
        ThreadPool,
        ThreadPerTask,
    )
}
