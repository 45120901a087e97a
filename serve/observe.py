"""Cross-cutting: request ids, timings, metrics, in-flight accounting, one JSON log line per
request, and JSON errors.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid

import falcon

from serve.inflight import InflightLedger
from serve.metrics import Metrics
from serve.model_slot import ModelSlot

log = logging.getLogger("polypseg.request")

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}  # others share one metrics label
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # anything else is replaced, never logged raw
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class RequestObserver:
    def __init__(self, slot: ModelSlot, metrics: Metrics, ledger: InflightLedger | None = None):
        self.slot, self.metrics, self.ledger = slot, metrics, ledger
        metrics.publish_model(slot.get())

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.start = time.perf_counter()
        self.metrics.in_flight.inc()
        req.context.counted_in_flight = True
        # The slot loads in the background and has no hook; every request (each Prometheus scrape
        # included) publishes its current model, so polypseg_model_loaded follows within a scrape.
        self.metrics.publish_model(self.slot.get())
        incoming = req.get_header("X-Request-ID")
        req.context.request_id = incoming if incoming and REQUEST_ID.match(incoming) else uuid.uuid4().hex
        req.context.timings = {}
        req.context.fields = {}
        req.context.ledger_key = None

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
        if self.ledger is not None and resource is not None:  # see serve/inflight.py
            req.context.ledger_key = uuid.uuid4().hex
            self.ledger.start(
                req.context.ledger_key,
                request_id=req.context.request_id,
                endpoint=req.uri_template,
                method=req.method if req.method in KNOWN_METHODS else "other",
                model_version=self.slot.version,
            )

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        total_s = time.perf_counter() - req.context.start
        if getattr(req.context, "counted_in_flight", False):
            self.metrics.in_flight.dec()
        if getattr(req.context, "ledger_key", None):
            self.ledger.end(req.context.ledger_key)
        resp.set_header("X-Request-ID", req.context.request_id)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        if (resp.content_type or "").startswith("text/html"):
            resp.set_header("Content-Security-Policy", CSP)
        status = resp.status_code
        route = req.uri_template or "unmatched"  # never the raw path: it would explode label cardinality
        if route == "/predict":  # masks of patient images: no cache or proxy may keep them, nor errors
            resp.cache_control = ["no-store"]
        version = self.slot.version
        method = req.method if req.method in KNOWN_METHODS else "other"
        self.metrics.observe_request(route, method, status, version, total_s)
        timings = {k: round(v, 2) for k, v in req.context.timings.items()}
        timings["total_ms"] = round(total_s * 1e3, 2)
        fields = {
            "request_id": req.context.request_id,
            "method": req.method,
            "path": req.path[:200],
            "endpoint": route,  # the log's field name predates the metrics' `route` label
            "status": status,
            "model_version": version,
            **timings,
            **req.context.fields,
        }
        if status >= 400:
            fields["error"] = req.context.fields.get("error") or _error_title(resp)
        log.log(logging.WARNING if status >= 500 else logging.INFO, "request", extra={"fields": fields})


def _error_title(resp: falcon.Response) -> str:
    try:
        return json.loads(resp.data or b"{}").get("title", "")
    except ValueError:
        return ""


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Every error is JSON `{"title", "description"}`, whatever the Accept header asked for."""
    description = error.description or f"{req.method} {req.path[:100]}: {error.title}"
    resp.data = json.dumps({"title": error.title, "description": description}).encode()
    resp.content_type = falcon.MEDIA_JSON


def handle_unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict) -> None:
    """The one handler for bugs: log the traceback with the request id, answer a bare 500."""
    log.error(
        "unhandled exception",
        extra={
            "fields": {"request_id": getattr(req.context, "request_id", None), "exc": traceback.format_exc()}
        },
    )
    raise falcon.HTTPInternalServerError(
        title="Internal error", description="see the server log for this request id"
    )
