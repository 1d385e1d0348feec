"""The command line: options, the run, its result (with the machine's description), the printout.

``main()`` is what ``benchmarks/bench.py`` and ``python -m loopkeeper_bench`` call.  It also
serves the hidden ``--child`` entry that ``child.run_child`` starts in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import logging
import os
import platform
import sys
import time
from typing import Any

from .child import child_main
from .machine import calibration_summary, cpu_model, loopkeeper_source, versions
from .peers import PEERS, uvloop_factory
from .report import goals_side_by_side, report
from .run import ALL_METRICS, MODES, Run


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
    ap.add_argument(
        "--django",
        action="store_true",
        help="instead: enqueue() of a Django task through loopkeeper's backend, a bare "
        "submit() and django-tasks-db (django_enqueue.py; --quick, --rounds, --json, "
        "--markdown and --report apply)",
    )
    ap.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="with --django: django-tasks-db's databases, of: %(default)s",
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
    args = parse_args(argv)
    quiet_loopkeeper_logs()
    if args.django:
        from .django_enqueue import main as django_main  # noqa: PLC0415  imports Django

        return django_main(args)
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
        uvloop_factory()  # fail now, not in every round
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

    run = Run(params, peers, args.uvloop, args.no_gc)
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
            "cyclic_gc": "off while measuring (--no-gc)" if args.no_gc else "on",
            "rounds": params.rounds,
            "params": params.__dict__,
            "versions": versions(),
            "loopkeeper_source": loopkeeper_source(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_s": time.monotonic() - run.started,
            "load_start": load0,
            "load_end": os.getloadavg()[0],
            "calibration_ms": calibration_summary(run.calibration),
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
