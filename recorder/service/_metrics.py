"""Prometheus metrics of a supervised recorder: served by the supervisor, gathered at scrape time.

The supervisor outlives recorder crashes, so it serves the endpoint. At
each scrape a custom collector asks the recorder for its stats over the
control socket (the figures of ``recorder stats``); a recorder that does
not answer in time is reported as ``recorder_up 0``. The recording process
runs no HTTP thread and shares no multiprocess directory. Counters restart
from zero with each recorder process, which Prometheus reads as a reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import zmq
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .stats import fetch_stats
from ..exceptions import RecorderError, RecorderUnavailable

__all__ = ["MetricsServer"]

#: top-level counters of the router, by their key in the stats
_COUNTERS = {
    "received": "record frames received",
    "duplicates": "record frames dropped as duplicates (resent after a restart or a stall)",
    "gaps": "record frames that arrived after a gap (the producer is asked to resend)",
    "unknown_producer": "record frames from producers the recorder did not know (asked to say hello)",
    "bad_frames": "frames that could not be decoded or carried a bad producer id",
    "acks_sent": "acknowledgements sent",
    "acks_undeliverable": "acknowledgements that could not be sent",
    "quarantined": "rejected records logged in the quarantine log",
    "quarantine_dropped": "rejected records not logged because the quarantine log is full",
    "audit_events_dropped": "audit events of the recorder that could not be written",
}


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last: beyond every bound) as Prometheus' cumulative ``le`` buckets."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip(bounds, counts):
        total += n
        out.append((repr(float(bound)), total))
    out.append(("+Inf", total + sum(counts[len(bounds):])))
    return out


class _StatsCollector(Collector):
    """Asks the recorder for its stats at every scrape and turns them into metric families."""

    def __init__(self, ctx: zmq.Context[Any], control: str, timeout: float,
                 curve: tuple[bytes, bytes, bytes] | None, restarts: Callable[[], int]) -> None:
        self.ctx = ctx
        self.control = control
        self.timeout = timeout
        self.curve = curve
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        try:
            stats: dict[str, Any] | None = fetch_stats(self.ctx, self.control, self.timeout, self.curve)
        except RecorderUnavailable:
            stats = None
        yield GaugeMetricFamily("recorder_up", "1 if the recorder answered this scrape in time, else 0",
                                value=1 if stats is not None else 0)
        yield CounterMetricFamily("recorder_restarts", "times the supervisor restarted a crashed recorder",
                                  value=self.restarts())
        if stats is not None:
            yield from self._families(stats)

    def _families(self, s: dict[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily("recorder_uptime_seconds", "seconds since this recorder process started",
                                value=s["uptime_s"])
        yield GaugeMetricFamily("recorder_producers", "producers the recorder knows", value=s["producers"])
        for key, doc in _COUNTERS.items():
            yield CounterMetricFamily(f"recorder_{key}", doc, value=s.get(key, 0))
        yield CounterMetricFamily("recorder_cpu_seconds", "CPU time of the recorder process", value=s["cpu_s"])
        yield GaugeMetricFamily("recorder_resident_memory_bytes", "resident memory of the recorder process",
                                value=s["rss_bytes"])
        disk = s["disk"]
        yield GaugeMetricFamily("recorder_disk_free_bytes", "free bytes on the data root's file system",
                                value=disk["free"])
        yield GaugeMetricFamily("recorder_disk_total_bytes", "size of the data root's file system",
                                value=disk["total"])
        yield GaugeMetricFamily("recorder_seal_backlog", "closed segments waiting to be sealed or converted",
                                value=s.get("seal_backlog", 0))
        label = ["schema_type"]
        records = CounterMetricFamily("recorder_records", "records written durably", labels=label)
        nbytes = CounterMetricFamily("recorder_bytes", "record bytes written durably", labels=label)
        batches = CounterMetricFamily("recorder_batches", "batches written (one write and sync each)", labels=label)
        queue = GaugeMetricFamily("recorder_queue_depth", "records waiting for their type's writer", labels=label)
        full = GaugeMetricFamily("recorder_storage_full", "1 while the type refuses records for want of room",
                                 labels=label)
        rejects = CounterMetricFamily("recorder_rejected", "records refused, by schema type and reason code",
                                      labels=["schema_type", "code"])
        accept = CounterMetricFamily("recorder_accepted", "records accepted, by the path that accepted them "
                                     "(fast, reference; disagreements: fast path refused, reference accepted)",
                                     labels=["schema_type", "path"])
        batch = HistogramMetricFamily("recorder_batch_size", "records per written batch", labels=label)
        latency = HistogramMetricFamily("recorder_ack_latency_seconds",
                                        "receipt to durable, per record (the recorder's part of a "
                                        "durable acknowledgement)", labels=label)
        for name, t in s["types"].items():
            records.add_metric([name], t["records"])
            nbytes.add_metric([name], t["bytes"])
            batches.add_metric([name], t["batches"])
            queue.add_metric([name], t["queue_depth"])
            full.add_metric([name], 1 if t.get("storage_full") else 0)
            for code, n in t.get("rejects_by_code", {}).items():
                rejects.add_metric([name, code], n)
            for path, n in t.get("accept", {}).items():
                accept.add_metric([name, path], n)
            if "batch_size_hist" in t:
                h = t["batch_size_hist"]
                batch.add_metric([name], _buckets(h["bounds"], h["counts"]), sum_value=h["sum"])
            if "ack_latency_hist" in t:
                h = t["ack_latency_hist"]
                latency.add_metric([name], _buckets([b / 1e9 for b in h["bounds_ns"]], h["counts"]),
                                   sum_value=h["sum_ns"] / 1e9)
        for name, by_code in s.get("rejects_at_ingress", {}).items():
            for code, n in by_code.items():
                rejects.add_metric([name, code], n)
        yield from (records, nbytes, batches, queue, full, rejects, accept, batch, latency)


class MetricsServer:
    """The supervisor's Prometheus endpoint (``/metrics``) on ``host:port``.

    Args:
        host, port: where to listen (port 0: any free port; see ``url``).
        control: the recorder's control endpoint, asked at each scrape.
        timeout: seconds a scrape waits for the recorder before reporting it down.
        curve: client keys for a CURVE control endpoint.
        restarts: returns the supervisor's restart count.

    Raises:
        RecorderError: the address cannot be listened on.
    """

    def __init__(self, host: str, port: int, control: str, timeout: float,
                 curve: tuple[bytes, bytes, bytes] | None, restarts: Callable[[], int]) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_StatsCollector(self.ctx, control, timeout, curve, restarts))
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        except OSError as e:
            self.ctx.term()
            raise RecorderError(f"metrics: cannot listen on {host}:{port}: {e.strerror or e}") from e
        bound_host, bound_port = self.server.server_address[:2]
        text = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
        shown = f"[{text}]" if ":" in text else text
        self.url = f"http://{shown}:{bound_port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.ctx.term()
