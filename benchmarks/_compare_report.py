"""The report of ``compare``: one row per case with ratios, the limits table, the stage profile, the plots."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import cdf_points, progress
from ._peers import VARIANTS

PLOT_RATE = 5000.0  # the rate whose latency distributions are drawn

#: Figures compared with the recorder's at the same rate (row key -> larger is better).
FIGURES: dict[str, bool] = {
    "throughput_per_s": True, "call_p50_us": False, "call_p99_us": False, "lat_p50_ms": False,
    "lat_p99_ms": False, "lat_p999_ms": False, "lat_max_ms": False, "writer_cpu_pct": False,
    "cpu_us_per_record": False, "writer_cpu_us_per_record": False, "writer_rss_mib": False, "all_rss_mib": False,
}
COLORS = {"recorder": "C0", "reference": "k", "flock": "C1", "flock-fsync": "C3", "logging": "C2", "sqlite": "C4",
          "sqlite-100": "C5"}


def rate_label(rate: float) -> str:
    """``1k/s``, ``500/s`` or ``unpaced``."""
    if rate <= 0:
        return "unpaced"
    return f"{rate / 1000:g}k/s" if rate >= 1000 else f"{rate:g}/s"


def median_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (rate, variant), in first-run order, the run with the median p99 time until durable (or written)."""
    by_case: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault((r["rate"], r["variant"]), []).append(r)
    chosen = []
    for runs in by_case.values():
        runs = sorted(runs, key=lambda r: r["lat_ms"]["p99"])
        chosen.append(runs[(len(runs) - 1) // 2] | {"runs": len(runs)})
    return chosen


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case, with each figure's ratio to the recorder's at the same rate."""
    rows = []
    for r in results:
        c, lat = r["call_us"], r["lat_ms"]
        rows.append({
            "variant": r["variant"], "label": VARIANTS[r["variant"]].label, "rate": r["rate"],
            "rate_label": rate_label(r["rate"]), "durability": VARIANTS[r["variant"]].durability,
            "durable": r["durable"], "records": r["records"], "throughput_per_s": r["throughput_per_s"],
            "call_p50_us": c["p50"], "call_p99_us": c["p99"], "lat_p50_ms": lat["p50"], "lat_p99_ms": lat["p99"],
            "lat_p999_ms": lat["p99.9"], "lat_max_ms": lat["max"], "writer_cpu_pct": r["writer"]["cpu_pct"],
            "cpu_us_per_record": r["cpu_us_per_record"], "writer_cpu_us_per_record": r["writer_cpu_us_per_record"],
            "writer_rss_mib": r["writer"]["rss_peak_mib"],
            "all_rss_mib": r["all_rss_peak_mib"], "other_cpu_cores": r["other_cpu_cores"],
            "kept_up": r["rate"] <= 0 or (r["records"] >= 0.97 * r["rate"] * r["seconds"]
                                          and r["throughput_per_s"] >= 0.95 * r["rate"]),
            "recorder_batch_mean": r.get("recorder_batch_mean"),
            # record() calls that did not wait for room, and those that did (flow control), apart
            "call_unblocked_p99_us": r.get("call_unblocked_us", {}).get("p99"),
            "blocked_calls": r.get("blocked", {}).get("calls"), "blocked_ms": r.get("blocked", {}).get("total_ms"),
            "loadavg": r.get("loadavg"),
        })
    base = {row["rate"]: row for row in rows if row["variant"] == "recorder"}
    for row in rows:
        b = base.get(row["rate"])
        row["ratio"] = {k: (float(f"{row[k] / b[k]:.3g}") if b and b[k] and row[k] is not None else None)
                        for k in FIGURES}
    return rows


# -- report ------------------------------------------------------------------
def _num(v: float | None) -> str:
    if v is None or v != v:
        return "–"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _ratio(x: float | None) -> str:
    if x is None:
        return ""
    if x >= 100:
        return f" ({x:,.0f}×)"
    if x >= 10:
        return f" ({x:.0f}×)"
    return f" ({x:.2g}×)"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison table: figures, each with its ratio to the recorder's at the same rate."""
    cols = [("throughput_per_s", "records/s"), ("call_p50_us", "record() p50 µs"),
            ("call_p99_us", "record() p99 µs"), ("lat_p50_ms", "durable p50 ms"), ("lat_p99_ms", "durable p99 ms"),
            ("lat_p999_ms", "durable p99.9 ms"), ("lat_max_ms", "durable max ms"),
            ("writer_cpu_pct", "writer CPU %"), ("writer_cpu_us_per_record", "writer CPU µs/record"),
            ("cpu_us_per_record", "CPU µs/record (all)"),
            ("writer_rss_mib", "writer peak RSS MiB"), ("all_rss_mib", "all peak RSS MiB")]
    head = ["rate", "variant", "durability", *(h for _, h in cols), "other load (CPUs)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(cols) + 1)]
    for row in rows:
        cells = [row["rate_label"], row["label"], row["durability"]]
        for key, _ in cols:
            text = _num(row[key])
            if key == "throughput_per_s" and not row["kept_up"]:
                text += "↓"
            if key.startswith("lat_") and not row["durable"]:
                text = f"*{text}*"
            if row["variant"] != "recorder":
                text += _ratio(row["ratio"].get(key))
            cells.append(text)
        cells.append(f"{row['other_cpu_cores']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(payload: dict[str, Any], plots: Sequence[str]) -> str:
    """Header (machine, settings, noise), the table, and how to read it."""
    m, s = payload["machine"], payload["settings"]
    db, da = payload["fsync_probe"]["before"], payload["fsync_probe"]["after"]
    fs = m.get("data_fs", {})
    src = payload.get("recorder_source") or {"commit": "?", "uncommitted": []}
    out = [
        f"# compare: the recorder beside simple peers ({payload['created']})",
        "",
        f"- machine: {m['cpu_count']} CPU ({m['cpu_model']}), {m['platform']}, Python {m['python']}; data on "
        f"{fs.get('fstype', '?')} ({fs.get('device', '?')}); recorder {m['libraries']['recorder']} ({m['git']}), "
        f"pydantic {m['libraries']['pydantic']}, pyzmq {m['libraries']['pyzmq']}, SQLite {sqlite3.sqlite_version}",
        f"- command: `{payload['command']}`" + (f" (median of {s['repeat']} runs by p99)" if s["repeat"] > 1 else ""),
        f"- recorder source: {src['commit']}" + (f", with uncommitted changes in {', '.join(src['uncommitted'])}"
                                                  if src["uncommitted"] else ", clean"),
        f"- load: {s['producers']} producer processes, ~1 KB `a3cp_message` dicts, {s['seconds']:g} s per case "
        f"after {s['warmup']:g} s warm-up; recorder sessions: {s['sessions']}; unpaced recorder client buffer "
        f"{s['max_pending_unpaced']:,}; sqlite-100 commits {s['sqlite_batch']} records",
        f"- disk (1 KB append + fdatasync, one at a time): before p50 {db['p50_us']:.0f} µs, p99 {db['p99_us']:.0f} µs, "
        f"max {db['max_us']:.0f} µs; after p50 {da['p50_us']:.0f} µs, p99 {da['p99_us']:.0f} µs, "
        f"max {da['max_us']:.0f} µs",
        f"- config: {s.get('config', '?')} ({s.get('config_digest', 'digest not recorded')}), "
        f"a3cp_message durability {s.get('durability', '?')}, hash {s.get('hash', '?')}; 1-minute load average "
        f"at the end of the cases: {_loads(payload['summary'])}",
        "",
        markdown_table(payload["summary"]),
        "",
        "Ratios in parentheses: the figure divided by the recorder's at the same rate in this run (records/s: "
        "higher is better; every other column: lower is better). *Italic* latencies are never durable: the "
        "time until the write returned into the page cache. ↓: fewer records/s than offered (the writer could "
        "not keep up). Writer CPU: the recorder process, or the reference server (100% = one core); for the "
        "peers, the producers themselves, which do the writing; µs/record: that CPU per record. CPU µs/record "
        "(all): producers + recorder (or reference server) + supervisor. "
        "Peak RSS: VmHWM; writer = the recorder process, or the sum of the producers for the peers; all = "
        "every process of the variant. Other load: CPUs that other processes of the machine used meanwhile.",
    ]
    limits = limits_table(payload["summary"])
    if limits:
        out += ["", "## Against the limit", "", limits, "", LIMITS_NOTE]
    if s.get("profile"):
        out += ["", "## Recorder CPU by stage (`--profile`)", "", profile_table(payload["results"])]
    if payload["failed"]:
        out += ["", f"Failed cases: {', '.join(payload['failed'])}"]
    if plots:
        out += [""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"


def _loads(rows: Sequence[dict[str, Any]]) -> str:
    loads = [row["loadavg"][0] for row in rows if row.get("loadavg")]
    return f"{min(loads):.2f}-{max(loads):.2f}" if loads else "not recorded"


LIMITS_NOTE = (
    "Per rate, from the rows above. ÷: the recorder's figure divided by the reference's (or SQLite-100's); "
    "records/s: higher is better, the rest lower. Durable p99 ÷ reference only at paced rates (unpaced it is "
    "queueing in the clients). Process: CPU of the recorder process (or the reference server) alone; all: "
    "producers + that process + the supervisor. record() p99 counts only the calls that did not wait for room; "
    "the calls that waited (flow control: a full client buffer) are counted apart with their total time.")


def limits_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per rate: the recorder against the reference variant and SQLite-100 (empty without a recorder row)."""
    by = {(row["rate"], row["variant"]): row for row in rows}
    rates = list(dict.fromkeys(row["rate"] for row in rows if row["variant"] == "recorder"))
    if not rates:
        return ""

    def div(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}" if a is not None and b and a == a and b == b else "–"

    def fig(row: dict[str, Any] | None, key: str) -> float | None:
        return None if row is None else row.get(key)

    head = ["rate", "recorder records/s", "reference records/s", "÷ reference", "SQLite-100 records/s",
            "÷ SQLite-100", "recorder durable p99 ms", "reference durable p99 ms", "÷ reference",
            "recorder CPU µs/record: process", "all", "reference CPU µs/record: process", "all",
            "recorder record() p99 µs (not blocked)", "record() calls blocked (ms)", "load avg (1 min)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for rate in rates:
        rec, ref, sq = by[(rate, "recorder")], by.get((rate, "reference")), by.get((rate, "sqlite-100"))
        paced = rate > 0
        blocked = "–" if rec.get("blocked_calls") is None else f"{rec['blocked_calls']:,} ({_num(rec['blocked_ms'])})"
        cells = [rec["rate_label"], _num(rec["throughput_per_s"]), _num(fig(ref, "throughput_per_s")),
                 div(rec["throughput_per_s"], fig(ref, "throughput_per_s")), _num(fig(sq, "throughput_per_s")),
                 div(rec["throughput_per_s"], fig(sq, "throughput_per_s")), _num(rec["lat_p99_ms"]),
                 _num(fig(ref, "lat_p99_ms")), div(rec["lat_p99_ms"], fig(ref, "lat_p99_ms")) if paced else "–",
                 _num(rec["writer_cpu_us_per_record"]), _num(rec["cpu_us_per_record"]),
                 _num(fig(ref, "writer_cpu_us_per_record")), _num(fig(ref, "cpu_us_per_record")),
                 _num(rec.get("call_unblocked_p99_us")), blocked,
                 f"{rec['loadavg'][0]:.2f}" if rec.get("loadavg") else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_table(results: Sequence[dict[str, Any]]) -> str:
    """The recorder's CPU µs/record by thread and by stage (its stats' ``profile``), one column per rate.

    Where the recorder does not report a profile, only its process CPU (user, system) is shown.
    """
    recs = [r for r in results if r["variant"] == "recorder"]
    refs = {r["rate"]: r for r in results if r["variant"] == "reference"}
    if not recs:
        return "profile: no recorder case in this run"
    rows: dict[str, list[str]] = {}

    def put(name: str, i: int, seconds: float | None, records: int) -> None:
        rows.setdefault(name, ["–"] * len(recs))[i] = _num(seconds / records * 1e6) if seconds is not None \
            and records else "–"

    for i, r in enumerate(recs):
        cpu, n = r.get("server_cpu") or {}, r["records"]
        put("recorder process: user", i, cpu.get("user_s"), n)
        put("recorder process: system", i, cpu.get("system_s"), n)
        put("recorder process: total", i, r["writer"]["cpu_s"], n)
        prof = r.get("profile")
        if prof and prof.get("records"):
            pn = prof["records"]
            rows.setdefault("records per frame", ["–"] * len(recs))[i] = _num(pn / prof["frames"]) \
                if prof.get("frames") else "–"
            threads = prof.get("threads_cpu_s") or {}
            for name, sec in sorted(threads.items()):
                put(f"thread {name}", i, sec, pn)
            if threads:  # what no profiled thread accounts for: ZeroMQ's I/O thread, the interpreter's
                put("threads not profiled", i, max(0.0, r["writer"]["cpu_s"] - sum(threads.values())), n)
            for name, sec in prof.get("stages_s", {}).items():
                put(f"stage {name}", i, sec, pn)
        ref = refs.get(r["rate"])
        put("reference server: total", i, ref["writer"]["cpu_s"] if ref else None, ref["records"] if ref else 0)
    missing = [rate_label(r["rate"]) for r in recs if not (r.get("profile") or {}).get("records")]
    lines = ["| µs/record | " + " | ".join(rate_label(r["rate"]) for r in recs) + " |",
             "|---|" + "---:|" * len(recs)]
    lines += ["| " + name + " | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    if missing:
        lines += ["", f"profile: not reported by this recorder ({', '.join(missing)}): process CPU only"]
    else:
        lines += ["", "Threads and stages from the recorder's own `stats()[\"profile\"]` (cumulative seconds, "
                      "differenced over the measured window, per record it counted)."]
    return "\n".join(lines)


# -- plots -------------------------------------------------------------------
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        progress("matplotlib is not installed: no plots drawn (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(results: list[dict[str, Any]], path: Path) -> Path | None:
    """CDF and tail of the time until durable (or written), and the record() tail, per variant at 5k/s."""
    plt = _pyplot()
    paced = sorted({r["rate"] for r in results if r["rate"] > 0})
    if plt is None or not paced:
        return None
    rate = PLOT_RATE if PLOT_RATE in paced else paced[len(paced) // 2]
    chosen = [r for r in results if r["rate"] == rate]
    fig, (ax_cdf, ax_tail, ax_call) = plt.subplots(1, 3, figsize=(16, 5.4))
    for r in chosen:
        style = {"color": COLORS.get(r["variant"]), "linestyle": "-" if r["durable"] else "--"}
        name = VARIANTS[r["variant"]].label + ("" if r["durable"] else " (written, not durable)")
        xs, cdf = cdf_points(r["lat_hist"])
        xs = [x / 1e3 for x in xs]
        ax_cdf.step(xs, cdf, where="post", label=name, **style)
        tail = [(x, 1 - y) for x, y in zip(xs, cdf) if 1 - y > 0]
        if tail:
            ax_tail.step([t[0] for t in tail], [t[1] for t in tail], where="post", label=name, **style)
        xs, cdf = cdf_points(r["call_hist"])
        tail = [(x, 1 - y) for x, y in zip(xs, cdf) if 1 - y > 0]
        if tail:
            ax_call.step([t[0] for t in tail], [t[1] for t in tail], where="post", label=name, **style)
    for ax in (ax_cdf, ax_tail):
        ax.set_xscale("log")
        ax.set_xlabel("record() to durable (dashed: to write return), ms")
        ax.grid(True, which="both", alpha=0.3)
    ax_cdf.set_ylabel("fraction of records <= x")
    ax_cdf.set_title(f"time until durable at {rate_label(rate)}: CDF")
    ax_tail.set_yscale("log")
    ax_tail.set_ylabel("fraction of records > x")
    ax_tail.set_title("time until durable: tail (1 - CDF)")
    ax_call.set_xscale("log")
    ax_call.set_yscale("log")
    ax_call.set_xlabel("record() call time, µs")
    ax_call.set_ylabel("fraction of calls > x")
    ax_call.set_title("record() call time: tail")
    ax_call.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"recorder vs peers at {rate_label(rate)}, {chosen[0]['producers']} producers", fontsize=10)
    handles, labels = ax_cdf.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_rates(rows: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> Path | None:
    """Records/s, p99 time until durable and record() p99 against the offered rate (log scales)."""
    plt = _pyplot()
    if plt is None or not rows:
        return None
    paced = sorted({r["rate"] for r in rows if r["rate"] > 0})
    x_unpaced = (max(paced) if paced else 1000.0) * 3

    def x_of(rate: float) -> float:
        return rate if rate > 0 else x_unpaced

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = (("throughput_per_s", "records/s achieved"), ("lat_p99_ms", "p99 record() to durable, ms"),
              ("call_p99_us", "record() call p99, µs"))
    for ax, (key, ylabel) in zip(axes, panels):
        for v in dict.fromkeys(r["variant"] for r in rows):
            pts = sorted((x_of(r["rate"]), r[key]) for r in rows if r["variant"] == v and r[key] is not None)
            durable = VARIANTS[v].durable or key == "call_p99_us" or key == "throughput_per_s"
            name = VARIANTS[v].label + ("" if durable or VARIANTS[v].durable else " (written, not durable)")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=COLORS.get(v),
                    linestyle="-" if durable else "--", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [*paced, x_unpaced]
        ax.set_xticks(ticks)
        ax.set_xticklabels([rate_label(t).replace("/s", "") for t in paced] + ["unpaced"])
        ax.minorticks_off()
        ax.set_xlabel("offered records/s (all producers)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if paced:
        axes[0].plot(paced, paced, color="grey", linestyle=":", linewidth=1, label="offered")
    axes[0].set_title("throughput")
    axes[1].set_title("p99 time until durable (dashed: written)")
    axes[2].set_title("record() call time, p99")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"recorder vs peers: {machine['cpu_count']} CPU, {machine.get('data_fs', {}).get('fstype', '?')}, "
                 f"recorder {machine['git']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


