"""The soak's picture: acknowledged operations per second, the outbox's depth and the
projector's lag over time, each fault a labelled line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.chaos.history import NEMESIS, OK, Op


def draw(ops: list[Op], timeline: list[tuple[float, int, int]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = min([op.time for op in ops] + [t for t, _, _ in timeline])
    per_second = Counter(int(op.time - start) for op in ops if op.type == OK)
    seconds = range(max(per_second, default=0) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    top.plot(list(seconds), [per_second.get(s, 0) for s in seconds], linewidth=0.8)
    top.set_ylabel("acknowledged ops/s")
    bottom.plot([t - start for t, _, _ in timeline], [d for _, d, _ in timeline], label="outbox depth", linewidth=0.8)
    bottom.plot([t - start for t, _, _ in timeline], [lag for _, _, lag in timeline], label="projector lag (events)",
                linewidth=0.8)
    bottom.set_ylabel("events")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper right")
    for op in (op for op in ops if op.type == NEMESIS):
        for ax in (top, bottom):
            ax.axvline(op.time - start, color="red" if op.f != "heal" else "green", alpha=0.4, linewidth=0.8)
        top.annotate(op.f, (op.time - start, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                     va="top", ha="right", color="red")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
