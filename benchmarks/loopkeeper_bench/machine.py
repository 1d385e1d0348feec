"""The machine a run measured on: what it records about it, and how noisy it was.

``calibrate()`` times a fixed pure-Python loop once per round; ``calibration_summary()`` and
``calibration_text()`` put the spread of those times in a result and in its header.  On a
quiet machine the loop takes 4.5-6 ms: more means the run shared the CPU.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
from time import perf_counter_ns as now
from typing import Any

import loopkeeper


def calibrate() -> float:
    """A fixed pure-Python loop (ms), once per round: its spread shows the machine's noise."""
    t0 = now()
    total = 0
    for i in range(200_000):
        total += i & 7
    return (now() - t0) / 1e6


def calibration_summary(times: list[float]) -> dict[str, float]:
    """The calibration times of a run, as its result records them."""
    return {
        "median": statistics.median(times) if times else 0.0,
        "min": min(times, default=0.0),
        "max": max(times, default=0.0),
    }


def calibration_text(meta: dict[str, Any]) -> str:
    cal = meta["calibration_ms"]
    return f"calibration loop {cal['min']:.1f}-{cal['max']:.1f} ms (median {cal['median']:.1f})"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(
    dists: tuple[str, ...] = ("loopkeeper-runner", "anyio", "uvloop"),
) -> dict[str, str | None]:
    """The installed version of each distribution (None: not installed)."""
    out: dict[str, str | None] = {}
    for dist in dists:
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
