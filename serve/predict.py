"""POST /predict: admission, decoding, inference, the answer and the optional shadow copy."""

from __future__ import annotations

import base64
import logging
import time

import falcon
import numpy as np

from lib.decision import polyp_detected
from lib.rle import encode_rle
from serve.admission import AdmissionGate, Overloaded, QueueTimeout
from serve.deadline import client_gone
from serve.edge import allow_cross_origin, encode_png, image_bytes, parse_format, parse_threshold
from serve.imagecheck import BadImage, ImageTooLarge, decode_checked, image_end
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
        data = image_bytes(req, self.settings.max_body_bytes)
        req.context.fields["bytes_in"] = len(data)
        try:
            with self.gate.turn() as waited_s:
                timings["queue_ms"] = waited_s * 1e3
                if client_gone(req.env.get("gunicorn.socket")):  # its client timed out while it queued
                    self.metrics.rejected.labels("client_gone").inc()
                    raise falcon.HTTPError(
                        "499 Client Closed Request",
                        title="Client closed request",
                        description="the client closed the connection before its turn; nothing was computed",
                    )
                self._answer(req, resp, predictor, data, threshold, mask_format, wants_png)
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
        self.metrics.inference_duration.labels(meta.version).observe(result.inference_ms / 1e3)

        t1 = time.perf_counter()
        mask = (result.prob >= threshold).astype(np.uint8)
        fraction = round(float(mask.mean()), 6)
        # The image-level rule chosen on validation, applied to the mask actually returned.
        detected = polyp_detected(mask, meta.min_area_fraction)
        # Online drift watches the model, not the client's threshold: the share at the model's own
        # threshold, as in the validation baseline (serve/monitoring/rules/polypseg.yml).
        share = (
            float(mask.mean())
            if threshold == meta.threshold
            else float((result.prob >= meta.threshold).mean())
        )
        self.metrics.predicted_polyp_share.labels(meta.version).observe(share)
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
        dropped = self.metrics.shadow_dropped
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
