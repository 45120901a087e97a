"""Prometheus metrics for the API, correct across gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it up), every worker writes its samples
to files there and /metrics aggregates all workers' files; the gunicorn `child_exit` hook marks
dead workers. Without it (tests, a single process) the metrics live in a per-app registry, so
several apps in one process never collide.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS_MS = (5, 10, 25, 50, 75, 100, 150, 250, 500, 1000)  # ms; +Inf is added


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


_process_metrics: Metrics | None = None


def metrics_for_process() -> Metrics:
    """The metrics an app should use: one shared set per process in multiprocess mode.

    Multiprocess samples are files keyed by process id; two metric objects of the same name in one
    process would each keep their own running value and overwrite each other's file entries, so a
    gunicorn worker (app and worker class) and the master (child_exit) each share one instance.
    """
    global _process_metrics
    if not multiprocess_dir():
        return Metrics()
    if _process_metrics is None:
        _process_metrics = Metrics()
    return _process_metrics


class Metrics:
    """Request counts, errors and latencies; refusals by reason; requests lost with a dead worker."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_count = Counter(
            "request_count",
            "HTTP requests answered",
            ["endpoint", "method", "status", "model_version"],
            registry=self.registry,
        )
        self.error_count = Counter(
            "error_count",
            "HTTP requests answered with a 4xx or 5xx status",
            ["endpoint", "status", "model_version"],
            registry=self.registry,
        )
        self.request_latency_ms = Histogram(
            "request_latency_ms",
            "Time from request start to response, in milliseconds",
            ["endpoint", "model_version"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )
        self.inference_latency_ms = Histogram(
            "inference_latency_ms",
            "onnxruntime session.run time per /predict, in milliseconds",
            ["model_version"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )

        self.rejected_count = Counter(
            "rejected_count",
            "/predict requests not computed: overloaded (429), queue_timeout (503), client_gone",
            ["reason"],
            registry=self.registry,
        )
        self.lost_request_count = Counter(
            "lost_request_count",
            "Requests in flight in a worker that died before answering (also counted as 500)",
            ["endpoint"],
            registry=self.registry,
        )
        self.shadow_dropped_count = Counter(
            "shadow_dropped_count",
            "Shadow copies not written or cut short: input_too_large, total_cap, write_error; pruned",
            ["reason"],
            registry=self.registry,
        )

    def observe_request(
        self, endpoint: str, method: str, status: int, model_version: str, latency_ms: float
    ) -> None:
        self.request_count.labels(endpoint, method, str(status), model_version).inc()
        self.request_latency_ms.labels(endpoint, model_version).observe(latency_ms)
        if status >= 400:
            self.error_count.labels(endpoint, str(status), model_version).inc()

    def render(self) -> bytes:
        """The exposition text: all workers' samples in multiprocess mode, else this app's."""
        path = multiprocess_dir()
        if path:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)
            return generate_latest(registry)
        return generate_latest(self.registry)
