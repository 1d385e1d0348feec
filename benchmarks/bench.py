#!/usr/bin/env python3
"""loopkeeper against its peers: side by side, in one run, with ratios paired per round.

Peers (each started once, on its own threads, and kept for every round):

    loopkeeper            loopkeeper.Runner(max_pending=10_000_000, watchdog_threshold=None)
    loopkeeper+watchdog   the same with the default watchdog (3 s) on
    rcts                  asyncio.run_coroutine_threadsafe(coro, loop) on a dedicated loop thread
    limit                 loop.call_soon_threadsafe(loop.create_task, coro): no handle at all,
                          the most one loop thread can do per coroutine
    anyio                 anyio.from_thread.start_blocking_portal(); portal.start_task_soon(fn)
    threadpool            concurrent.futures.ThreadPoolExecutor(32).submit(sync_fn)
    thread-per-task       threading.Thread(target=sync_fn).start()

``--uvloop`` gives every asyncio peer a uvloop loop (loopkeeper through
``Runner(loop_factory=uvloop.new_event_loop)``, anyio through ``use_uvloop``): the ratios
are then against rcts on uvloop.

Method.  Peers are interleaved round by round, the order rotated each round (A B C,
B C A, ...).  Every figure is the median over rounds, shown with its spread (min-max);
every ratio is peer / rcts taken within one round (both measured seconds apart), then the
median over rounds.  Costs (ns, us, MB, ms): below 1 is better than rcts.  Throughput:
above 1 is better.  The harness's own objects are frozen out of the cyclic GC after the
warm-up, and every measurement starts from a collected heap; the GC stays on, as in a
deployment.  A fixed pure-Python loop is timed once per round: its spread shows how
noisy the machine was.

Metrics (wall clock, ``time.perf_counter_ns``; tasks are trivial unless said):

submit      ns per submit() from one thread while the loop runs the tasks; under the GIL
            the caller's time includes the loop's work, so this tracks 1/throughput.
throughput  tasks/s with 1, 8 and 64 submitting threads, from their release to the
            completion of the last task.
latency     submit to the task's first line, p50/p99 in us: at a low rate (one task, then
            time.sleep(100e-6)) and in bursts of 100 back-to-back submits (each burst
            completes, then 1 ms idle).
mixed       the low-rate latency again, each peer interleaved task by task with rcts:
            task i of the two in a random order, each followed by the 100 us sleep.  Both
            meet the same machine in the same moments, so the paired ratio moves by about
            0.01-0.02 between rounds where the block-wise one moves by 0.3.  One pair at a
            time: in a wider mix, peers that share code (rcts, the limit, anyio) would
            keep it warm for each other.  loopkeeper+watchdog sits out.  rcts's figures
            pool its runs with every peer.
memory      RSS growth per 100k pending tasks (parked on an event never set), in a fresh
            child process per peer.
drain       N accepted tasks are parked at a gate; the gate opens (each then sleeps
            10 ms) and the peer's graceful drain is called at once: its duration, and the
            tasks not finished when it returned ("lost").  rcts and limit have no drain
            of their own: the harness waits on asyncio.all_tasks(), as a user would.
scaling     loopkeeper, rcts and limit only, for N = 1k, 10k, 100k and 1M pending (--quick:
            up to 100k).  RSS per pending task: one fresh child process per N (one round:
            RSS barely moves between rounds).  Submit cost with N tasks pending (as
            "submit", median of 3 probes): one child per round, filled level by level and
            probed at each level, so the levels are compared within one process.
drainscale  drain time against pending (2k, 10k, 50k) for the same three peers, and the
            marginal cost per task between sizes (linear: the same on every segment).

Slow peers run fewer tasks (anyio and thread-per-task: 0.1x; thread-per-task memory: 1,000
threads), and every figure is per task or per second; the low-rate latency and the drain
are never scaled.

    ./scripts/bench --quick                       # ~2.5-3.5 minutes; makes .venvs/bench first
    ./scripts/bench                               # full mode (1M pending), ~20 minutes
    ./scripts/bench --quick --uvloop
    ./scripts/bench --quick --peers loopkeeper,rcts,limit --metrics submit,latency
    ./scripts/bench --quick --json out.json --markdown
    ./scripts/bench --report out.json --markdown  # print the tables of a saved run
    ./scripts/bench --goals a.json b.json         # the goal lines of several runs side by side

Not a test: nothing here asserts a duration.  The "Goals of issue 8" table at the end
only reads the ratios against the goal lines.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fnmatch
import functools
import gc
import importlib.metadata
import itertools
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Final

import anyio.from_thread

import loopkeeper

now = time.perf_counter_ns

Job = Callable[[], Any]

WAIT_S: Final = 120.0  # no single measurement may hang the run
POOL_WORKERS: Final = 32  # ThreadPoolExecutor workers (Python's default here: cpus + 4)
SUBMITTERS: Final = (1, 8, 64)
LOW_RATE_SPACING_S: Final = 100e-6
BURST_SIZE: Final = 100
BURST_GAP_S: Final = 1e-3
NAP_S: Final = 0.01  # what each drained task still has to do once its gate opens
MIN_TASKS: Final = 50
WARM_TASKS: Final = 200
SETTLE_S: Final = 0.05
REFERENCE: Final = "rcts"
KIB: Final = 1024
MILLION: Final = 1_000_000


# ------------------------------------------------------------------------------ peers


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
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
        self._factory = _uvloop_factory() if use_uvloop else asyncio.new_event_loop
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
            options["loop_factory"] = _uvloop_factory()
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


# -------------------------------------------------------------------------- workloads


class Countdown:
    """Counts finished tasks and stamps the moment the n-th one finishes.  Any thread."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._counter = itertools.count(1)  # next() is atomic under the GIL
        self.done = threading.Event()
        self.finished_at = 0

    def tick(self) -> None:
        if next(self._counter) == self.n:
            self.finished_at = now()
            self.done.set()

    def completed(self) -> int:
        return int(repr(self._counter)[len("count(") : -1]) - 1

    def wait(self, what: str, timeout: float = WAIT_S) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"{what}: {self.completed()} of {self.n} in {timeout:.0f} s")


