"""The model behind /predict: an onnxruntime CPU session behind the shared lib/ inference path.

A model is a `model.onnx` with a `model.json` beside it (input size, tensor names, normalisation,
provenance, and the operating point bin/evaluate.py chose on validation: the default `threshold` and
the image-level rule `min_area_fraction`, see lib/decision.py), read and checked by
lib/model_contract.py. Sessions come from lib/onnx_session.py and `predict` is lib.inference's
`predict_timed`, the path evaluation and the MLflow pyfunc model take. It comes from a local path or, when
configured, from the MLflow registry; mlflow is imported only on that path so the serving container
needs neither it nor torch.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from lib.inference import Prediction, predict_timed
from lib.model_contract import ModelContractError, ModelMeta, read_model_json
from lib.onnx_session import make_session, session_runner

log = logging.getLogger("polypseg.model")


class ModelError(RuntimeError):
    """A model that cannot be found, read, or run as the export contract says."""


@dataclass(frozen=True, kw_only=True)
class ServedMeta(ModelMeta):
    """The model contract (lib/model_contract.py) plus what only the server knows."""

    version: str  # what /predict reports as model_version (registry name/version when registered)
    source: str  # where it was loaded from: a path or a registry URI

    @property
    def artifact_version(self) -> str:
        """model_version written by the export step into model.json."""
        return self.model_version


def read_model_meta(json_path: Path, version: str | None = None, source: str = "") -> ServedMeta:
    """`model.json` read and checked by the shared contract; `version` overrides model_version (registry)."""
    source = source or str(json_path)
    try:
        meta = read_model_json(json_path, source=source)
    except ModelContractError as err:
        raise ModelError(str(err)) from err
    contract = {f.name: getattr(meta, f.name) for f in fields(ModelMeta)}
    return ServedMeta(**contract, version=version or meta.model_version, source=source)


class Predictor:
    """Wraps one onnxruntime session; `predict` maps an RGB image to probabilities at its size."""

    def __init__(self, onnx_path: Path, meta: ServedMeta, threads: int = 1):
        self.meta = meta
        self.threads = threads
        try:
            self.session = make_session(onnx_path, threads)
        except Exception as err:  # onnxruntime raises several private exception types
            raise ModelError(f"onnxruntime cannot load {onnx_path}: {err}") from err
        self._check_io()
        self._runner = session_runner(self.session, meta.input_name, meta.output_name)
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
        """The RunModel behind `predict`: the session, with its output shape checked."""
        logits = self._runner(x)
        size = self.meta.input_size
        if logits.size != size * size:
            raise ModelError(f"model output shape {logits.shape} is not (1, 1, {size}, {size})")
        return logits.reshape(1, 1, size, size)

    def warm_up(self) -> None:
        """One inference on zeros: allocates buffers so the first real request is not slow."""
        size = self.meta.input_size
        self._run(np.zeros((1, 3, size, size), np.float32))

    def predict(self, rgb: np.ndarray) -> Prediction:
        """`(H, W, 3) uint8` RGB -> probabilities `(H, W) float32` and stage timings (lib/inference.py)."""
        return predict_timed(self._run, rgb, self.meta.input_size, self.meta.mean, self.meta.std)


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
