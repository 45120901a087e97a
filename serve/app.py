"""The polyp segmentation API (Falcon WSGI). NOT FOR CLINICAL USE.

`create_app(predictor, settings)` wires resources around a given predictor (tests pass a tiny
real ONNX model); `get_app()` builds the real one from environment variables and is what
gunicorn runs: `gunicorn -c serve/gunicorn.conf.py 'serve.app:get_app()'`.
"""

from __future__ import annotations

import base64
import io
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
from serve.imagecheck import BadImage, ImageTooLarge, decode_checked
from serve.logs import configure_logging
from serve.metrics import Metrics
from serve.predictor import ModelError, Predictor, load_predictor
from serve.settings import Settings, load_settings
from serve.shadow import save_shadow

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


class ModelSlot:
    """The current predictor, or why there is none; a failed load is retried every `retry_s`."""

    def __init__(self, predictor: Predictor | None, loader: Callable[[], Predictor] | None, retry_s: float):
        self.predictor = predictor
        self.error = "" if predictor or loader else "no model configured"
        self._loader = loader
        self._retry_s = retry_s
        self._next_try = 0.0
        self._lock = threading.Lock()
        self.get()  # first attempt now, so /readyz is green as soon as the worker is up

    def get(self) -> Predictor | None:
        if self.predictor is None and self._loader is not None and time.monotonic() >= self._next_try:
            with self._lock:
                if self.predictor is None and time.monotonic() >= self._next_try:
                    self._load()
        return self.predictor

    def _load(self) -> None:
        try:
            self.predictor = self._loader()
            self.error = ""
            model_log.info("model loaded", extra={"fields": {"model_version": self.predictor.meta.version}})
        except ModelError as err:
            self.error = str(err)
            self._next_try = time.monotonic() + self._retry_s
            model_log.error(
                "model not loaded", extra={"fields": {"error": self.error, "retry_s": self._retry_s}}
            )

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

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
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
        t0 = time.perf_counter()
        data = image_bytes(req, self.settings.max_body_bytes)
        try:
            header, rgb = decode_checked(data, self.settings.max_pixels)
        except ImageTooLarge as err:
            raise falcon.HTTPContentTooLarge(title="Image too large", description=str(err)) from err
        except BadImage as err:
            raise falcon.HTTPBadRequest(title="Invalid image", description=str(err)) from err
        height, width = rgb.shape[:2]
        req.context.fields.update(
            input_format=header.format, input_shape=[height, width, 3], bytes_in=len(data)
        )
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
        mask_png = encode_png(mask * 255) if mask_format == "png" or self.settings.shadow_dir else b""
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

        if self.settings.shadow_dir:
            self._shadow(req, data, header.format, mask_png, fields)

    def _shadow(
        self, req: falcon.Request, data: bytes, image_format: str, mask_png: bytes, fields: dict
    ) -> None:
        t0 = time.perf_counter()
        record = {**fields, "time": time.time(), "content_type": req.content_type, "bytes_in": len(data)}
        try:
            folder = save_shadow(
                self.settings.shadow_dir, req.context.request_id, data, image_format, mask_png, record
            )
            req.context.fields["shadow"] = str(folder)
        except OSError as err:  # a full or read-only disk must not fail the prediction
            log.warning("shadow write failed", extra={"fields": {"error": str(err)}})
        req.context.timings["shadow_ms"] = (time.perf_counter() - t0) * 1e3


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
                "source": m.source,
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
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
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
    def __init__(self, slot: ModelSlot, metrics: Metrics):
        self.slot, self.metrics = slot, metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.start = time.perf_counter()
        incoming = req.get_header("X-Request-ID")
        req.context.request_id = incoming if incoming and REQUEST_ID.match(incoming) else uuid.uuid4().hex
        req.context.timings = {}
        req.context.fields = {}

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        total_ms = (time.perf_counter() - req.context.start) * 1e3
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

    With `predictor` None the model endpoints answer 503; a `loader` is then tried at once and again
    every `settings.model_retry_s` seconds until it returns a predictor.
    """
    settings = settings or Settings()
    slot = ModelSlot(predictor, loader, settings.model_retry_s)
    metrics = Metrics()
    app = falcon.App(middleware=[RequestObserver(slot, metrics)])
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
    app.add_route("/metrics", MetricsResource(metrics))
    return app


def get_app() -> falcon.App:
    """The production app, configured from the environment; an unloadable model means 503s, not a crash."""
    settings = load_settings()
    configure_logging(settings.log_level)

    def loader() -> Predictor:
        return load_predictor(
            settings.model_path, settings.model_uri, settings.allow_staging, settings.ort_threads
        )

    return create_app(None, settings, loader=loader)
