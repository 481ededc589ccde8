"""PNG plots for `orders bench`: latency distributions per load level, and each stage's
throughput beside its same-run baseline. Needs matplotlib (installed by `make bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes the plots for a bench report; returns their paths (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    measured = [m for m in report.get("write_side", []) if m.get("histogram")]
    levels = sorted({m["concurrency"] for m in measured})
    if levels:
        fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4), squeeze=False)
        for ax, level in zip(axes[0], levels):
            for m in (m for m in measured if m["concurrency"] == level):
                edges, counts = m["histogram"]["edges_ms"], m["histogram"]["counts"]
                total = sum(counts) or 1
                cumulative, running = [], 0
                for count in counts:
                    running += count
                    cumulative.append(running / total)
                ax.step(edges[1:], cumulative, where="post", label=m["name"])
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms)")
            ax.set_ylabel("fraction of calls")
            ax.set_title(f"concurrency {level}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle("Latency distribution per load level (same client, same run)")
        fig.tight_layout()
        paths.append(out_dir / "latency.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    stages = throughput_pairs(report)
    if stages:
        fig, ax = plt.subplots(figsize=(2.2 * len(stages) + 2, 4.5))
        xs = range(len(stages))
        ax.bar([x - 0.2 for x in xs], [s[1] for s in stages], width=0.4, label="stage")
        ax.bar([x + 0.2 for x in xs], [s[2] for s in stages], width=0.4, label="baseline")
        for x, (_, value, base, _) in zip(xs, stages):
            ax.annotate(f"{value / base:.2f}x", (x, max(value, base)), ha="center", va="bottom")
        ax.set_xticks(list(xs), [f"{s[0]}\nvs {s[3]}" for s in stages], fontsize=8)
        ax.set_ylabel("per second")
        ax.set_title("Throughput per stage beside its baseline (same run)")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "throughput.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def throughput_pairs(report: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(stage, its rate, its baseline's rate, baseline name) for every stage the report has."""
    pairs: list[tuple[str, float, float, str]] = []
    by = {(m["name"], m["concurrency"]): m["rate"] for m in report.get("write_side", [])}
    top = max((c for _, c in by), default=None)
    if top is not None and ("place_order", top) in by and ("noop", top) in by:
        pairs.append((f"PlaceOrder c{top}", by[("place_order", top)], by[("noop", top)], "no-op RPC"))
    relay = report.get("relay") or {}
    if relay:
        pairs.append(("relay", relay["relay_per_s"], relay["raw_publish_per_s"], "raw publish"))
    projector = report.get("projector") or {}
    if projector.get("projector_per_second") and projector.get("raw_fetch_ack_per_second"):
        pairs.append(("projector", projector["projector_per_second"], projector["raw_fetch_ack_per_second"],
                      "raw fetch+ack"))
    database = report.get("database") or {}
    if database.get("pgbench_tps") and top is not None and ("place_order", top) in by:
        pairs.append(("PlaceOrder", by[("place_order", top)], database["pgbench_tps"], "pgbench ceiling"))
    return pairs