def noop_task(kind: str, countdown: Countdown) -> Job:
    tick = countdown.tick
    if kind == "async":

        async def noop() -> None:
            tick()

        return noop

    def noop_sync() -> None:
        tick()

    return noop_sync


def stamping_jobs(
    kind: str, starts: list[int], countdown: Countdown, first: int, n: int
) -> list[Job]:
    """Jobs first..first+n-1; each writes the time of its first line into starts[i]."""
    tick = countdown.tick
    if kind == "async":

        async def stamp(i: int) -> None:
            starts[i] = now()
            tick()

        return [functools.partial(stamp, i) for i in range(first, first + n)]

    def stamp_sync(i: int) -> None:
        starts[i] = now()
        tick()

    return [functools.partial(stamp_sync, i) for i in range(first, first + n)]


class Gate:
    """Parks tasks until opened, on any number of event loops and in plain threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._opened = threading.Event()

    async def wait_async(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            event = self._events.get(loop)
            if event is None:
                event = self._events[loop] = asyncio.Event()
                if self._opened.is_set():
                    event.set()
        await event.wait()

    def wait_sync(self) -> None:
        self._opened.wait()

    def open(self) -> None:
        with self._lock:
            if self._opened.is_set():
                return
            self._opened.set()
            events = list(self._events.items())
        for loop, event in events:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nothing waits
                loop.call_soon_threadsafe(event.set)


def parked_task(kind: str, started: Countdown) -> Job:
    """Starts, then waits forever (an event that is never set)."""
    tick = started.tick
    if kind == "async":
        never = Gate()

        async def parked() -> None:
            tick()
            await never.wait_async()

        return parked
    never_t = threading.Event()

    def parked_sync() -> None:
        tick()
        never_t.wait()

    return parked_sync


def gated_nap_task(kind: str, gate: Gate, started: Countdown, finished: Countdown) -> Job:
    """Starts, waits at the gate, then sleeps NAP_S: opening the gate puts all in flight."""
    if kind == "async":

        async def nap() -> None:
            started.tick()
            await gate.wait_async()
            await asyncio.sleep(NAP_S)
            finished.tick()

        return nap

    def nap_sync() -> None:
        started.tick()
        gate.wait_sync()
        time.sleep(NAP_S)
        finished.tick()

    return nap_sync


# ---------------------------------------------------------------------------- metrics


def scaled(n: int, scale: float) -> int:
    return max(MIN_TASKS, int(n * scale))


def measure_submit(peer: Peer, n: int) -> float:
    """ns per submit() of n trivial tasks from this thread."""
    countdown = Countdown(n)
    task = noop_task(peer.kind, countdown)
    submit = peer.submit
    t0 = now()
    for _ in range(n):
        submit(task)
    t1 = now()
    countdown.wait("submit")
    return (t1 - t0) / n


def measure_throughput(peer: Peer, n: int, submitters: int) -> float:
    """Tasks per second, n trivial tasks from `submitters` threads released at once."""
    countdown = Countdown(n)
    task = noop_task(peer.kind, countdown)
    submit = peer.submit
    share, extra = divmod(n, submitters)
    released: list[int] = []
    barrier = threading.Barrier(submitters + 1, action=lambda: released.append(now()))

    def submitter(count: int) -> None:
        barrier.wait()
        for _ in range(count):
            submit(task)

    threads = [
        threading.Thread(target=submitter, args=(share + (k < extra),), daemon=True)
        for k in range(submitters)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    countdown.wait(f"throughput T={submitters}")
    for thread in threads:
        thread.join(WAIT_S)
    return n / ((countdown.finished_at - released[0]) / 1e9)


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def _p50_p99(starts: list[int], submitted: list[int]) -> tuple[float, float]:
    lat = sorted((s - t) / 1e3 for s, t in zip(starts, submitted, strict=True))
    return percentile(lat, 50), percentile(lat, 99)


def measure_latency_low(peer: Peer, n: int) -> tuple[float, float]:
    """Submit-to-first-line p50/p99 (us), one task every ~100 us (sleep releases the GIL)."""
    countdown = Countdown(n)
    starts = [0] * n
    submitted = [0] * n
    jobs = stamping_jobs(peer.kind, starts, countdown, 0, n)
    submit = peer.submit
    sleep = time.sleep
    for i in range(n):
        submitted[i] = now()
        submit(jobs[i])
        sleep(LOW_RATE_SPACING_S)
    countdown.wait("latency, low rate")
    return _p50_p99(starts, submitted)


def measure_latency_bursts(peer: Peer, bursts: int) -> tuple[float, float]:
    """p50/p99 (us) over bursts of BURST_SIZE back-to-back submits, each from an idle loop."""
    n = bursts * BURST_SIZE
    starts = [0] * n
    submitted = [0] * n
    submit = peer.submit
    for b in range(bursts):
        countdown = Countdown(BURST_SIZE)
        base = b * BURST_SIZE
        jobs = stamping_jobs(peer.kind, starts, countdown, base, BURST_SIZE)
        for k, job in enumerate(jobs):
            submitted[base + k] = now()
            submit(job)
        countdown.wait(f"burst {b}")
        time.sleep(BURST_GAP_S)
    return _p50_p99(starts, submitted)


def measure_latency_mixed(
    peers: list[Peer], n: int, rng: random.Random
) -> dict[str, tuple[float, float]]:
    """Low-rate p50/p99 (us) of several peers at once: task i of every peer, in a shuffled
    order, each submit followed by ~100 us of sleep, then task i+1.  Each peer still meets
    an idle loop at every submit, and every peer meets the machine in the same moments:
    the pairing is per task, not per block of tasks seconds apart."""
    starts = {peer.name: [0] * n for peer in peers}
    submitted = {peer.name: [0] * n for peer in peers}
    countdowns = {peer.name: Countdown(n) for peer in peers}
    jobs = {
        peer.name: stamping_jobs(peer.kind, starts[peer.name], countdowns[peer.name], 0, n)
        for peer in peers
    }
    order = list(peers)
    sleep = time.sleep
    for i in range(n):
        rng.shuffle(order)
        for peer in order:
            times = submitted[peer.name]
            job = jobs[peer.name][i]
            times[i] = now()
            peer.submit(job)
            sleep(LOW_RATE_SPACING_S)
    for peer in peers:
        countdowns[peer.name].wait(f"latency, mixed, {peer.name}")
    return {peer.name: _p50_p99(starts[peer.name], submitted[peer.name]) for peer in peers}


@dataclasses.dataclass
class DrainResult:
    drain_ms: float
    lost: int


def measure_drain(cls: type[Peer], use_uvloop: bool, n: int) -> DrainResult:
    """A fresh peer; n tasks accepted and parked at a gate; open it, then drain at once."""
    peer = cls(use_uvloop)
    peer.start()
    gate = Gate()
    try:
        expect_started = n if peer.concurrency_limit is None else min(n, peer.concurrency_limit)
        started, finished = Countdown(expect_started), Countdown(n)
        task = gated_nap_task(peer.kind, gate, started, finished)
        for _ in range(n):
            peer.submit(task)
        started.wait("drain: tasks starting")
        gate.open()
        t0 = now()
        peer.drain(WAIT_S)
        t1 = now()
        completed = finished.completed()
    finally:
        gate.open()  # a no-op unless something above failed
        peer.stop()
    return DrainResult((t1 - t0) / 1e6, n - completed)


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child_main(
    peer_name: str, use_uvloop: bool, sizes: list[int], probe_n: int, probes: int, no_gc: bool
) -> None:
    """In a fresh interpreter: park tasks up to each of `sizes` in turn; at each level,
    report the RSS growth since the start and the submit cost (`probes` x `probe_n`
    trivial tasks).  One process per peer and round, so that the levels are compared
    within one process, seconds apart."""
    peer = PEERS[peer_name](use_uvloop)
    peer.start()
    warm = Countdown(WARM_TASKS)
    warm_task = noop_task(peer.kind, warm)
    for _ in range(WARM_TASKS):  # allocator paths, lazily created workers
        peer.submit(warm_task)
    warm.wait("warm-up")
    time.sleep(SETTLE_S)
    gc.collect()
    if no_gc:
        gc.disable()
    rss0 = _status_kb("VmRSS")
    limit = peer.concurrency_limit
    submit = peer.submit
    levels: list[dict[str, Any]] = []
    parked = 0
    for n in sorted(sizes):
        more = n - parked
        # A pool starts only as many as it has workers; the rest wait in its queue.
        expect = more if limit is None else max(0, min(n, limit) - min(parked, limit))
        started = Countdown(max(1, expect))
        task = parked_task(peer.kind, started)
        if expect == 0:
            started.tick()
        t0 = now()
        for _ in range(more):
            submit(task)
        t1 = now()
        started.wait(f"{n:,} parked tasks starting", max(WAIT_S, more * 1e-4))
        parked = n
        time.sleep(SETTLE_S)  # let the last submissions settle in their queues
        rss = _status_kb("VmRSS")
        probe_ns = [measure_submit(peer, probe_n) for _ in range(probes)]
        levels.append(
            {
                "tasks": n,
                "rss_kb": rss - rss0,
                "fill_ns_per_submit": (t1 - t0) / more,
                "probe_ns": probe_ns,
            }
        )
    print(json.dumps({"levels": levels}), flush=True)
    os._exit(0)  # parked tasks and threads are not worth a graceful exit


def run_child(
    cls: type[Peer],
    use_uvloop: bool,
    sizes: list[int],
    no_gc: bool,
    probe_n: int = 0,
    probes: int = 0,
) -> list[dict[str, Any]]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        cls.name,
        "--sizes",
        ",".join(map(str, sizes)),
        "--probe-n",
        str(probe_n),
        "--probes",
        str(probes),
    ]
    if use_uvloop:
        cmd.append("--uvloop")
    if no_gc:
        cmd.append("--no-gc")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    levels: list[dict[str, Any]] = json.loads(lines[-1])["levels"]
    return levels


# ------------------------------------------------------------------------- the runner


NO_GC = False  # --no-gc: a diagnostic, the cyclic GC off while measuring


@contextlib.contextmanager
def collected_heap() -> Iterator[None]:
    """Each measurement starts from a collected heap (and, with --no-gc, runs without GC)."""
    gc.collect()
    if NO_GC:
        gc.disable()
    try:
        yield
    finally:
        gc.enable()


def calibrate() -> float:
    """A fixed pure-Python loop (ms), once per round: its spread shows the machine's noise."""
    t0 = now()
    total = 0
    for i in range(200_000):
        total += i & 7
    return (now() - t0) / 1e6


