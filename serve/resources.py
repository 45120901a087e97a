"""The small resources: health, readiness, version, model metadata, metrics, and the demo page."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import falcon
import onnxruntime

from serve.metrics import Metrics
from serve.model_slot import ModelSlot, public_error, require_model

NOTICE = "NOT FOR CLINICAL USE"
API_VERSION = "1"
STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {  # the demo page: served from memory, nothing else under /static
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


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
                "min_component_ratio": m.min_component_ratio,
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


MODEL_NAME = "polypseg"  # the one model this server serves, whatever registry name it was loaded under
PLATFORM = "onnxruntime_onnx"  # the Open Inference Protocol's name for an ONNX model run by onnxruntime


# onnxruntime's element types -> the protocol's tensor data types
OIP_DATATYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64"}


def tensor_metadata(args, name: str, item_shape: list[int]) -> dict:
    """The protocol's $metadata_tensor for the graph tensor `name`: (batch, *item_shape), -1 = any batch.

    The sizes come from model.json (checked against the graph when the model loaded); the element type
    and whether the batch is fixed come from the graph itself.
    """
    arg = next(a for a in args if a.name == name)
    batch = arg.shape[0] if isinstance(arg.shape[0], int) and arg.shape[0] > 0 else -1
    return {"name": name, "datatype": OIP_DATATYPES.get(arg.type, arg.type), "shape": [batch, *item_shape]}


class ModelMetadataResource:
    """`GET /v2/models/polypseg[/versions/V]`: the Open Inference Protocol's model metadata.

    `name`, `versions`, `platform`, `inputs` and `outputs` as the protocol defines them (KServe v2), the
    graph's tensors; `parameters` (this API's addition) is what a client needs to use /predict:
    preprocessing, operating point and provenance, all from the loaded model's model.json.
    """

    def __init__(self, slot: ModelSlot):
        self.slot = slot

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, name: str, version: str | None = None
    ) -> None:
        if name != MODEL_NAME:
            raise falcon.HTTPNotFound(
                title="Unknown model",
                description=f"this server serves one model, {MODEL_NAME!r}; not {name[:60]!r}",
            )
        predictor = require_model(self.slot)
        m = predictor.meta
        if version is not None and version != m.artifact_version:
            raise falcon.HTTPNotFound(
                title="Unknown model version",
                description=f"{MODEL_NAME} is served at version {m.artifact_version!r} only, "
                f"not {version[:80]!r}",
            )
        size = m.input_size
        session = predictor.session
        resp.media = {
            "name": MODEL_NAME,
            "versions": [m.artifact_version],
            "platform": PLATFORM,
            "inputs": [tensor_metadata(session.get_inputs(), m.input_name, [3, size, size])],
            "outputs": [tensor_metadata(session.get_outputs(), m.output_name, [1, size, size])],
            "parameters": {
                "input_size": size,
                "mean": list(m.mean),
                "std": list(m.std),
                "threshold": m.threshold,
                "min_area_fraction": m.min_area_fraction,
                "min_component_ratio": m.min_component_ratio,
                "decision_chosen_on": m.decision_chosen_on,
                "model_version": m.version,
                "artifact_version": m.artifact_version,
                "git_sha": m.git_sha,
                "data_rev": m.data_rev,
                "precision": m.precision,
                "opset": m.opset,
                "sha256": m.sha256,
            },
        }

    on_head = on_get
    on_get_version = on_get
    on_head_version = on_get


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
