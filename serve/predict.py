"""POST /predict: admission, decoding, inference, the answer and the optional shadow copy.

One image (a raw body or one form part) is answered as before; several file parts named `image`
(a batch) are answered with one JSON list, all or nothing: a bad image refuses the whole request
before anything is predicted.
"""

from __future__ import annotations

import base64
import logging
import time
from contextlib import contextmanager

import falcon
import numpy as np

from lib.decision import component_block, polyp_detected
from lib.rle import encode_rle
from serve.admission import AdmissionGate, Overloaded, QueueTimeout
from serve.deadline import client_gone
from serve.edge import Upload, allow_cross_origin, encode_png, parse_format, parse_threshold, read_uploads
from serve.imagecheck import BadImage, ImageHeader, ImageTooLarge, decode_checked, image_end, read_header
from serve.metrics import Metrics
from serve.model_slot import ModelSlot, require_model
from serve.predictor import Predictor
from serve.resources import NOTICE
from serve.settings import Settings
from serve.shadow import ShadowStore

log = logging.getLogger("polypseg.request")


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
        uploads = read_uploads(req, self.settings.max_body_bytes, self.settings.max_batch_images)
        batch = len(uploads) > 1
        if batch and not req.client_accepts_json:
            raise falcon.HTTPNotAcceptable(
                title="Not acceptable",
                description=f"{len(uploads)} images are answered as one JSON list, which a PNG body cannot "
                "hold; accept application/json, or send one image per request",
            )
        req.context.fields["bytes_in"] = sum(len(u.data) for u in uploads)
        try:
            # One turn for the whole request, a batch included: its images run one after another on
            # this worker's onnxruntime threads, so CPU concurrency stays POLYPSEG_MAX_RUNNING, and its
            # cost is bounded by POLYPSEG_MAX_BATCH_IMAGES and, summed over its images, by
            # POLYPSEG_MAX_PIXELS (serve/README.md: batch requests).
            with self.gate.turn() as waited_s:
                timings["queue_ms"] = waited_s * 1e3
                if client_gone(req.env.get("gunicorn.socket")):  # its client timed out while it queued
                    self.metrics.rejected.labels("client_gone").inc()
                    raise falcon.HTTPError(
                        "499 Client Closed Request",
                        title="Client closed request",
                        description="the client closed the connection before its turn; nothing was computed",
                    )
                if batch:
                    self._answer_batch(req, resp, predictor, uploads, threshold, mask_format)
                else:
                    self._answer(req, resp, predictor, uploads[0].data, threshold, mask_format, wants_png)
        except Overloaded as err:
            self.metrics.rejected.labels("overloaded").inc()
            raise falcon.HTTPTooManyRequests(
                title="Server busy", description=str(err), retry_after=1
            ) from err
        except QueueTimeout as err:
            self.metrics.rejected.labels("queue_timeout").inc()
            raise falcon.HTTPServiceUnavailable(
                title="Server busy", description=str(err), retry_after=1
            ) from err

    def _decode(self, req: falcon.Request, data: bytes, where: str = "") -> tuple[ImageHeader, np.ndarray]:
        """The checked RGB image; a 4xx whose description starts with `where` (a batch names the part)."""
        t0 = time.perf_counter()
        with image_refusals(where):
            header, rgb = decode_checked(data, self.settings.max_pixels)
        add_ms(req.context.timings, decode_ms=(time.perf_counter() - t0) * 1e3)
        return header, rgb

    def _predict(
        self,
        req: falcon.Request,
        predictor: Predictor,
        rgb: np.ndarray,
        threshold: float,
        mask_format: str,
    ) -> tuple[dict, np.ndarray, bytes, bytes]:
        """One decoded image -> (answer fields, 0/1 mask, payload PNG, mask PNG for the shadow copy)."""
        meta, timings = predictor.meta, req.context.timings
        height, width = rgb.shape[:2]
        result = predictor.predict(rgb)
        add_ms(
            timings,
            preprocess_ms=result.preprocess_ms,
            inference_ms=result.inference_ms,
            postprocess_ms=result.postprocess_ms,
        )
        self.metrics.inference_duration.labels(meta.version).observe(result.inference_ms / 1e3)
        self.metrics.images.labels(meta.version).inc()

        t1 = time.perf_counter()
        mask = meta.mask(result.prob, threshold).astype(np.uint8)  # lib.decision.binary_mask
        fraction = round(float(mask.mean()), 6)
        # The image-level rule chosen on validation, applied to the mask actually returned.
        detected = polyp_detected(mask, meta.min_area_fraction)
        # Online drift watches the model, not the client's threshold: the share at the model's own
        # threshold, as in the validation baseline (serve/monitoring/rules/polypseg.yml).
        share = float(mask.mean()) if threshold == meta.threshold else float(meta.mask(result.prob).mean())
        self.metrics.predicted_polyp_share.labels(meta.version).observe(share)
        mask_png = encode_png(mask * 255) if mask_format == "png" or self.shadow else b""
        if mask_format == "prob":
            payload_png = encode_png(np.clip(result.prob * 255.0 + 0.5, 0, 255).astype(np.uint8))
        else:
            payload_png = mask_png
        add_ms(timings, encode_ms=(time.perf_counter() - t1) * 1e3)
        latency_ms = round((time.perf_counter() - req.context.start) * 1e3, 2)
        fields = {
            "width": width,
            "height": height,
            "polyp_fraction": fraction,
            "polyp_detected": detected,
            "min_area_fraction": meta.min_area_fraction,
            "min_component_ratio": meta.min_component_ratio,
            "component_block": component_block(height, width),
            "threshold": threshold,
            "latency_ms": latency_ms,
            "model_version": meta.version,
            "request_id": req.context.request_id,
        }
        return fields, mask, payload_png, mask_png

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
        """One image: decode, predict and encode, run only with a turn from the admission gate."""
        header, rgb = self._decode(req, data)
        height, width = rgb.shape[:2]
        req.context.fields.update(input_format=header.format, input_shape=[height, width, 3])
        fields, mask, payload_png, mask_png = self._predict(req, predictor, rgb, threshold, mask_format)
        req.context.fields.update(
            polyp_fraction=fields["polyp_fraction"],
            polyp_detected=fields["polyp_detected"],
            threshold=threshold,
            mask_format=mask_format,
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
            resp.media = {
                "mask": mask_field(mask, payload_png, mask_format),
                "mask_format": mask_format,
                **fields,
                "notice": NOTICE,
            }

        if self.shadow:
            folder = self._shadow(
                req, data[: image_end(data, header.format)], header.format, mask_png, fields
            )
            if folder:
                req.context.fields["shadow"] = folder

    def _answer_batch(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        predictor: Predictor,
        uploads: list[Upload],
        threshold: float,
        mask_format: str,
    ) -> None:
        """Several images, all or nothing: every image is checked and decoded before any is predicted."""
        where = [f"image {i} ({(u.filename or 'no filename')[:80]!r}): " for i, u in enumerate(uploads)]
        # Headers first (cheap): a batch whose images together exceed the pixel limit is refused before
        # anything is decoded, so a batch never holds more decoded pixels than one largest image.
        pixels = 0
        for upload, prefix in zip(uploads, where):
            with image_refusals(prefix):
                header = read_header(upload.data, self.settings.max_pixels)
            pixels += header.width * header.height
        if pixels > self.settings.max_pixels:
            raise falcon.HTTPContentTooLarge(
                title="Batch too large",
                description=f"the {len(uploads)} images have {pixels} pixels together, over the limit of "
                f"{self.settings.max_pixels} (POLYPSEG_MAX_PIXELS) for one request; send fewer per request",
            )
        decoded = [self._decode(req, u.data, prefix) for u, prefix in zip(uploads, where)]

        results, log_fields, folders = [], {}, []
        for index, (upload, (header, rgb)) in enumerate(zip(uploads, decoded)):
            decoded[index] = None  # each image's pixels go as soon as its answer is encoded
            fields, mask, payload_png, mask_png = self._predict(req, predictor, rgb, threshold, mask_format)
            item = {"index": index, "filename": upload.filename}
            results.append(
                {
                    **item,
                    "mask": mask_field(mask, payload_png, mask_format),
                    "mask_format": mask_format,
                    **fields,
                    "notice": NOTICE,
                }
            )
            for key, value in (
                ("input_format", header.format),
                ("input_shape", [*rgb.shape[:2], 3]),
                ("polyp_fraction", fields["polyp_fraction"]),
                ("polyp_detected", fields["polyp_detected"]),
            ):
                log_fields.setdefault(key, []).append(value)
            if self.shadow:
                record = {**fields, **item, "count": len(uploads)}
                image = upload.data[: image_end(upload.data, header.format)]
                folders.append(self._shadow(req, image, header.format, mask_png, record))
        req.context.fields.update(
            images=len(uploads), **log_fields, threshold=threshold, mask_format=mask_format
        )
        if self.shadow:
            req.context.fields["shadow"] = folders
        resp.media = {
            "results": results,
            "count": len(results),
            "model_version": predictor.meta.version,
            "notice": NOTICE,
        }

    def _shadow(
        self, req: falcon.Request, image: bytes, image_format: str, mask_png: bytes, fields: dict
    ) -> str | None:
        """Store one image's copy; returns its folder's name, None when nothing was stored."""
        t0 = time.perf_counter()
        record = {**fields, "time": time.time(), "content_type": req.content_type}
        dropped = self.metrics.shadow_dropped
        folder = None
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
                folder = saved.folder.name
                if not saved.input_stored:
                    dropped.labels("input_too_large").inc()
        add_ms(req.context.timings, shadow_ms=(time.perf_counter() - t0) * 1e3)
        return folder


@contextmanager
def image_refusals(where: str = ""):
    """Untrusted image bytes refused: 413 Image too large, 400 Invalid image; `where` prefixes the reason."""
    try:
        yield
    except ImageTooLarge as err:
        raise falcon.HTTPContentTooLarge(title="Image too large", description=where + str(err)) from err
    except BadImage as err:
        raise falcon.HTTPBadRequest(title="Invalid image", description=where + str(err)) from err


def add_ms(timings: dict[str, float], **stages_ms: float) -> None:
    """Add stage times to the request's timings (a batch's log line: each stage summed over its images)."""
    for stage, ms in stages_ms.items():
        timings[stage] = timings.get(stage, 0.0) + ms


def mask_field(mask: np.ndarray, payload_png: bytes, mask_format: str):
    """The JSON `mask`: an RLE object, or the PNG (mask or probabilities) in base64."""
    return encode_rle(mask) if mask_format == "rle" else base64.b64encode(payload_png).decode("ascii")