@dataclasses.dataclass(frozen=True)
class Params:
    rounds: int
    submit_n: int
    throughput_n: int
    throughput_rounds: int
    latency_low_n: int
    latency_bursts: int
    mixed_n: int
    memory_n: int
    memory_rounds: int
    drain_n: int
    drain_rounds: int
    scaling_sizes: tuple[int, ...]
    scaling_rounds: int
    probe_n: int
    probes: int
    drain_sizes: tuple[int, ...]
    drainscale_rounds: int


MODES: Final = {
    "quick": Params(
        rounds=3,
        submit_n=20_000,
        throughput_n=20_000,
        throughput_rounds=3,
        latency_low_n=500,
        latency_bursts=20,
        mixed_n=1_000,
        memory_n=100_000,
        memory_rounds=1,
        drain_n=2_000,
        drain_rounds=3,
        scaling_sizes=(1_000, 10_000, 100_000),
        scaling_rounds=3,
        probe_n=5_000,
        probes=3,
        drain_sizes=(2_000, 10_000, 50_000),
        drainscale_rounds=3,
    ),
    "full": Params(
        rounds=5,
        submit_n=100_000,
        throughput_n=100_000,
        throughput_rounds=3,
        latency_low_n=2_000,
        latency_bursts=100,
        mixed_n=2_000,
        memory_n=100_000,
        memory_rounds=3,
        drain_n=10_000,
        drain_rounds=3,
        scaling_sizes=(1_000, 10_000, 100_000, 1_000_000),
        scaling_rounds=3,
        probe_n=10_000,
        probes=3,
        drain_sizes=(2_000, 10_000, 50_000),
        drainscale_rounds=3,
    ),
}
ALL_METRICS: Final = (
    "submit",
    "throughput",
    "latency",
    "mixed",
    "memory",
    "drain",
    "scaling",
    "drainscale",
)

