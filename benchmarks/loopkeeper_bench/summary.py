"""What the samples say: medians, spreads and ratios paired per round.

``Samples`` maps metric -> peer -> one value per round (None where that round failed).  A
ratio is always taken within a round, between figures measured seconds apart, and then the
median over rounds is given.
"""

from __future__ import annotations

import statistics

from .peers import REFERENCE

Samples = dict[str, dict[str, list[float | None]]]  # metric -> peer -> value per round


def record(samples: Samples, metric: str, peer: str, rnd: int, value: float | None) -> None:
    """Round rnd's value of metric for peer; a round that failed stays None."""
    row = samples.setdefault(metric, {}).setdefault(peer, [])
    row.extend([None] * (rnd + 1 - len(row)))
    row[rnd] = value


def present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def median_of(samples: Samples, metric: str, peer: str) -> float | None:
    got = present(samples.get(metric, {}).get(peer, []))
    return statistics.median(got) if got else None


def spread_of(samples: Samples, metric: str, peer: str) -> tuple[float, float] | None:
    got = present(samples.get(metric, {}).get(peer, []))
    return (min(got), max(got)) if got else None


def paired(samples: Samples, num: tuple[str, str], den: tuple[str, str]) -> float | None:
    """Median over rounds of num/den, each (metric, peer), taken within the same round."""
    a = samples.get(num[0], {}).get(num[1], [])
    b = samples.get(den[0], {}).get(den[1], [])
    ratios = [x / y for x, y in zip(a, b, strict=False) if x is not None and y]
    return statistics.median(ratios) if ratios else None


def ratio_to_ref(samples: Samples, metric: str, peer: str) -> float | None:
    return paired(samples, (metric, peer), (metric, REFERENCE))


def median_or_none(values: list[float]) -> float | None:
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
    return median_or_none([y / x for x, y in zip(first, last, strict=False) if x > 0])
