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


class Metrics:
    """request_count, error_count, request_latency_ms and inference_latency_ms."""

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
