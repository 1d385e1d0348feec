"""Submit cost and RSS per pending task of two builds of loopkeeper, side by side in one run.

    python benchmarks/compare_builds.py BEFORE [AFTER] [--rounds 7] [--tasks 100000]

BEFORE and AFTER are git refs (AFTER defaults to the working tree).  Each is exported to a
temporary directory; every round runs, in a fresh interpreter each, the benchmark's child
(``loopkeeper_bench --child``) for ``rcts`` (``run_coroutine_threadsafe``, the reference
that shows how noisy the round was), BEFORE and AFTER, in a rotating order: it parks
``--tasks`` tasks, then times batches of trivial submits with them all pending.  Printed:
the medians over rounds of RSS per pending task, of the submit cost while filling, and of
the submit cost with all of them pending, and AFTER/BEFORE as the median of the per-round
ratios (so a noisy round moves both sides of its ratio).

Not a test: nothing asserts a duration.  See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def export(ref: str, into: Path) -> Path:
    """``src/`` of ``ref`` under ``into``; the working tree's ``src/`` for ``ref`` "." ."""
    if ref == ".":
        return ROOT / "src"
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into / ref, filter="data")
    return into / ref / "src"


def child(peer: str, src: Path | None, tasks: int, probe_n: int, probes: int) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(HERE)])
    else:
        env["PYTHONPATH"] = str(HERE)
    cmd = [sys.executable, "-m", "loopkeeper_bench", "--child", peer, "--sizes", str(tasks)]
    cmd += ["--probe-n", str(probe_n), "--probes", str(probes)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{peer} child failed: {done.stderr[-800:]}")
    (level,) = json.loads(done.stdout.strip().splitlines()[-1])["levels"]
    level["probe"] = statistics.median(level["probe_ns"])
    level["rss_per_task"] = level["rss_kb"] * 1024 / tasks
    return dict(level)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after", nargs="?", default=".")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--probe-n", type=int, default=2_000)
    ap.add_argument("--probes", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        builds = {
            args.before: export(args.before, Path(tmp)),
            args.after: export(args.after, Path(tmp)),
        }
        sides: list[tuple[str, str, Path | None]] = [("rcts", "rcts", None)]
        sides += [(ref, "loopkeeper", src) for ref, src in builds.items()]
        rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in sides}
        for rnd in range(args.rounds):
            order = sides[rnd % len(sides) :] + sides[: rnd % len(sides)]
            for label, peer, src in order:
                rows[label].append(child(peer, src, args.tasks, args.probe_n, args.probes))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    fields = [
        ("rss_per_task", "RSS per pending task (bytes)"),
        ("fill_ns_per_submit", "submit while filling (ns)"),
        ("probe", f"submit with {args.tasks:,} pending (ns)"),
    ]
    before, after = args.before, args.after
    print(
        f"| measure ({args.rounds} rounds, median) | rcts | {before} | {after} | "
        f"{after} / {before} |"
    )
    print("|---|---|---|---|---|")
    for key, title in fields:
        med = {label: statistics.median(r[key] for r in rows[label]) for label in rows}
        ratio = statistics.median(
            a[key] / b[key] for a, b in zip(rows[after], rows[before], strict=True)
        )
        print(
            f"| {title} | {med['rcts']:,.0f} | {med[before]:,.0f} | {med[after]:,.0f} | "
            f"{ratio:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
