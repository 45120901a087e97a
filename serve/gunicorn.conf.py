"""gunicorn settings for the polypseg API: `gunicorn -c serve/gunicorn.conf.py 'serve.app:get_app()'`.

Sizing: workers x onnxruntime intra-op threads should not exceed the CPU cores the process may
use. POLYPSEG_ORT_THREADS defaults to cores // workers, so the default (2 workers) uses 1 thread
each on a 2-core host. Each worker (serve/worker.py) has POLYPSEG_THREADS threads for socket I/O,
so slow clients wait on threads, not on CPU workers; the CPU work itself is admitted per worker by
serve/admission.py (POLYPSEG_MAX_RUNNING at a time, POLYPSEG_MAX_QUEUE waiting, the rest 429).
Prometheus runs in multiprocess mode so /metrics sums every worker; requests in flight in a worker
that dies are counted by `child_exit` (serve/inflight.py).
"""

import os
import tempfile
from pathlib import Path

# Multiprocess metrics need a directory shared by the workers and emptied at start. It must be set
# before prometheus_client is first imported: the library picks its value store at import time, and
# without the directory every worker would count in private memory that /metrics never sees.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="polypseg-prometheus-")
if not os.environ.get("POLYPSEG_INFLIGHT_DIR"):  # on tmpfs when there is one: rewritten per request
    _shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    os.environ["POLYPSEG_INFLIGHT_DIR"] = tempfile.mkdtemp(prefix="polypseg-inflight-", dir=_shm)

import logging  # noqa: E402

from prometheus_client import multiprocess  # noqa: E402

_cores = len(os.sched_getaffinity(0))

bind = os.environ.get("POLYPSEG_BIND", "127.0.0.1:8000")  # the container sets 0.0.0.0:8000
workers = int(os.environ.get("POLYPSEG_WORKERS", "2"))  # processes, one request at a time each
os.environ.setdefault("POLYPSEG_ORT_THREADS", str(max(1, _cores // workers)))
# gthread plus a read deadline and JSON errors; "sync" (one socket per process) only for comparisons.
worker_class = os.environ.get("POLYPSEG_WORKER_CLASS", "serve.worker.ApiWorker")
threads = int(os.environ.get("POLYPSEG_THREADS", "32"))  # I/O threads per worker (slow uploads wait here)
if worker_class == "sync":
    threads = 1  # gunicorn silently swaps sync for gthread when threads > 1
worker_connections = 4 * threads  # open connections per worker; more wait in the listen backlog
keepalive = 5  # seconds an idle keep-alive connection is kept (in the poller, not on a thread)
timeout = int(os.environ.get("POLYPSEG_TIMEOUT", "30"))  # seconds before a stuck worker is replaced
graceful_timeout = 10  # seconds for in-flight requests on shutdown
max_requests = int(
    os.environ.get("POLYPSEG_MAX_REQUESTS", "0")
)  # recycle workers after N requests; 0 = never
max_requests_jitter = max_requests // 10
preload_app = False  # each worker builds its own onnxruntime session: thread pools do not survive fork
limit_request_line = 4094  # bytes; the body limit is POLYPSEG_MAX_BODY_BYTES, enforced by the app
limit_request_fields = 50
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat off disk (containers)
control_socket_disable = True  # one fixed socket path per user would collide between instances
accesslog = None  # the app writes one JSON line per request itself
errorlog = "-"
loglevel = os.environ.get("POLYPSEG_LOG_LEVEL", "info").lower()
logconfig_dict = {  # gunicorn's own lines as JSON too; its access logger stays silent
    "root": {"level": "WARNING", "handlers": ["json"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["json"], "propagate": False},
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
    },
    "handlers": {
        "json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    },
    "formatters": {"json": {"()": "serve.logs.JsonFormatter"}},
}


def on_starting(server):
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # samples from a previous run would be summed into this one
        stale.unlink()


def post_fork(server, worker):
    from lib.memory import keep_freed_memory
    from serve.logs import capture_native_stderr

    capture_native_stderr()  # libpng/libjpeg warnings become JSON lines, not raw text among them
    keep_freed_memory()  # request buffers are reused, not faulted back in on every request


def child_exit(server, worker):
    """A worker exited: count the requests it never answered, then retire its live metrics.

    mark_process_dead deletes the worker's live gauge files, so its in-flight count and its
    polypseg_model_loaded / polypseg_model_info samples stop counting (livesum / livemax).
    """
    from serve.inflight import take_lost
    from serve.metrics import metrics_for_process

    lost = take_lost(os.environ["POLYPSEG_INFLIGHT_DIR"], worker.pid)
    if lost:
        metrics = metrics_for_process()
        log = logging.getLogger("gunicorn.error")
        for request in lost:
            route = str(request.get("endpoint") or "unmatched")  # the ledger's name for the route
            metrics.lost.labels(route).inc()
            metrics.observe_request(
                route,
                str(request.get("method") or "other"),
                500,
                str(request.get("model_version") or "none"),
                request.get("seconds", 0.0),
            )
            fields = {
                **request,
                "status": 500,
                "error": "worker exited before answering",
                "worker_pid": worker.pid,
            }
            log.error("request lost", extra={"fields": fields})
    multiprocess.mark_process_dead(worker.pid)