Samples = dict[str, dict[str, list[float | None]]]  # metric -> peer -> value per round


class Run:
    def __init__(self, params: Params, peers: list[type[Peer]], use_uvloop: bool) -> None:
        self.p = params
        self.peers = peers
        self.use_uvloop = use_uvloop
        self.samples: Samples = {}
        self.errors: dict[str, str] = {}  # "metric/peer" -> the last error
        self.calibration: list[float] = []
        self.started = time.monotonic()

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def record(self, metric: str, peer: str, rnd: int, value: float | None) -> None:
        row = self.samples.setdefault(metric, {}).setdefault(peer, [])
        row.extend([None] * (rnd + 1 - len(row)))  # a failed round stays None
        row[rnd] = value

    def interleaved(
        self,
        what: str,
        peers: list[type[Peer]],
        rounds: int,
        body: Callable[[type[Peer], int], None],
    ) -> None:
        """Round r runs every peer once, the order rotated by r."""
        self.log(f"metric: {what}")
        for rnd in range(rounds):
            self.calibration.append(calibrate())
            shift = rnd % len(peers) if peers else 0
            for cls in peers[shift:] + peers[:shift]:
                try:
                    body(cls, rnd)
                except Exception as exc:  # noqa: BLE001  a broken peer must not sink the run
                    self.errors[f"{what}/{cls.name}"] = f"{type(exc).__name__}: {exc}"
                    self.log(f"  {cls.name}: {type(exc).__name__}: {exc}")

    def mixed(self, live: dict[str, Peer]) -> None:
        """The low-rate latency, each peer interleaved task by task with rcts alone (with
        more peers in the mix, those that share code, as rcts, the limit and anyio do,
        would keep it warm for each other).  Each pair gets its own sample index, so a
        peer's ratio pairs it with the rcts of its own run."""
        ref = live[REFERENCE]
        others = [live[cls.name] for cls in self.peers if cls.in_mixed and cls.name != REFERENCE]
        rng = random.Random(8)  # the same orders in every run
        self.log("metric: latency, low rate, interleaved task by task with rcts")
        index = 0
        for _ in range(self.p.rounds):
            self.calibration.append(calibrate())
            for peer in others:
                try:
                    with collected_heap():
                        figures = measure_latency_mixed([peer, ref], self.p.mixed_n, rng)
                except Exception as exc:  # noqa: BLE001  a broken peer must not sink the run
                    self.errors[f"latency, mixed/{peer.name}"] = f"{type(exc).__name__}: {exc}"
                    self.log(f"  {peer.name}: {type(exc).__name__}: {exc}")
                    continue
                finally:
                    peer.settle()
                    ref.settle()
                for name, (p50, p99) in figures.items():
                    self.record("mix_p50", name, index, p50)
                    self.record("mix_p99", name, index, p99)
                index += 1

    def run(self, metrics: set[str]) -> None:
        p = self.p
        live: dict[str, Peer] = {}
        if metrics & {"submit", "throughput", "latency", "mixed"}:
            for cls in self.peers:
                live[cls.name] = cls(self.use_uvloop)
                live[cls.name].start()
            for cls in self.peers:  # warm-up: caches, lazily created workers
                peer = live[cls.name]
                measure_throughput(peer, scaled(p.throughput_n // 10, cls.task_scale), 8)
                measure_submit(peer, scaled(p.submit_n // 10, cls.task_scale))
                peer.settle()
            # Everything alive now (harness, peers' machinery) leaves the cyclic GC's
            # sight: GC pauses come from the workload, not from the other loaded peers.
            gc.collect()
            gc.freeze()
            self.log(f"started and warmed up: {', '.join(live)}")

        def timed(
            metric: str, measure: Callable[[Peer], float]
        ) -> Callable[[type[Peer], int], None]:
            def body(cls: type[Peer], rnd: int) -> None:
                peer = live[cls.name]
                with collected_heap():
                    value = measure(peer)
                peer.settle()
                self.record(metric, cls.name, rnd, value)

            return body

        if "submit" in metrics:
            self.interleaved(
                "submit",
                self.peers,
                p.rounds,
                timed(
                    "submit_ns",
                    lambda peer: measure_submit(peer, scaled(p.submit_n, peer.task_scale)),
                ),
            )
        if "throughput" in metrics:
            for t in SUBMITTERS:

                def thr(peer: Peer, t: int = t) -> float:
                    return measure_throughput(peer, scaled(p.throughput_n, peer.task_scale), t)

                self.interleaved(
                    f"throughput, {t} submitters",
                    self.peers,
                    p.throughput_rounds,
                    timed(f"thr_{t}", thr),
                )
        if "latency" in metrics:

            def low(cls: type[Peer], rnd: int) -> None:
                peer = live[cls.name]
                with collected_heap():
                    p50, p99 = measure_latency_low(peer, p.latency_low_n)
                peer.settle()
                self.record("low_p50", cls.name, rnd, p50)
                self.record("low_p99", cls.name, rnd, p99)

            def burst(cls: type[Peer], rnd: int) -> None:
                peer = live[cls.name]
                with collected_heap():
                    bursts = max(5, round(p.latency_bursts * cls.task_scale))
                    p50, p99 = measure_latency_bursts(peer, bursts)
                peer.settle()
                self.record("burst_p50", cls.name, rnd, p50)
                self.record("burst_p99", cls.name, rnd, p99)

            self.interleaved("latency, low rate", self.peers, p.rounds, low)
            self.interleaved("latency, bursts", self.peers, p.rounds, burst)
        if "mixed" in metrics and REFERENCE in live:
            self.mixed(live)
        for peer in live.values():
            try:
                peer.drain(30)
            finally:
                peer.stop()
        if live:
            gc.unfreeze()
        if "memory" in metrics:

            def memory(cls: type[Peer], rnd: int) -> None:
                n = scaled(p.memory_n, cls.memory_scale)
                level = run_child(cls, self.use_uvloop, [n], NO_GC)[0]
                self.record("rss_mb_100k", cls.name, rnd, level["rss_kb"] / KIB * 100_000 / n)

            self.interleaved("memory", self.peers, p.memory_rounds, memory)
        if "drain" in metrics:

            def drain(cls: type[Peer], rnd: int) -> None:
                with collected_heap():
                    res = measure_drain(cls, self.use_uvloop, p.drain_n)
                self.record("drain_ms", cls.name, rnd, res.drain_ms)
                self.record("lost", cls.name, rnd, res.lost)

            self.interleaved(f"drain of {p.drain_n:,}", self.peers, p.drain_rounds, drain)
        scaling_peers = [cls for cls in self.peers if cls.in_scaling]
        if "scaling" in metrics and scaling_peers:
            sizes = list(p.scaling_sizes)

            def scale_memory(cls: type[Peer], rnd: int) -> None:
                # One fresh process per size: nothing but the parked tasks grows its heap.
                for n in sizes:
                    level = run_child(cls, self.use_uvloop, [n], NO_GC)[0]
                    self.record(f"scale_bytes@{n}", cls.name, rnd, level["rss_kb"] * KIB / n)

            def scale_submit(cls: type[Peer], rnd: int) -> None:
                # One process filled level by level: the sizes are compared seconds apart.
                levels = run_child(cls, self.use_uvloop, sizes, NO_GC, p.probe_n, p.probes)
                for level in levels:
                    n = level["tasks"]
                    probe = statistics.median(level["probe_ns"])
                    self.record(f"scale_submit@{n}", cls.name, rnd, probe)

            sizes_text = ", ".join(_k(n) for n in sizes)
            self.interleaved(
                f"scaling, RSS per task at {sizes_text} pending", scaling_peers, 1, scale_memory
            )
            self.interleaved(
                f"scaling, submit cost at {sizes_text} pending",
                scaling_peers,
                p.scaling_rounds,
                scale_submit,
            )
        if "drainscale" in metrics and scaling_peers:
            for n in p.drain_sizes:

                def drain_n(cls: type[Peer], rnd: int, n: int = n) -> None:
                    with collected_heap():
                        res = measure_drain(cls, self.use_uvloop, n)
                    self.record(f"drain_ms@{n}", cls.name, rnd, res.drain_ms)
                    self.record(f"drain_lost@{n}", cls.name, rnd, res.lost)

                self.interleaved(
                    f"drain against pending, {n:,}", scaling_peers, p.drainscale_rounds, drain_n
                )


# -------------------------------------------------------------------------- summary


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def median_of(samples: Samples, metric: str, peer: str) -> float | None:
    got = _present(samples.get(metric, {}).get(peer, []))
    return statistics.median(got) if got else None


def spread_of(samples: Samples, metric: str, peer: str) -> tuple[float, float] | None:
    got = _present(samples.get(metric, {}).get(peer, []))
    return (min(got), max(got)) if got else None


def paired(samples: Samples, num: tuple[str, str], den: tuple[str, str]) -> float | None:
    """Median over rounds of num/den, each (metric, peer), taken within the same round."""
    a = samples.get(num[0], {}).get(num[1], [])
    b = samples.get(den[0], {}).get(den[1], [])
    ratios = [x / y for x, y in zip(a, b, strict=False) if x is not None and y]
    return statistics.median(ratios) if ratios else None


def ratio_to_ref(samples: Samples, metric: str, peer: str) -> float | None:
    return paired(samples, (metric, peer), (metric, REFERENCE))


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def drain_sizes(samples: Samples) -> list[int]:
    return sorted(int(m.split("@")[1]) for m in samples if m.startswith("drain_ms@"))


def marginal_drain_us(samples: Samples, peer: str, a: int, b: int) -> list[float]:
    """Per round: (drain(b) - drain(a)) / (b - a), in us per task."""
    ms_a = samples.get(f"drain_ms@{a}", {}).get(peer, [])
    ms_b = samples.get(f"drain_ms@{b}", {}).get(peer, [])
    return [
        (y - x) * 1e3 / (b - a)
        for x, y in zip(ms_a, ms_b, strict=False)
        if x is not None and y is not None
    ]


def drain_linearity(samples: Samples, peer: str) -> float | None:
    """Median over rounds of the last segment's marginal cost / the first segment's."""
    sizes = drain_sizes(samples)
    if len(sizes) < 3:  # noqa: PLR2004  two segments are needed
        return None
    first = marginal_drain_us(samples, peer, sizes[0], sizes[1])
    last = marginal_drain_us(samples, peer, sizes[-2], sizes[-1])
    return _median_or_none([y / x for x, y in zip(first, last, strict=False) if x > 0])


# ------------------------------------------------------------------------- reporting

# metric key, header, value format
MAIN_COLUMNS: Final[tuple[tuple[str, str, str], ...]] = (
    ("submit_ns", "submit ns", "{:,.0f}"),
    ("thr_1", "thr/s T=1", "{:,.0f}"),
    ("thr_8", "thr/s T=8", "{:,.0f}"),
    ("thr_64", "thr/s T=64", "{:,.0f}"),
    ("low_p50", "low p50 us", "{:.1f}"),
    ("low_p99", "low p99 us", "{:.1f}"),
    ("burst_p50", "burst p50 us", "{:,.0f}"),
    ("burst_p99", "burst p99 us", "{:,.0f}"),
    ("mix_p50", "mixed p50 us", "{:.1f}"),
    ("mix_p99", "mixed p99 us", "{:.1f}"),
    ("rss_mb_100k", "RSS MB/100k", "{:.1f}"),
    ("drain_ms", "drain ms", "{:,.1f}"),
    ("lost", "lost", "{:.0f}"),
)


def render(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:  # a blank line first: a table must not continue its title's paragraph
        lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]

    def line(r: list[str]) -> str:
        return "  ".join(
            x.ljust(w) if i == 0 else x.rjust(w)
            for i, (x, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def cell(samples: Samples, metric: str, peer: str, fmt: str, what: str) -> str:
    if what == "value":
        value = median_of(samples, metric, peer)
        return "-" if value is None else fmt.format(value)
    if what == "spread":
        spread = spread_of(samples, metric, peer)
        return "-" if spread is None else f"{fmt.format(spread[0])}-{fmt.format(spread[1])}"
    if metric == "lost":
        return "-"
    ratio = ratio_to_ref(samples, metric, peer)
    return "-" if ratio is None else f"{ratio:.2f}"


def main_table(result: dict[str, Any], what: str, markdown: bool) -> str:
    samples: Samples = result["samples"]
    peers = [p for p in result["peers"] if any(p in samples.get(m, {}) for m, _, _ in MAIN_COLUMNS)]
    cols = [c for c in MAIN_COLUMNS if c[0] in samples and not (what == "ratio" and c[0] == "lost")]
    header = ["peer", *[c[1] for c in cols]]
    rows = [[p, *[cell(samples, m, p, fmt, what) for m, _, fmt in cols]] for p in peers]
    return render(header, rows, markdown)


def _k(n: int) -> str:
    return f"{n // MILLION}M" if n >= MILLION else f"{n // 1000}k"


def scaling_tables(result: dict[str, Any], markdown: bool) -> list[str]:
    samples: Samples = result["samples"]
    out: list[str] = []
    sizes = [int(m.split("@")[1]) for m in samples if m.startswith("scale_submit@")]
    if sizes:
        sizes.sort()
        peers = [p for p in result["peers"] if p in samples[f"scale_submit@{sizes[0]}"]]
        for key, title, fmt in (
            (
                "scale_submit",
                "Submit cost (ns per submit, trivial tasks) with N tasks pending",
                "{:,.0f}",
            ),
            ("scale_bytes", "RSS per pending task (bytes) at N pending", "{:,.0f}"),
        ):
            header = ["peer", *[f"N={_k(n)}" for n in sizes], f"{_k(sizes[-1])}/{_k(sizes[0])}"]
            header += [f"vs rcts @{_k(n)}" for n in sizes]
            rows = []
            for p in peers:
                row = [p, *[cell(samples, f"{key}@{n}", p, fmt, "value") for n in sizes]]
                growth = paired(samples, (f"{key}@{sizes[-1]}", p), (f"{key}@{sizes[0]}", p))
                row.append("-" if growth is None else f"{growth:.2f}")
                row += [cell(samples, f"{key}@{n}", p, fmt, "ratio") for n in sizes]
                rows.append(row)
            out += [f"{title}:", render(header, rows, markdown), ""]
    dsizes = drain_sizes(samples)
    if dsizes:
        peers = [p for p in result["peers"] if p in samples[f"drain_ms@{dsizes[0]}"]]
        segments = list(itertools.pairwise(dsizes))
        header = ["peer", *[f"ms N={_k(n)}" for n in dsizes]]
        header += [f"us/task {_k(a)}->{_k(b)}" for a, b in segments]
        if len(segments) > 1:
            header.append("last/first")
        header += ["lost", *[f"ms vs rcts @{_k(n)}" for n in dsizes]]
        rows = []
        for p in peers:
            row = [p, *[cell(samples, f"drain_ms@{n}", p, "{:,.1f}", "value") for n in dsizes]]
            for a, b in segments:
                slope = _median_or_none(marginal_drain_us(samples, p, a, b))
                row.append("-" if slope is None else f"{slope:.2f}")
            if len(segments) > 1:
                growth = drain_linearity(samples, p)
                row.append("-" if growth is None else f"{growth:.2f}")
            lost = sum(sum(_present(samples[f"drain_lost@{n}"].get(p, []))) for n in dsizes)
            row.append(f"{lost:.0f}")
            row += [cell(samples, f"drain_ms@{n}", p, "", "ratio") for n in dsizes]
            rows.append(row)
        out += [
            (
                "Drain time against pending (ms), and its marginal cost per task between "
                "sizes (us; linear = the same on every segment, last/first = 1):"
            ),
            render(header, rows, markdown),
            "",
        ]
    return out


@dataclasses.dataclass(frozen=True)
class Goal:
    text: str
    value: float | None  # loopkeeper's
    reference: float | None  # the same figure for the limit, for scale
    bound: float
    at_most: bool  # the goal is value <= bound (else value >= bound)

    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        ok = self.value <= self.bound if self.at_most else self.value >= self.bound
        return "met" if ok else "NOT met"


def _goal_figures(s: Samples, peer: str) -> list[tuple[str, float | None, float, bool]]:
    """Issue 8's goal lines for one peer: (text, figure, bound, figure must be <= bound)."""
    out: list[tuple[str, float | None, float, bool]] = [
        ("submit cost <= 0.6x rcts", ratio_to_ref(s, "submit_ns", peer), 0.6, True),
        ("throughput T=8 >= 2x rcts", ratio_to_ref(s, "thr_8", peer), 2.0, False),
        (
            "throughput T=64 >= 0.7x its own T=8",
            paired(s, ("thr_64", peer), ("thr_8", peer)),
            0.7,
            False,
        ),
        ("low-rate latency p50 <= 1.0x rcts", ratio_to_ref(s, "low_p50", peer), 1.0, True),
        ("low-rate latency p99 <= 1.2x rcts", ratio_to_ref(s, "low_p99", peer), 1.2, True),
        (
            "low-rate p50 <= 1.0x rcts, task-interleaved",
            ratio_to_ref(s, "mix_p50", peer),
            1.0,
            True,
        ),
        (
            "low-rate p99 <= 1.2x rcts, task-interleaved",
            ratio_to_ref(s, "mix_p99", peer),
            1.2,
            True,
        ),
        ("burst latency p99 <= 0.7x rcts", ratio_to_ref(s, "burst_p99", peer), 0.7, True),
        ("RSS per 100k pending <= 0.5x rcts", ratio_to_ref(s, "rss_mb_100k", peer), 0.5, True),
        ("drain time <= 1.0x rcts", ratio_to_ref(s, "drain_ms", peer), 1.0, True),
    ]
    lost = s.get("lost", {}).get(peer)
    out.append(
        (
            "drain: tasks lost (all rounds) = 0",
            None if lost is None else sum(_present(lost)),
            0,
            True,
        )
    )
    sizes = sorted(int(m.split("@")[1]) for m in s if m.startswith("scale_submit@"))
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for key, what in (("scale_submit", "submit cost"), ("scale_bytes", "RSS per task")):
            growth = paired(s, (f"{key}@{hi}", peer), (f"{key}@{lo}", peer))
            out.append((f"{what} at {_k(hi)} pending <= 1.3x at {_k(lo)}", growth, 1.3, True))
    dsizes = drain_sizes(s)
    if len(dsizes) > 2:  # noqa: PLR2004  two segments are needed
        text = (
            f"drain linear: marginal us/task {_k(dsizes[-2])}->{_k(dsizes[-1])} "
            f"<= 1.3x {_k(dsizes[0])}->{_k(dsizes[1])}"
        )
        out.append((text, drain_linearity(s, peer), 1.3, True))
    return out


def goals(result: dict[str, Any]) -> list[Goal]:
    """Issue 8's goal lines, read off this run (loopkeeper / rcts, paired, median)."""
    s: Samples = result["samples"]
    return [
        Goal(text, value, ref, bound, at_most)
        for (text, value, bound, at_most), (_, ref, _, _) in zip(
            _goal_figures(s, "loopkeeper"), _goal_figures(s, "limit"), strict=True
        )
    ]


def goals_side_by_side(results: list[dict[str, Any]], markdown: bool) -> str:
    """One row per goal line, one column per run (Python version and loop)."""
    columns = [goals(r) for r in results]
    texts: list[str] = []
    for column in columns:
        texts += [g.text for g in column if g.text not in texts]
    header = ["goal"] + [f"{r['meta']['python']} {r['meta']['loop']}" for r in results]
    rows = []
    for text in texts:
        row = [text]
        for column in columns:
            goal = next((g for g in column if g.text == text), None)
            if goal is None or goal.value is None:
                row.append("-")
            else:
                row.append(f"{goal.value:.2f}{'' if goal.verdict() == 'met' else ' NOT met'}")
        rows.append(row)
    return render(header, rows, markdown)


def rounds_text(meta: dict[str, Any]) -> str:
    p = meta.get("params", {})
    if not p:
        return f"rounds {meta['rounds']}"
    return (
        f"rounds: {p['rounds']} (throughput {p['throughput_rounds']}, memory "
        f"{p['memory_rounds']}, drain {p['drain_rounds']}, scaling: memory 1, submit "
        f"{p['scaling_rounds']}, drain against pending {p['drainscale_rounds']})"
    )


def report(result: dict[str, Any], markdown: bool) -> str:
    meta = result["meta"]
    cal = meta["calibration_ms"]
    parts = [
        (
            f"Python {meta['python']} ({meta['implementation']}), event loop: {meta['loop']}, "
            f"{meta['nproc']} CPUs ({meta['cpu']}), mode {meta['mode']}, {rounds_text(meta)}, "
            f"wall {meta['wall_s']:.0f} s, "
            f"load {meta['load_start']:.2f} -> {meta['load_end']:.2f}, "
            f"calibration loop {cal['min']:.1f}-{cal['max']:.1f} ms (median {cal['median']:.1f}); "
            f"loopkeeper {meta['versions'].get('loopkeeper-runner')}, "
            f"anyio {meta['versions'].get('anyio')}, uvloop {meta['versions'].get('uvloop')}; "
            f"measured: {meta.get('loopkeeper_source', '?')}"
        ),
        "",
    ]
    if any(metric in result["samples"] for metric, _, _ in MAIN_COLUMNS):
        parts += [
            "Medians over rounds:",
            main_table(result, "value", markdown),
            "",
            (
                "Ratios to rcts (peer / rcts within a round, median over rounds; costs: <1 is "
                "better, throughput: >1 is better):"
            ),
            main_table(result, "ratio", markdown),
            "",
            "Spread over rounds (min-max):",
            main_table(result, "spread", markdown),
            "",
        ]
    parts += scaling_tables(result, markdown)
    g = goals(result)
    if any(goal.value is not None for goal in g):
        rows = [
            [
                goal.text,
                "-" if goal.value is None else f"{goal.value:.2f}",
                goal.verdict(),
                "-" if goal.reference is None else f"{goal.reference:.2f}",
            ]
            for goal in g
            if goal.value is not None
        ]
        parts += [
            f"Goals of issue 8 (loopkeeper, {meta['loop']}; ratios paired per round):",
            render(["goal", "loopkeeper", "verdict", "limit, same figure"], rows, markdown),
        ]
    if result["errors"]:
        parts += ["", "Errors:", *[f"  {k}: {v}" for k, v in result["errors"].items()]]
    return "\n".join(parts)


# ------------------------------------------------------------------------------ main


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("loopkeeper-runner", "anyio", "uvloop"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # e.g. loopkeeper from PYTHONPATH=src
            out[dist] = loopkeeper.__version__ if dist == "loopkeeper-runner" else None
    return out


def loopkeeper_source() -> str:
    """Where the measured loopkeeper came from: its folder, and the git commit if any."""
    where = os.path.dirname(os.path.abspath(loopkeeper.__file__))
    try:
        rev = subprocess.run(
            ["git", "-C", where, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return where
    return f"{where} at {rev}{' + uncommitted changes' if dirty else ''}"


def quiet_loopkeeper_logs() -> None:
    """loopkeeper's warnings (the shutdown manifest) still get built, but go nowhere.

    A deployment has handlers; without one, Python's last-resort handler would print
    every drain's manifest on stderr.
    """
    logging.getLogger("loopkeeper").addHandler(logging.NullHandler())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="loopkeeper against rcts, the limit, anyio, a thread pool and threads."
    )
    ap.add_argument("--quick", action="store_true", help="small counts (about 2.5-3.5 minutes)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds for every metric (override)")
    ap.add_argument(
        "--peers", default="*", help=f"comma-separated names or globs, of: {', '.join(PEERS)}"
    )
    ap.add_argument(
        "--metrics", default=",".join(ALL_METRICS), help="comma-separated, of: %(default)s"
    )
    ap.add_argument("--uvloop", action="store_true", help="every asyncio peer runs on uvloop")
    ap.add_argument("--json", metavar="PATH", help="also write the result as JSON here")
    ap.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a saved result, exit")
    ap.add_argument(
        "--goals",
        metavar="JSON",
        nargs="+",
        help="print the goal lines of several saved results side by side, exit",
    )
    ap.add_argument("--child", metavar="PEER", help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-gc",
        action="store_true",
        help="diagnostic: the cyclic GC off while measuring (default: on, as deployed)",
    )
    ap.add_argument("--sizes", default="", help=argparse.SUPPRESS)
    ap.add_argument("--probe-n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--probes", type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global NO_GC  # noqa: PLW0603  set once, before anything is measured
    args = parse_args(argv)
    NO_GC = args.no_gc
    quiet_loopkeeper_logs()
    if args.child:
        sizes = [int(n) for n in args.sizes.split(",")]
        child_main(args.child, args.uvloop, sizes, args.probe_n, args.probes, args.no_gc)
        return 0
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            print(report(json.load(f), args.markdown))
        return 0
    if args.goals:
        results = []
        for path in args.goals:
            with open(path, encoding="utf-8") as f:
                results.append(json.load(f))
        print(goals_side_by_side(results, args.markdown))
        return 0
    metrics = {m.strip() for m in args.metrics.split(",") if m.strip()}
    unknown = metrics - set(ALL_METRICS)
    if unknown:
        print(f"unknown metrics: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    patterns = [p.strip() for p in args.peers.split(",") if p.strip()]
    peers = [c for c in PEERS.values() if any(fnmatch.fnmatch(c.name, pat) for pat in patterns)]
    if not peers:
        print(f"no peer matches {args.peers!r}; peers: {', '.join(PEERS)}", file=sys.stderr)
        return 2
    if args.uvloop:
        _uvloop_factory()  # fail now, not in every round
    params = MODES["quick" if args.quick else "full"]
    if args.rounds:
        r = args.rounds
        params = dataclasses.replace(
            params,
            rounds=r,
            throughput_rounds=r,
            memory_rounds=r,
            drain_rounds=r,
            scaling_rounds=r,
            drainscale_rounds=r,
        )

    run = Run(params, peers, args.uvloop)
    loop_name = "uvloop" if args.uvloop else "asyncio"
    names = ", ".join(c.name for c in peers)
    run.log(f"Python {platform.python_version()}, {loop_name}, peers: {names}")
    load0 = os.getloadavg()[0]
    run.run(metrics)
    result: dict[str, Any] = {
        "meta": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "platform": platform.platform(),
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "loop": loop_name,
            "mode": "quick" if args.quick else "full",
            "cyclic_gc": "off while measuring (--no-gc)" if NO_GC else "on",
            "rounds": params.rounds,
            "params": params.__dict__,
            "versions": versions(),
            "loopkeeper_source": loopkeeper_source(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_s": time.monotonic() - run.started,
            "load_start": load0,
            "load_end": os.getloadavg()[0],
            "calibration_ms": {
                "median": statistics.median(run.calibration) if run.calibration else 0.0,
                "min": min(run.calibration, default=0.0),
                "max": max(run.calibration, default=0.0),
            },
        },
        "peers": {cls.name: cls.description for cls in peers},
        "samples": run.samples,
        "errors": run.errors,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    print(report(result, args.markdown))
    return 1 if run.errors else 0  # a peer failed somewhere: the tables have holes


if __name__ == "__main__":
    sys.exit(main())
