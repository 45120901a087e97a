"""The model behind /predict: an onnxruntime CPU session plus the shared lib/ preprocessing.

A model is a `model.onnx` with a `model.json` beside it (input size, tensor names, normalisation,
provenance, and the operating point bin/evaluate.py chose on validation: the default `threshold` and
the image-level rule `min_area_fraction`, see lib/decision.py). It comes from a local path or, when
configured, from the MLflow registry; mlflow is imported only on that path so the serving container
needs neither it nor torch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lib.decision import LEGACY_MIN_AREA
from lib.preprocess import prepare_input, restore_mask, sigmoid

log = logging.getLogger("polypseg.model")


class ModelError(RuntimeError):
    """A model that cannot be found, read, or run as the export contract says."""


@dataclass(frozen=True)
class ModelMeta:
    input_size: int  # side of the square model input in pixels
    input_name: str
    output_name: str
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] RGB
    std: tuple[float, float, float]
    threshold: float  # default probability threshold for the binary mask
    min_area_fraction: float  # polyp detected when the mask's polyp share reaches this (lib/decision.py)
    decision_chosen_on: str  # where threshold and min_area_fraction were chosen, e.g. the validation split
    version: str  # what /predict reports as model_version (registry name/version when registered)
    artifact_version: str  # model_version written by the export step into model.json
    git_sha: str
    data_rev: str
    opset: int | None
    source: str  # where it was loaded from: a path or a registry URI


@dataclass(frozen=True)
class Prediction:
    prob: np.ndarray  # (H, W) float32 probabilities at the original image size
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float


def _triple(meta: dict, key: str) -> tuple[float, float, float]:
    value = meta.get(key, [0.5, 0.5, 0.5])
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
        raise ModelError(f"model.json: {key!r} must be a list of 3 numbers, got {value!r}")
    if key == "std" and min(value) <= 0:
        raise ModelError(f"model.json: 'std' must be positive, got {value!r}")
    return tuple(float(v) for v in value)


def _fraction(meta: dict, key: str) -> float:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ModelError(f"model.json: {key!r} must be in [0, 1], got {value!r}")
    return float(value)


def read_model_meta(json_path: Path, version: str | None = None, source: str = "") -> ModelMeta:
    """Parse and check `model.json`; `version` overrides its model_version (registry loads)."""
    try:
        meta = json.loads(Path(json_path).read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read model metadata {json_path}: {err}") from err
    if not isinstance(meta, dict):
        raise ModelError(f"{json_path}: expected a JSON object")
    size = meta.get("input_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096:
        raise ModelError(f"model.json: 'input_size' must be an integer in [8, 4096], got {size!r}")
    if "threshold" not in meta:
        raise ModelError(f"{json_path}: no 'threshold' (the export step writes it from decision.json)")
    threshold = _fraction(meta, "threshold")
    if "min_area_fraction" in meta:
        min_area = _fraction(meta, "min_area_fraction")
    else:  # exported before the image-level rule existed: once per load, not per request
        min_area = LEGACY_MIN_AREA
        log.warning(
            f"model.json has no min_area_fraction; using {LEGACY_MIN_AREA} (any polyp pixel means detected)",
            extra={"fields": {"model": source or str(json_path)}},
        )
    artifact_version = str(meta.get("model_version") or "unversioned")
    opset = meta.get("opset")
    return ModelMeta(
        input_size=size,
        input_name=str(meta.get("input_name") or "input"),
        output_name=str(meta.get("output_name") or "logits"),
        mean=_triple(meta, "mean"),
        std=_triple(meta, "std"),
        threshold=threshold,
        min_area_fraction=min_area,
        decision_chosen_on=str(meta.get("decision_chosen_on") or "unknown"),
        version=version or artifact_version,
        artifact_version=artifact_version,
        git_sha=str(meta.get("git_sha") or "unknown"),
        data_rev=str(meta.get("data_rev") or "unknown"),
        opset=opset if isinstance(opset, int) else None,
        source=source or str(json_path),
    )


class Predictor:
    """Wraps one onnxruntime session; `predict` maps an RGB image to probabilities at its size."""

    def __init__(self, onnx_path: Path, meta: ModelMeta, threads: int = 1):
        self.meta = meta
        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn CPU between requests; the host is shared, so let them sleep.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises several private exception types
            raise ModelError(f"onnxruntime cannot load {onnx_path}: {err}") from err
        self._check_io()
        self.warm_up()

    def _check_io(self) -> None:
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        shape = inputs.get(self.meta.input_name)
        if shape is None:
            raise ModelError(f"model has no input {self.meta.input_name!r} (inputs: {sorted(inputs)})")
        if self.meta.output_name not in outputs:
            raise ModelError(f"model has no output {self.meta.output_name!r} (outputs: {outputs})")
        size = self.meta.input_size
        expected = (None, 3, size, size)
        if len(shape) != 4 or any(
            isinstance(d, int) and e is not None and d != e for d, e in zip(shape, expected)
        ):
            raise ModelError(f"model input shape {shape} does not fit (1, 3, {size}, {size})")

    def _run(self, x: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run([self.meta.output_name], {self.meta.input_name: x})
        size = self.meta.input_size
        if logits.size != size * size:
            raise ModelError(f"model output shape {logits.shape} is not (1, 1, {size}, {size})")
        return logits.reshape(size, size)

    def warm_up(self) -> None:
        """One inference on zeros: allocates buffers so the first real request is not slow."""
        size = self.meta.input_size
        self._run(np.zeros((1, 3, size, size), np.float32))

    def predict(self, rgb: np.ndarray) -> Prediction:
        """`(H, W, 3) uint8` RGB -> probabilities `(H, W) float32` and stage timings."""
        t0 = time.perf_counter()
        x, geometry = prepare_input(rgb, self.meta.input_size, self.meta.mean, self.meta.std)
        t1 = time.perf_counter()
        logits = self._run(x)
        t2 = time.perf_counter()
        prob = restore_mask(sigmoid(logits), geometry)
        t3 = time.perf_counter()
        return Prediction(prob, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)


def load_local(model_path: str | Path, threads: int = 1) -> Predictor:
    """A Predictor from `model.onnx` with `model.json` beside it."""
    onnx_path = Path(model_path)
    if onnx_path.is_dir():
        onnx_path = onnx_path / "model.onnx"
    json_path = onnx_path.with_name("model.json")
    for path in (onnx_path, json_path):
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
    return Predictor(onnx_path, read_model_meta(json_path, source=str(onnx_path)), threads)


_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")


def find_model_files(root: Path) -> tuple[Path, Path]:
    """The one `model.onnx` below `root` that has a `model.json` beside it."""
    pairs = [p for p in sorted(root.rglob("model.onnx")) if p.with_name("model.json").is_file()]
    if len(pairs) != 1:
        raise ModelError(
            f"expected one model.onnx with model.json beside it under {root}, found {len(pairs)}"
        )
    return pairs[0], pairs[0].with_name("model.json")


def load_registry(uri: str, allow_staging: bool = False, threads: int = 1, timeout_s: int = 10) -> Predictor:
    """A Predictor from the MLflow registry (`models:/NAME@ALIAS` or `models:/NAME/VERSION`).

    The alias is resolved to a version number first and that exact version is downloaded, so
    model_version names what was actually loaded even if the alias moves meanwhile.
    """
    match = _URI.match(uri)
    if not match:
        raise ModelError(
            f"POLYPSEG_MODEL_URI must look like models:/NAME@ALIAS or models:/NAME/N, got {uri!r}"
        )
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's own defaults (120 s per call, 7 retries with exponential backoff) would keep one load
    # attempt busy for minutes while the registry is down; the caller retries the whole load instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one JSON log line, not a bar
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError as err:
        raise ModelError("a registry model URI needs the mlflow package, which is not installed") from err

    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        client = MlflowClient()
    except Exception as err:  # a store that cannot be opened (sqlite in a missing directory, bad URI)
        raise ModelError(f"cannot open the MLflow registry for {uri}: {err}") from err
    if alias:
        try:
            version = client.get_model_version_by_alias(name, alias).version
        except Exception as err:  # MlflowException for a missing alias, requests errors when down
            if not (allow_staging and alias == "production"):
                raise ModelError(f"cannot resolve {uri}: {err}") from err
            log.warning("no @production alias for %s (%s); falling back to @staging", name, err)
            alias = "staging"
            try:
                version = client.get_model_version_by_alias(name, alias).version
            except Exception as err2:
                raise ModelError(f"cannot resolve {uri} or its @staging fallback: {err2}") from err2
    source = f"models:/{name}/{version}" + (f" (@{alias})" if alias else "")
    with tempfile.TemporaryDirectory(prefix="polypseg-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp
            )
        except Exception as err:
            raise ModelError(f"cannot download models:/{name}/{version}: {err}") from err
        onnx_path, json_path = find_model_files(Path(local))
        meta = read_model_meta(json_path, version=f"{name}/{version}", source=source)
        # onnxruntime reads the weights into memory, so the download can go afterwards.
        return Predictor(onnx_path, meta, threads)


def load_predictor(
    model_path: str, model_uri: str = "", allow_staging: bool = False, threads: int = 1, timeout_s: int = 10
) -> Predictor:
    """The registry model when `model_uri` is set, else the local one; raises ModelError."""
    if threads < 1:
        raise ModelError(f"onnxruntime threads must be >= 1, got {threads}")
    if model_uri:
        return load_registry(model_uri, allow_staging, threads, timeout_s)
    return load_local(model_path, threads)
