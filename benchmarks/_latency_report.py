"""The latency benchmark's report: the median run per case, the table rows, the targets, the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import cdf_points, progress

PACED = ("capture", "paced")  # the kinds held to the budget
TARGETS = {"ack_p99_ms": 1.0, "ack_p999_ms": 5.0, "throughput_per_s": 100_000.0}  # issue 4, "Done when"


def median_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case (in first-run order), the run with the median p99 durable-ack latency."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_label.setdefault(r["label"], []).append(r)
    chosen = []
    for runs in by_label.values():
        runs = sorted(runs, key=lambda r: r["ack_ms"]["p99"])
        chosen.append(runs[(len(runs) - 1) // 2] | {"runs": len(runs)})
    return chosen


def row(r: dict[str, Any], budget_ms: float) -> dict[str, Any]:
    """The table row of one case's result."""
    a, c = r["ack_ms"], r["call_us"]
    paced = r["kind"] in PACED
    return {
        "label": r["label"], "kind": r["kind"], "records": r["records"], "target_per_s": r["target_per_s"] or None,
        "throughput_per_s": r["throughput_per_s"], "call_p50_us": c["p50"], "call_p99_us": c["p99"],
        "call_max_us": c["max"], "ack_p50_ms": a["p50"], "ack_p99_ms": a["p99"], "ack_p999_ms": a["p99.9"],
        "ack_max_ms": a["max"], "batch_mean": r["batch_mean"], "recorder_cpu_pct": r["recorder"]["cpu_pct"],
        "recorder_rss_mib": r["recorder"]["rss_peak_mib"],
        "budget": ("ok" if a["p99"] <= budget_ms else "OVER") if paced else "",
        "other_cpu_cores": r["other_cpu_cores"], "runs": r.get("runs", 1), "run": r.get("run", 1),
    }


def print_targets(rows: list[dict[str, Any]]) -> None:
    """The issue's targets beside the measured numbers (informative; the exit status is the budget)."""
    paced = [r for r in rows if r["kind"] == "paced"]
    for r in paced:
        print(f"target {r['label']}: p99 {r['ack_p99_ms']:.3f} ms (target <= {TARGETS['ack_p99_ms']:g}: "
              f"{'met' if r['ack_p99_ms'] <= TARGETS['ack_p99_ms'] else 'missed'}), "
              f"p99.9 {r['ack_p999_ms']:.3f} ms (target <= {TARGETS['ack_p999_ms']:g}: "
              f"{'met' if r['ack_p999_ms'] <= TARGETS['ack_p999_ms'] else 'missed'})")
    for r in rows:
        if r["kind"] == "unpaced":
            print(f"target throughput: {r['throughput_per_s']:,.0f} durable records/s (target >= "
                  f"{TARGETS['throughput_per_s']:,.0f}: "
                  f"{'met' if r['throughput_per_s'] >= TARGETS['throughput_per_s'] else 'missed'})")


def draw_plot(results: list[dict[str, Any]], path: Path, budget_ms: float) -> Path | None:
    """CDF and tail (1 - CDF) of durable-ack latency per case, and the record() call's tail."""
    try:
        import matplotlib
    except ImportError:
        progress("matplotlib is not installed: no plot drawn (pip install matplotlib, or the 'bench' extra)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax_cdf, ax_tail, ax_call = axes
    for r in results:
        for ax_list, hist, scale in (((ax_cdf, ax_tail), r["ack_hist"], 1e-3), ((ax_call,), r["call_hist"], 1.0)):
            xs, cdf = cdf_points(hist)
            xs = [x * scale for x in xs]
            label = f"{r['label']} (n={r['records']:,})"
            for ax in ax_list:
                if ax is ax_cdf:
                    ax.step(xs, cdf, where="post", label=label)
                else:
                    tail = [(x, 1 - y) for x, y in zip(xs, cdf) if 1 - y > 0]
                    if tail:
                        ax.step([t[0] for t in tail], [t[1] for t in tail], where="post", label=label)
    for ax in (ax_cdf, ax_tail):
        ax.axvline(budget_ms, color="red", linestyle="--", linewidth=1, label=f"budget {budget_ms:g} ms")
        ax.axvline(TARGETS["ack_p99_ms"], color="grey", linestyle=":", linewidth=1, label="target p99 1 ms")
        ax.axvline(TARGETS["ack_p999_ms"], color="grey", linestyle="-.", linewidth=1, label="target p99.9 5 ms")
        ax.set_xscale("log")
        ax.set_xlabel("durable-ack latency, record() to ack (ms)")
        ax.grid(True, which="both", alpha=0.3)
    ax_cdf.set_ylabel("fraction of records <= x")
    ax_cdf.set_title("durable-ack latency: CDF")
    ax_tail.set_yscale("log")
    ax_tail.set_ylabel("fraction of records > x")
    ax_tail.set_title("durable-ack latency: tail (1 - CDF)")
    ax_call.set_xscale("log")
    ax_call.set_yscale("log")
    ax_call.set_xlabel("record() call time (µs)")
    ax_call.set_ylabel("fraction of calls > x")
    ax_call.set_title("record() call time: tail")
    ax_call.grid(True, which="both", alpha=0.3)
    ax_call.legend(fontsize=8)
    ax_tail.legend(fontsize=8)
    m = results[0]["machine"]
    fig.suptitle(f"recorder latency: {results[0]['producers']} producers, {results[0]['durability']}, "
                 f"{m['cpu_count']} CPU, {m['data_fs']['fstype']}, recorder {m['git']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
