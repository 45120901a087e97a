"""The polyp segmentation API (Falcon WSGI). NOT FOR CLINICAL USE.

`create_app(predictor, settings)` wires resources around a given predictor (tests pass a tiny
real ONNX model); `get_app()` builds the real one from environment variables and is what
gunicorn runs: `gunicorn -c serve/gunicorn.conf.py 'serve.app:get_app()'`.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import logging
import math
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import cv2
import falcon
import numpy as np
import onnxruntime
from falcon.media.multipart import MultipartFormHandler, MultipartParseError, MultipartParseOptions

from lib.decision import polyp_detected
from lib.rle import encode_rle
from serve.admission import AdmissionGate, Overloaded, QueueTimeout
from serve.deadline import ReadTimeout, client_gone
from serve.imagecheck import BadImage, ImageTooLarge, decode_checked, image_end
from serve.inflight import InflightLedger, ledger_dir
from serve.logs import configure_logging
from serve.metrics import Metrics, metrics_for_process
from serve.predictor import ModelError, Predictor, load_predictor
from serve.settings import Settings, load_settings
from serve.shadow import ShadowStore

NOTICE = "NOT FOR CLINICAL USE"
API_VERSION = "1"
STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {  # the demo page: served from memory, nothing else under /static
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
RAW_IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png")
MASK_FORMATS = ("png", "rle", "prob")
FORM_FILE_FIELDS = ("file", "image")
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}  # others share one metrics label
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # anything else is replaced, never logged raw
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

log = logging.getLogger("polypseg.request")
model_log = logging.getLogger("polypseg.model")


ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"():,/]+/)+([^\s'\"():,/]+)")


def public_error(message: str) -> str:
    """`message` with absolute filesystem paths cut to their file name: clients see no server layout."""
    return ABSOLUTE_PATH.sub(r"\1", message)


class ModelSlot:
    """The current predictor, or why there is none.

    With a `loader`, loading happens in a background thread, retried every `retry_s` seconds until it
    succeeds: a registry that is down or slow never blocks the worker's boot, /healthz or a request,
    and never crashes the worker (every exception is caught and shown, paths removed, at /readyz).
    """

    def __init__(self, predictor: Predictor | None, loader: Callable[[], Predictor] | None, retry_s: float):
        self.predictor = predictor
        self.error = "" if predictor or loader else "no model configured"
        self._loader = loader
        self._retry_s = max(retry_s, 0.05)  # 0 in tests: retry at once, without spinning a core
        self._wake = threading.Event()
        if predictor is None and loader is not None:
            self.error = "the model is loading"
            threading.Thread(target=self._load_until_loaded, name="model-loader", daemon=True).start()

    def get(self) -> Predictor | None:
        return self.predictor

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a model (tests, warm-up scripts); True when loaded."""
        deadline = time.monotonic() + timeout
        while self.predictor is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.predictor is not None

    def _load_until_loaded(self) -> None:
        while self.predictor is None:
            try:
                self.predictor = self._loader()
            except Exception as err:  # noqa: BLE001 - whatever the loader raises, the worker stays up
                self.error = public_error(str(err) or type(err).__name__)[:500]
                model_log.error(
                    "model not loaded",
                    exc_info=not isinstance(err, ModelError),  # a bug in loading: keep its traceback
                    extra={"fields": {"error": str(err)[:2000], "retry_s": self._retry_s}},
                )
                self._wake.wait(self._retry_s)
                continue
            self.error = ""
            model_log.info("model loaded", extra={"fields": {"model_version": self.predictor.meta.version}})

    @property
    def version(self) -> str:
        return self.predictor.meta.version if self.predictor else "none"


def require_model(slot: ModelSlot) -> Predictor:
    predictor = slot.get()
    if predictor is None:
        raise falcon.HTTPServiceUnavailable(
            title="Model not loaded", description=slot.error or "no model loaded", retry_after=30
        )
    return predictor


# ---------------------------------------------------------------------------------------------
# Request edge: parameters, body, image bytes. Every refusal is a 4xx with title + description.


