"""The measurements made in the harness's own process: submit cost, throughput, latency, drain.

Each function measures one peer (the task-interleaved latency: several at once) and returns
its figure; the round scheduling, the heap collection before each one and the recording are
``run.Run``'s.  Figures are wall clock, ``time.perf_counter_ns``.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from time import perf_counter_ns as now
from typing import Final

from .peers import WAIT_S, Peer
from .workloads import Countdown, Gate, gated_nap_task, noop_task, stamping_jobs

SUBMITTERS: Final = (1, 8, 64)
LOW_RATE_SPACING_S: Final = 100e-6
BURST_SIZE: Final = 100
BURST_GAP_S: Final = 1e-3
MIN_TASKS: Final = 50


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
