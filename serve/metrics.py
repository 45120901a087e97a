"""Prometheus metrics for the API, named by Prometheus' conventions and correct across gunicorn workers.

Names: the `polypseg_` prefix, base units (seconds, shares in [0, 1]), `_total` on counters (the
client adds it to a Counter's name), `_info` for the constant-1 gauge that carries the model's
identity as labels. serve/README.md maps the spec's names (request_count, ...) to these.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it up), every worker writes its samples
to files there and /metrics aggregates all workers' files; the gunicorn `child_exit` hook marks
dead workers, which deletes their `live*` gauge files, so a dead worker's in-flight requests and
model stop counting at once while its counters stay in the totals. Without it (tests, a single
process) the metrics live in a per-app registry, so several apps in one process never collide.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:  # not at run time: the gunicorn master imports this module and needs no onnxruntime
    from serve.predictor import Predictor

_UNPUBLISHED = object()  # before the first publish_model, even "no model" has not been said yet
# Seconds; +Inf is added. 5 ms to 2.5 s, and 0.15 is an edge: the p99 latency SLO (150 ms) is then
# read exactly from one bucket (serve/monitoring/rules/polypseg.yml), not interpolated.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# Predicted polyp share of an image (0 = empty mask, 1 = all polyp); le="0.0" counts empty masks and
# 0.01 sits at the model's min_area_fraction (about 0.01), so "polyp detected" is a bucket edge.
SHARE_BUCKETS = (0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


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
    """Requests, errors, durations, in-flight requests, the model served, and its output shares."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "polypseg_requests",
            "HTTP requests answered",
            ["route", "method", "status", "model_version"],
            registry=r,
        )
        self.errors = Counter(
            "polypseg_errors",
            "HTTP requests answered with a 4xx or 5xx status",
            ["route", "status", "model_version"],
            registry=r,
        )
        self.request_duration = Histogram(
            "polypseg_request_duration_seconds",
            "Time from request start to response",
            ["route", "model_version"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.inference_duration = Histogram(
            "polypseg_inference_duration_seconds",
            "onnxruntime session.run time per /predict",
            ["model_version"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        # livesum: the sum over live workers; a killed worker's file is deleted by mark_process_dead,
        # so requests it never finished do not stay "in flight" forever.
        self.in_flight = Gauge(
            "polypseg_in_flight_requests",
            "Requests being handled now (the scrape that reads this included)",
            registry=r,
            multiprocess_mode="livesum",
        )
        # livemax: 1 when at least one live worker has a model. The master (child_exit) also holds
        # this gauge at 0; under max that never hides a worker's 1, where min would stay 0 for ever.
        self.model_loaded = Gauge(
            "polypseg_model_loaded",
            "1 when a model is loaded and /predict can answer, else 0 (503 at /readyz)",
            registry=r,
            multiprocess_mode="livemax",
        )
        # livemax per label set: one series per model served by a live worker; a version served only
        # by dead or replaced workers disappears with their files (mark_process_dead).
        self.model_info = Gauge(
            "polypseg_model_info",
            "The model served: constant 1, its identity in the labels",
            ["model_version", "artifact_version", "git_sha", "data_rev", "precision", "threshold"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.predicted_polyp_share = Histogram(
            "polypseg_predicted_polyp_share",
            "Share of the image's pixels in the predicted mask at the model's threshold, per /predict 200",
            ["model_version"],
            buckets=SHARE_BUCKETS,
            registry=r,
        )
        # Requests count once whatever they carry; this counts images, so a batch's share of the work
        # shows as the ratio of the two rates.
        self.images = Counter(
            "polypseg_images",
            "Images predicted by /predict (one per single-image request, n per batch request)",
            ["model_version"],
            registry=r,
        )
        self.rejected = Counter(
            "polypseg_rejected_requests",
            "/predict requests not computed: overloaded (429), queue_timeout (503), client_gone (499)",
            ["reason"],
            registry=r,
        )
        self.lost = Counter(
            "polypseg_lost_requests",
            "Requests in flight in a worker that died before answering (also counted as 500)",
            ["route"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "polypseg_shadow_dropped",
            "Shadow copies not written or cut short: input_too_large, total_cap, write_error; pruned",
            ["reason"],
            registry=r,
        )
        self._published: object = _UNPUBLISHED
        self._info_labels: tuple[str, ...] = ()

    def observe_request(
        self, route: str, method: str, status: int, model_version: str, seconds: float
    ) -> None:
        self.requests.labels(route, method, str(status), model_version).inc()
        self.request_duration.labels(route, model_version).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status), model_version).inc()

    def publish_model(self, predictor: Predictor | None) -> None:
        """Set polypseg_model_loaded and polypseg_model_info to `predictor` (None: no model).

        Cheap when nothing changed, so it can run on every request.
        """
        if predictor is self._published:
            return
        labels: tuple[str, ...] = ()
        if predictor is not None:
            m = predictor.meta
            labels = (m.version, m.artifact_version, m.git_sha, m.data_rev, m.precision, str(m.threshold))
        if self._info_labels and self._info_labels != labels:
            # remove() does not reach multiprocess files: a 0 is what a changed model leaves behind.
            self.model_info.labels(*self._info_labels).set(0)
        if labels:
            self.model_info.labels(*labels).set(1)
        self.model_loaded.set(1 if labels else 0)
        self._published, self._info_labels = predictor, labels

    def render(self) -> bytes:
        """The exposition text: all workers' samples in multiprocess mode, else this app's."""
        path = multiprocess_dir()
        if path:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)
            return generate_latest(registry)
        return generate_latest(self.registry)