def parse_threshold(raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise falcon.HTTPBadRequest(
            title="Invalid threshold", description=f"threshold must be a number in [0, 1], got {raw[:40]!r}"
        )
    return value


def parse_format(raw: str | None) -> str:
    value = raw or "png"
    if value not in MASK_FORMATS:
        raise falcon.HTTPBadRequest(
            title="Invalid format",
            description=f"format must be one of {', '.join(MASK_FORMATS)}; got {value[:40]!r}",
        )
    return value


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes (declared or actually sent)."""
    try:
        return _read_body(req, limit)
    except ReadTimeout as err:  # serve/worker.py: the request's read deadline passed
        raise falcon.HTTPError(
            falcon.HTTP_408, title="Request timeout", description=str(err)
        ) from err  # the worker closes the connection after this answer
    except OSError as err:
        # The WSGI server decodes the framing: gunicorn raises InvalidChunkSize, ChunkMissingTerminator,
        # NoMoreData (all IOError) for a broken chunked body or a client that stops sending.
        raise falcon.HTTPBadRequest(
            title="Malformed request body",
            description=f"the request body could not be read ({type(err).__name__}); "
            "check its Transfer-Encoding: chunked framing",
        ) from err


def _read_body(req: falcon.Request, limit: int) -> bytes:
    too_large = falcon.HTTPContentTooLarge(
        title="Body too large", description=f"the request body exceeds the limit of {limit} bytes"
    )
    length = req.content_length
    if length is not None:
        if length > limit:
            # Read and drop a body up to twice the limit, so a client that sends it all before
            # reading the answer sees the 413 instead of a reset; anything larger is cut off unread.
            if length <= 2 * limit:
                while req.bounded_stream.read(1 << 20):
                    pass
            raise too_large
        return req.bounded_stream.read()
    data = req.stream.read(limit + 1)  # no Content-Length (chunked): read one byte past the limit
    if len(data) > limit:
        raise too_large
    return data


def image_from_form(body: bytes, content_type: str, limit: int) -> bytes:
    """The file part of a multipart/form-data body (field `file` or `image`, or any part with a filename)."""
    options = MultipartParseOptions()
    options.max_body_part_buffer_size = limit
    form = MultipartFormHandler(options).deserialize(io.BytesIO(body), content_type, len(body))
    for part in form:
        try:
            wanted = part.name in FORM_FILE_FIELDS or part.filename
        except UnicodeDecodeError as err:  # falcon decodes Content-Disposition as UTF-8 and lets this escape
            raise MultipartParseError(
                description="a part's Content-Disposition header is not valid UTF-8"
            ) from err
        if wanted:
            return part.get_data()
    raise falcon.HTTPBadRequest(
        title="No image in form", description="multipart/form-data body needs a file field named 'file'"
    )


def image_bytes(req: falcon.Request, limit: int) -> bytes:
    media_type = (req.content_type or "").split(";")[0].strip().lower()
    if media_type not in RAW_IMAGE_TYPES and media_type != "multipart/form-data":
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported content type",
            description="send the image as image/jpeg, image/png or multipart/form-data; "
            f"got {media_type[:60] or 'no Content-Type'!r}",
        )
    body = read_body(req, limit)
    if not body:
        raise falcon.HTTPBadRequest(
            title="Empty body", description="the request body is empty; send a JPEG or PNG"
        )
    if media_type == "multipart/form-data":
        return image_from_form(body, req.content_type, limit)
    return body


def encode_png(gray: np.ndarray) -> bytes:
    # Level 1 with the "up" filter: 2-3x faster than OpenCV's adaptive default, about as small.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, buf = cv2.imencode(".png", gray, params)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------------
# Resources


class PredictResource:
    def __init__(self, slot: ModelSlot, settings: Settings, metrics: Metrics):
        self.slot, self.settings, self.metrics = slot, settings, metrics
        self.gate = AdmissionGate(settings.max_running, settings.max_waiting, settings.queue_wait_s)
        self.shadow = (
            ShadowStore(
                settings.shadow_dir, settings.shadow_max_request_bytes, settings.shadow_max_total_bytes
            )
            if settings.shadow_dir
            else None
        )

    def on_options(self, req: falcon.Request, resp: falcon.Response) -> None:
        """CORS preflight: only for origins listed in POLYPSEG_CORS_ORIGINS."""
        allow_cross_origin(req, resp, self.settings.cors_origins)
        resp.status = falcon.HTTP_204
        resp.set_header("Allow", "POST, OPTIONS")
        if req.get_header("Origin"):
            resp.set_header("Access-Control-Allow-Methods", "POST")
            resp.set_header("Access-Control-Allow-Headers", "Content-Type, Accept, X-Request-ID")
            resp.set_header("Access-Control-Max-Age", "600")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        allow_cross_origin(req, resp, self.settings.cors_origins)
        predictor = require_model(self.slot)
        meta = predictor.meta
        threshold = parse_threshold(req.get_param("threshold"), meta.threshold)
        mask_format = parse_format(req.get_param("format"))
        wants_png = (
            "image/png" in req.accept and req.client_prefers(("application/json", "image/png")) == "image/png"
        )
        if wants_png and mask_format == "rle":
            raise falcon.HTTPNotAcceptable(
                title="Not acceptable",
                description="format=rle is only available as JSON; accept application/json",
            )
        timings = req.context.timings
        data = image_bytes(req, self.settings.max_body_bytes)
        req.context.fields["bytes_in"] = len(data)
        try:
            with self.gate.turn() as waited_s:
                timings["queue_ms"] = waited_s * 1e3
                if client_gone(req.env.get("gunicorn.socket")):  # its client timed out while it queued
                    self.metrics.rejected_count.labels("client_gone").inc()
                    raise falcon.HTTPError(
                        "499 Client Closed Request",
                        title="Client closed request",
                        description="the client closed the connection before its turn; nothing was computed",
                    )
                self._answer(req, resp, predictor, data, threshold, mask_format, wants_png)
        except Overloaded as err:
            self.metrics.rejected_count.labels("overloaded").inc()
            raise falcon.HTTPTooManyRequests(
                title="Server busy", description=str(err), retry_after=1
            ) from err
        except QueueTimeout as err:
            self.metrics.rejected_count.labels("queue_timeout").inc()
            raise falcon.HTTPServiceUnavailable(
                title="Server busy", description=str(err), retry_after=1
            ) from err

    def _answer(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        predictor: Predictor,
        data: bytes,
        threshold: float,
        mask_format: str,
        wants_png: bool,
    ) -> None:
        """Decode, predict and encode: the CPU work, run only with a turn from the admission gate."""
        meta, timings = predictor.meta, req.context.timings
        t0 = time.perf_counter()
        try:
            header, rgb = decode_checked(data, self.settings.max_pixels)
        except ImageTooLarge as err:
            raise falcon.HTTPContentTooLarge(title="Image too large", description=str(err)) from err
        except BadImage as err:
            raise falcon.HTTPBadRequest(title="Invalid image", description=str(err)) from err
        height, width = rgb.shape[:2]
        req.context.fields.update(input_format=header.format, input_shape=[height, width, 3])
        timings["decode_ms"] = (time.perf_counter() - t0) * 1e3

        result = predictor.predict(rgb)
        timings.update(
            preprocess_ms=result.preprocess_ms,
            inference_ms=result.inference_ms,
            postprocess_ms=result.postprocess_ms,
        )
        self.metrics.inference_latency_ms.labels(meta.version).observe(result.inference_ms)

        t1 = time.perf_counter()
        mask = (result.prob >= threshold).astype(np.uint8)
        fraction = round(float(mask.mean()), 6)
        # The image-level rule chosen on validation, applied to the mask actually returned.
        detected = polyp_detected(mask, meta.min_area_fraction)
        mask_png = encode_png(mask * 255) if mask_format == "png" or self.shadow else b""
        if mask_format == "prob":
            payload_png = encode_png(np.clip(result.prob * 255.0 + 0.5, 0, 255).astype(np.uint8))
        else:
            payload_png = mask_png
        timings["encode_ms"] = (time.perf_counter() - t1) * 1e3
        latency_ms = round((time.perf_counter() - req.context.start) * 1e3, 2)
        fields = {
            "width": width,
            "height": height,
            "polyp_fraction": fraction,
            "polyp_detected": detected,
            "min_area_fraction": meta.min_area_fraction,
            "threshold": threshold,
            "latency_ms": latency_ms,
            "model_version": meta.version,
            "request_id": req.context.request_id,
        }
        req.context.fields.update(
            polyp_fraction=fraction, polyp_detected=detected, threshold=threshold, mask_format=mask_format
        )

        if wants_png:
            resp.content_type = "image/png"
            resp.data = payload_png
            for key, value in fields.items():
                if key == "request_id":  # the middleware sets X-Request-ID on every response
                    continue
                text = str(value).lower() if isinstance(value, bool) else str(value)  # as in the JSON
                resp.set_header("X-" + "-".join(w.capitalize() for w in key.split("_")), text)
            resp.set_header("X-Mask-Format", mask_format)
            resp.set_header("X-Notice", NOTICE)
        else:
            mask_field = (
                encode_rle(mask) if mask_format == "rle" else base64.b64encode(payload_png).decode("ascii")
            )
            resp.media = {"mask": mask_field, "mask_format": mask_format, **fields, "notice": NOTICE}

        if self.shadow:
            self._shadow(req, data[: image_end(data, header.format)], header.format, mask_png, fields)

    def _shadow(
        self, req: falcon.Request, image: bytes, image_format: str, mask_png: bytes, fields: dict
    ) -> None:
        t0 = time.perf_counter()
        record = {**fields, "time": time.time(), "content_type": req.content_type}
        dropped = self.metrics.shadow_dropped_count
        try:
            saved = self.shadow.save(req.context.request_id, image, image_format, mask_png, record)
        except OSError as err:  # a full or read-only disk must not fail the prediction
            dropped.labels("write_error").inc()
            log.warning("shadow write failed", extra={"fields": {"error": str(err)}})
        else:
            if saved.pruned:
                dropped.labels("pruned").inc(saved.pruned)
            if saved.folder is None:
                dropped.labels("total_cap").inc()
            else:
                req.context.fields["shadow"] = saved.folder.name
                if not saved.input_stored:
                    dropped.labels("input_too_large").inc()
        req.context.timings["shadow_ms"] = (time.perf_counter() - t0) * 1e3


def allow_cross_origin(req: falcon.Request, resp: falcon.Response, allowed: tuple[str, ...]) -> None:
    """Refuse a browser request from another web origin unless that origin is listed (403).

    Without this a page on any site could make visitors' browsers POST images here: the browser hides
    the answer from that page, but the work is done. Same-origin requests (the demo page) and clients
    that send no Origin header (curl, scripts) pass; listed origins get the CORS headers they need.
    """
    origin = req.get_header("Origin")
    if origin is None:
        return
    if origin in allowed or "*" in allowed:
        resp.set_header("Access-Control-Allow-Origin", origin)
        resp.set_header("Access-Control-Expose-Headers", "X-Request-ID, Retry-After")
        resp.append_header("Vary", "Origin")
        return
    host = (req.get_header("Host") or "").lower()
    if origin.lower().split("://", 1)[-1] == host and host:
        return
    raise falcon.HTTPForbidden(
        title="Cross-origin request refused",
        description="this origin may not call the API from a browser; the operator can list it in "
        "POLYPSEG_CORS_ORIGINS",
    )


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}

    on_head = on_get


class ReadyResource:
    def __init__(self, slot: ModelSlot):
        self.slot = slot

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        predictor = require_model(self.slot)  # loaded implies warmed up: Predictor runs one inference on load
        resp.media = {"status": "ready", "model_version": predictor.meta.version}

    on_head = on_get


class VersionResource:
    def __init__(self, slot: ModelSlot):
        self.slot = slot

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        predictor = self.slot.get()
        model = None
        if predictor is not None:
            m = predictor.meta
            model = {
                "model_version": m.version,
                "artifact_version": m.artifact_version,
                "git_sha": m.git_sha,
                "data_rev": m.data_rev,
                "opset": m.opset,
                "input_size": m.input_size,
                "threshold": m.threshold,
                "min_area_fraction": m.min_area_fraction,
                "decision_chosen_on": m.decision_chosen_on,
                "source": public_error(m.source),
            }
        resp.media = {
            "service": "polypseg",
            "api_version": API_VERSION,
            "model_version": self.slot.version,
            "model": model,
            "model_error": self.slot.error or None,
            "runtime": {
                "onnxruntime": onnxruntime.__version__,
                "falcon": falcon.__version__,
                "ort_threads": predictor.threads if predictor else None,
            },
            "notice": NOTICE,
        }

    on_head = on_get


class MetricsResource:
    """Prometheus exposition; POLYPSEG_METRICS_ALLOW limits it to the scraper's networks."""

    def __init__(self, metrics: Metrics, allow: tuple[str, ...] = ()):
        self.metrics = metrics
        self.allow = [ipaddress.ip_network(net, strict=False) for net in allow]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.allow:
            try:
                client = ipaddress.ip_address((req.remote_addr or "").split("%")[0])
            except ValueError:
                client = None
            if client is None or not any(client in net for net in self.allow):
                raise falcon.HTTPForbidden(
                    title="Forbidden",
                    description="/metrics is only served to the networks in POLYPSEG_METRICS_ALLOW",
                )
        resp.content_type = self.metrics.content_type
        resp.data = self.metrics.render()

    on_head = on_get


class StaticResource:
    """The demo page: index.html at / and its two assets under /static/."""

    def __init__(self) -> None:
        self.index = (STATIC_DIR / "index.html").read_bytes()
        self.files = {name: ((STATIC_DIR / name).read_bytes(), ctype) for name, ctype in STATIC_FILES.items()}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/html; charset=utf-8"
        resp.data = self.index

    def on_get_asset(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in self.files:
            raise falcon.HTTPNotFound(title="Not found", description=f"no static file {name[:60]!r}")
        resp.data, resp.content_type = self.files[name]
        resp.cache_control = ["no-cache"]

    on_head = on_get  # falcon sends the headers (Content-Length included) and drops the body
    on_head_asset = on_get_asset


# ---------------------------------------------------------------------------------------------
# Cross-cutting: request ids, timings, metrics, one JSON log line per request, JSON errors.


class RequestObserver:
    def __init__(self, slot: ModelSlot, metrics: Metrics, ledger: InflightLedger | None = None):
        self.slot, self.metrics, self.ledger = slot, metrics, ledger

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.start = time.perf_counter()
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
        total_ms = (time.perf_counter() - req.context.start) * 1e3
        if getattr(req.context, "ledger_key", None):
            self.ledger.end(req.context.ledger_key)
        resp.set_header("X-Request-ID", req.context.request_id)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        if (resp.content_type or "").startswith("text/html"):
            resp.set_header("Content-Security-Policy", CSP)
        status = resp.status_code
        endpoint = req.uri_template or "unmatched"  # never the raw path: it would explode label cardinality
        if endpoint == "/predict":  # masks of patient images: no cache or proxy may keep them, nor errors
            resp.cache_control = ["no-store"]
        version = self.slot.version
        method = req.method if req.method in KNOWN_METHODS else "other"
        self.metrics.observe_request(endpoint, method, status, version, total_ms)
        timings = {k: round(v, 2) for k, v in req.context.timings.items()}
        timings["total_ms"] = round(total_ms, 2)
        fields = {
            "request_id": req.context.request_id,
            "method": req.method,
            "path": req.path[:200],
            "endpoint": endpoint,
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


def create_app(
    predictor: Predictor | None,
    settings: Settings | None = None,
    loader: Callable[[], Predictor] | None = None,
) -> falcon.App:
    """The API around `predictor`.

    With `predictor` None the model endpoints answer 503; a `loader` is then run in a background
    thread at once and again every `settings.model_retry_s` seconds until it returns a predictor.
    """
    settings = settings or Settings()
    slot = ModelSlot(predictor, loader, settings.model_retry_s)
    metrics = metrics_for_process()
    ledger = InflightLedger(ledger_dir()) if ledger_dir() else None
    app = falcon.App(middleware=[RequestObserver(slot, metrics, ledger)])
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    static = StaticResource()
    app.add_route("/", static)
    app.add_route("/static/{name}", static, suffix="asset")
    app.add_route("/predict", PredictResource(slot, settings, metrics))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(slot))
    app.add_route("/version", VersionResource(slot))
    app.add_route("/metrics", MetricsResource(metrics, settings.metrics_allow))
    return app


def get_app() -> falcon.App:
    """The production app, configured from the environment; an unloadable model means 503s, not a crash."""
    settings = load_settings()
    configure_logging(settings.log_level)

    def loader() -> Predictor:
        return load_predictor(
            settings.model_path,
            settings.model_uri,
            settings.allow_staging,
            settings.ort_threads,
            settings.registry_timeout_s,
        )

    return create_app(None, settings, loader=loader)
