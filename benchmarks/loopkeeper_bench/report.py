"""The tables: medians, ratios to rcts and spreads per peer, the scaling tables, and the goal
lines of issue 8 with their verdicts.

Everything here reads a result dict (``meta``, ``peers``, ``samples``, ``errors``), the same
that ``--json`` saves, so ``--report`` and ``--goals`` print a saved run exactly as it was
printed when measured.  Tables are aligned text, or markdown with ``--markdown``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Final

from .machine import calibration_text
from .summary import (
    Samples,
    drain_linearity,
    drain_sizes,
    marginal_drain_us,
    median_of,
    median_or_none,
    paired,
    present,
    ratio_to_ref,
    spread_of,
)

MILLION: Final = 1_000_000

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


def size_label(n: int) -> str:
    """1000 -> "1k", 1000000 -> "1M"."""
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
            growth_label = f"{size_label(sizes[-1])}/{size_label(sizes[0])}"
            header = ["peer", *[f"N={size_label(n)}" for n in sizes], growth_label]
            header += [f"vs rcts @{size_label(n)}" for n in sizes]
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
        header = ["peer", *[f"ms N={size_label(n)}" for n in dsizes]]
        header += [f"us/task {size_label(a)}->{size_label(b)}" for a, b in segments]
        if len(segments) > 1:
            header.append("last/first")
        header += ["lost", *[f"ms vs rcts @{size_label(n)}" for n in dsizes]]
        rows = []
        for p in peers:
            row = [p, *[cell(samples, f"drain_ms@{n}", p, "{:,.1f}", "value") for n in dsizes]]
            for a, b in segments:
                slope = median_or_none(marginal_drain_us(samples, p, a, b))
                row.append("-" if slope is None else f"{slope:.2f}")
            if len(segments) > 1:
                growth = drain_linearity(samples, p)
                row.append("-" if growth is None else f"{growth:.2f}")
            lost = sum(sum(present(samples[f"drain_lost@{n}"].get(p, []))) for n in dsizes)
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
            None if lost is None else sum(present(lost)),
            0,
            True,
        )
    )
    sizes = sorted(int(m.split("@")[1]) for m in s if m.startswith("scale_submit@"))
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for key, what in (("scale_submit", "submit cost"), ("scale_bytes", "RSS per task")):
            growth = paired(s, (f"{key}@{hi}", peer), (f"{key}@{lo}", peer))
            text = f"{what} at {size_label(hi)} pending <= 1.3x at {size_label(lo)}"
            out.append((text, growth, 1.3, True))
    dsizes = drain_sizes(s)
    if len(dsizes) > 2:  # noqa: PLR2004  two segments are needed
        text = (
            f"drain linear: marginal us/task {size_label(dsizes[-2])}->{size_label(dsizes[-1])} "
            f"<= 1.3x {size_label(dsizes[0])}->{size_label(dsizes[1])}"
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
    parts = [
        (
            f"Python {meta['python']} ({meta['implementation']}), event loop: {meta['loop']}, "
            f"{meta['nproc']} CPUs ({meta['cpu']}), mode {meta['mode']}, {rounds_text(meta)}, "
            f"wall {meta['wall_s']:.0f} s, "
            f"load {meta['load_start']:.2f} -> {meta['load_end']:.2f}, "
            f"{calibration_text(meta)}; "
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
