"""The rounds: which metrics run, on which peers, in which order, and where the samples go.

``Run`` starts the peers once, warms them up, then runs each metric round by round with the
peer order rotated every round (A B C, B C A, ...), and records one sample per metric, peer
and round in ``Run.samples`` (``summary.Samples``).  ``MODES`` holds the counts of the quick
and full modes.  A peer that fails a measurement leaves a hole (None) and an entry in
``Run.errors``; it does not sink the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from .child import run_child
from .machine import calibrate
from .metrics import (
    SUBMITTERS,
    measure_drain,
    measure_latency_bursts,
    measure_latency_low,
    measure_latency_mixed,
    measure_submit,
    measure_throughput,
    scaled,
)
from .peers import REFERENCE, Peer
from .report import size_label
from .summary import record

if TYPE_CHECKING:
    from .summary import Samples

KIB: Final = 1024


@contextlib.contextmanager
def collected_heap(no_gc: bool) -> Iterator[None]:
    """Each measurement starts from a collected heap (and, with --no-gc, runs without GC)."""
    gc.collect()
    if no_gc:
        gc.disable()
    try:
        yield
    finally:
        gc.enable()


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


class Run:
    def __init__(
        self, params: Params, peers: list[type[Peer]], use_uvloop: bool, no_gc: bool
    ) -> None:
        self.p = params
        self.peers = peers
        self.use_uvloop = use_uvloop
        self.no_gc = no_gc  # --no-gc: a diagnostic, the cyclic GC off while measuring
        self.samples: Samples = {}
        self.errors: dict[str, str] = {}  # "metric/peer" -> the last error
        self.calibration: list[float] = []
        self.started = time.monotonic()

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def record(self, metric: str, peer: str, rnd: int, value: float | None) -> None:
        record(self.samples, metric, peer, rnd, value)

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
                    with collected_heap(self.no_gc):
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
                with collected_heap(self.no_gc):
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
                with collected_heap(self.no_gc):
                    p50, p99 = measure_latency_low(peer, p.latency_low_n)
                peer.settle()
                self.record("low_p50", cls.name, rnd, p50)
                self.record("low_p99", cls.name, rnd, p99)

            def burst(cls: type[Peer], rnd: int) -> None:
                peer = live[cls.name]
                with collected_heap(self.no_gc):
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
                level = run_child(cls, self.use_uvloop, [n], self.no_gc)[0]
                self.record("rss_mb_100k", cls.name, rnd, level["rss_kb"] / KIB * 100_000 / n)

            self.interleaved("memory", self.peers, p.memory_rounds, memory)
        if "drain" in metrics:

            def drain(cls: type[Peer], rnd: int) -> None:
                with collected_heap(self.no_gc):
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
                    level = run_child(cls, self.use_uvloop, [n], self.no_gc)[0]
                    self.record(f"scale_bytes@{n}", cls.name, rnd, level["rss_kb"] * KIB / n)

            def scale_submit(cls: type[Peer], rnd: int) -> None:
                # One process filled level by level: the sizes are compared seconds apart.
                levels = run_child(cls, self.use_uvloop, sizes, self.no_gc, p.probe_n, p.probes)
                for level in levels:
                    n = level["tasks"]
                    probe = statistics.median(level["probe_ns"])
                    self.record(f"scale_submit@{n}", cls.name, rnd, probe)

            sizes_text = ", ".join(size_label(n) for n in sizes)
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
                    with collected_heap(self.no_gc):
                        res = measure_drain(cls, self.use_uvloop, n)
                    self.record(f"drain_ms@{n}", cls.name, rnd, res.drain_ms)
                    self.record(f"drain_lost@{n}", cls.name, rnd, res.lost)

                self.interleaved(
                    f"drain against pending, {n:,}", scaling_peers, p.drainscale_rounds, drain_n
                )
