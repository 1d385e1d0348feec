"""The measurements made in a fresh interpreter: RSS per pending task, and submit cost with N
tasks pending.

``run_child`` starts ``python -m loopkeeper_bench --child PEER ...``; ``child_main`` runs
there, parks tasks level by level, and prints one JSON line.  A fresh process per peer (and,
for RSS, per size) means nothing but the parked tasks grows its heap.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from time import perf_counter_ns as now
from typing import Any, Final

from .metrics import measure_submit
from .peers import PEERS, WAIT_S, Peer
from .workloads import Countdown, noop_task, parked_task

WARM_TASKS: Final = 200
SETTLE_S: Final = 0.05
PACKAGE_PARENT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        "-m",
        "loopkeeper_bench",
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
    proc = subprocess.run(
        cmd, cwd=PACKAGE_PARENT, capture_output=True, text=True, timeout=1800, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    levels: list[dict[str, Any]] = json.loads(lines[-1])["levels"]
    return levels
