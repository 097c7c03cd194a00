"""The experiment: one bursty request trace through each algorithm, side by side.

    make experiment-rate_limiter        # or: python -m rate_limiter.experiment [out.png]

Every algorithm gets the same limit (10 requests per 10 s) and the same trace: a steady
trickle, a burst straddling a window boundary (t = 9-11 s), bulk requests of 4 units, and a
second burst later. The decisions come from the real algorithms (the in-memory backend, on
a simulated clock, so the run is exact and repeatable). It prints, for each algorithm, what
it admitted and the most it admitted within any 10 s span (the boundary burst), and draws
admitted and refused requests over time, one panel per algorithm (PNG).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rate_limiter.algorithms import US, Algorithm, Limit
from rate_limiter.backends.memory import MemoryBackend

RATE, PERIOD = 10, 10.0
OUT = Path(__file__).resolve().parent / "experiment.png"

# (name shown, the limit): Envoy's fixed window is a fixed window that counts refused hits.
LIMITS: list[tuple[str, Limit]] = [
    ("fixed window", Limit(RATE, PERIOD, Algorithm.FIXED_WINDOW)),
    ("Envoy's fixed window", Limit(RATE, PERIOD, Algorithm.FIXED_WINDOW, count_refused=True)),
    ("sliding window", Limit(RATE, PERIOD, Algorithm.SLIDING_WINDOW)),
    ("sliding log", Limit(RATE, PERIOD, Algorithm.SLIDING_LOG)),
    ("GCRA", Limit(RATE, PERIOD, Algorithm.GCRA)),
]


def trace() -> list[tuple[float, int]]:
    """(seconds, cost) of each request, in time order."""
    requests = [(t * 0.5, 1) for t in range(1, 80, 3)]  # a trickle: one every 1.5 s
    requests += [(8.9 + i * 0.1, 1) for i in range(20)]  # a burst across t = 10 s
    requests += [(15.0, 4), (36.0, 4), (36.1, 4)]  # bulk requests, 4 units each
    requests += [(28.0 + i * 0.05, 1) for i in range(20)]  # a second burst
    return sorted(requests)


@dataclass
class Run:
    name: str
    limit: Limit
    admitted: list[tuple[float, int]]
    refused: list[tuple[float, int]]

    @property
    def units(self) -> int:
        return sum(cost for _, cost in self.admitted)

    def worst_span(self) -> int:
        """The most units admitted within any `PERIOD`-long span."""
        times = [(t, c) for t, c in self.admitted]
        return max((sum(c for u, c in times if t <= u < t + PERIOD) for t, _ in times), default=0)


def run(name: str, limit: Limit, requests: list[tuple[float, int]]) -> Run:
    now = [0]
    backend = MemoryBackend(clock=lambda: now[0])
    start = 1_700_000_000 * US  # (a whole number of periods: windows start at t = 0, 10, ...)
    out = Run(name, limit, [], [])
    for t, cost in requests:
        now[0] = start + round(t * US)
        decision = backend.acquire_sync("trace", limit, cost)
        (out.admitted if decision.allowed else out.refused).append((t, cost))
    return out


def runs() -> list[Run]:
    requests = trace()
    return [run(name, limit, requests) for name, limit in LIMITS]


def chart(results: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 1.6 * len(results)), sharex=True)
    for ax, r in zip(axes, results, strict=True):
        for points, colour, label in ((r.admitted, "tab:green", "admitted"),
                                      (r.refused, "tab:red", "refused")):  # fmt: skip
            ax.vlines([t for t, _ in points], 0, [c for _, c in points], colour, label=label)
        for boundary in range(0, 41, round(PERIOD)):
            ax.axvline(boundary, color="grey", linewidth=0.5, linestyle=":")
        ax.set_ylim(0, 4.5)
        ax.set_yticks([])
        ax.set_ylabel(r.name, rotation=0, ha="right", va="center", fontsize=9)
        ax.text(40.5, 2.0, f"{r.units} admitted\nworst 10 s: {r.worst_span()}", fontsize=8)
    axes[0].legend(loc="upper right", fontsize=8, ncol=2)
    axes[-1].set_xlabel("seconds (limit: 10 per 10 s; dotted lines: window boundaries)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    results = runs()
    requests = trace()
    print(f"{len(requests)} requests, {sum(c for _, c in requests)} units; limit 10 per 10 s")
    print(f"{'algorithm':<22} {'admitted':>9} {'refused':>8} {'worst 10 s span':>16}")
    for r in results:
        refused = sum(c for _, c in r.refused)
        print(f"{r.name:<22} {r.units:>9} {refused:>8} {r.worst_span():>16}")
    chart(results, path)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()
