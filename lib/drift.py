"""Offline drift report: the feature table of a set of images, Evidently's per-column tests, drift.json.

A row per image: the pure image features of lib/image_features.py plus what the served model makes of
the image (MODEL_FEATURE_NAMES), computed through the path serving takes: model.json read by
lib/model_contract.py, an onnxruntime session from lib/onnx_session.py, lib.inference's
`predict_probability` (lib/preprocess.py inside), and the mask at model.json's threshold, as /predict
binarises it. The reference rows (validation split) and the current rows must come from the same model
file, so a model-side difference means the inputs changed, not the model: reference.csv carries the
model's sha256 and `check_reference` refuses a mismatch.

Current images come from the server's shadow directory (serve/shadow.py:
`DIR/YYYY-MM-DD/<time>_<id>_<rand>/input.jpg|png + record.json`) or any folder of JPEG/PNG files.
The report's MLflow side (the served version's run, attaching the report to it) is lib/drift_tracking.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.decision import binary_mask, count_components
from lib.image_features import FEATURE_NAMES, image_features
from lib.inference import predict_probability
from lib.io import DecodeError, decode_image, read_json, sha256_file
from lib.model_contract import ModelContractError, ModelMeta, read_model_json
from lib.onnx_session import make_session, session_runner

# A pixel is uncertain when the model's probability is between these: neither clearly polyp nor clearly
# background. A shift the model has not seen (blur, another scope) widens this band before Dice drops.
UNCERTAIN_LOW, UNCERTAIN_HIGH = 0.3, 0.7
MODEL_FEATURE_NAMES = (
    "predicted_polyp_share",  # share of the image in the mask at model.json's threshold (= /predict's)
    "n_components",  # connected regions (8-connected) of that mask
    "uncertain_share",  # share of pixels with UNCERTAIN_LOW <= probability <= UNCERTAIN_HIGH
)
FEATURE_COLUMNS = FEATURE_NAMES + MODEL_FEATURE_NAMES  # the columns the drift tests compare
ID_COLUMNS = ("image", "model_version", "model_sha256")  # carried in the CSVs, never tested
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what /predict accepts


class DriftInputError(ValueError):
    """Input the report cannot be made from: too few images, a reference from another model, ..."""


def model_features(prob: np.ndarray, threshold: float, min_component_ratio: float = 0.0) -> dict[str, float]:
    """MODEL_FEATURE_NAMES of one `(H, W) float32` probability map; the mask is /predict's,
    `binary_mask(prob, threshold, min_component_ratio)` (lib/decision.py)."""
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError(f"expected an (H, W) probability map, got shape {prob.shape}")
    mask = binary_mask(prob, threshold, min_component_ratio).astype(np.uint8)
    uncertain = (prob >= UNCERTAIN_LOW) & (prob <= UNCERTAIN_HIGH)
    return {
        "predicted_polyp_share": float(mask.mean()),
        "n_components": float(count_components(mask)),
        "uncertain_share": float(uncertain.mean()),
    }


@dataclass(frozen=True)
class DriftModel:
    """The model whose view of the images the model-side features record."""

    path: str
    meta: ModelMeta
    sha256: str  # of the ONNX file, checked against model.json's
    predict: Callable[[np.ndarray], np.ndarray]  # `(H, W, 3) uint8` RGB -> `(H, W) float32` probability


def load_model(model_path: str | Path, threads: int) -> DriftModel:
    """`model.onnx` (or a folder holding it) + `model.json` beside it; ModelContractError if they differ."""
    onnx_path = Path(model_path)
    if onnx_path.is_dir():
        onnx_path = onnx_path / "model.onnx"
    if not onnx_path.is_file():
        raise FileNotFoundError(f"model file not found: {onnx_path}")
    meta = read_model_json(onnx_path.with_name("model.json"))
    sha = sha256_file(onnx_path)
    if sha != meta.sha256:
        raise ModelContractError(f"{onnx_path} is not the file its model.json describes (sha256 differs)")
    run = session_runner(make_session(onnx_path, threads), meta.input_name, meta.output_name)

    def predict(rgb: np.ndarray) -> np.ndarray:
        return predict_probability(run, rgb, meta.input_size, meta.mean, meta.std)

    return DriftModel(str(onnx_path), meta, sha, predict)


def feature_row(data: bytes, model: DriftModel) -> dict[str, float]:
    """FEATURE_COLUMNS of one encoded image; raises lib.io.DecodeError when it cannot be decoded."""
    rgb = decode_image(data)
    prob = model.predict(rgb)
    return {
        **image_features(rgb, len(data)),
        **model_features(prob, model.meta.threshold, model.meta.min_component_ratio),
    }


def feature_table(images: list[tuple[str, Path]], model: DriftModel) -> tuple[pd.DataFrame, list[str]]:
    """(one row per decodable image: ID_COLUMNS + FEATURE_COLUMNS, names of the undecodable ones)."""
    rows, skipped = [], []
    for name, path in images:
        try:
            features = feature_row(path.read_bytes(), model)
        except (DecodeError, cv2.error):
            skipped.append(name)
            continue
        rows.append({"image": name, "model_version": model.meta.model_version, "model_sha256": model.sha256})
        rows[-1].update(features)
    return pd.DataFrame(rows, columns=[*ID_COLUMNS, *FEATURE_COLUMNS]), skipped


@dataclass
class CurrentImages:
    """The images of a report's current side and what their source says about them."""

    images: list[tuple[str, Path]]  # (name, file)
    source: str  # "shadow" or "folder"
    versions: Counter = field(default_factory=Counter)  # model_version -> shadow records (shadow only)
    # name -> (polyp_fraction /predict returned, the threshold it was computed at)
    served_share: dict[str, tuple[float, float]] = field(default_factory=dict)
    without_input: int = 0  # shadow records whose image was not stored (over the per-request cap)


def shadow_images(root: Path) -> CurrentImages:
    """Every complete request folder of a shadow directory (serve/shadow.py writes record.json last)."""
    found = CurrentImages([], "shadow")
    for record_path in sorted(root.glob("*/*/record.json")):
        folder = record_path.parent
        record = read_json(record_path)
        inputs = sorted(p for p in folder.glob("input.*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not record.get("input_stored", True) or not inputs:
            found.without_input += 1
            continue
        name = f"{folder.parent.name}/{folder.name}"
        found.images.append((name, inputs[0]))
        found.versions[str(record.get("model_version", "unknown"))] += 1
        share, threshold = record.get("polyp_fraction"), record.get("threshold")
        if isinstance(share, (int, float)) and isinstance(threshold, (int, float)):
            found.served_share[name] = (float(share), float(threshold))
    return found


def current_images(root: str | Path) -> CurrentImages:
    """A shadow directory (it has `*/*/record.json`) or else every JPEG/PNG below `root`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"current image folder not found: {root}")
    if any(root.glob("*/*/record.json")):
        return shadow_images(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return CurrentImages([(str(p.relative_to(root)), p) for p in files], "folder")


def check_reference(reference: pd.DataFrame, model: DriftModel, where: str) -> None:
    """DriftInputError unless `reference` has every feature column and was computed with `model`."""
    missing = [c for c in (*FEATURE_COLUMNS, "model_sha256") if c not in reference.columns]
    if missing:
        raise DriftInputError(
            f"{where}: missing column(s) {', '.join(missing)}; rebuild it (make drift_reference)"
        )
    if len(reference) == 0:
        raise DriftInputError(f"{where}: no rows")
    shas = set(reference["model_sha256"].astype(str))
    if shas != {model.sha256}:
        raise DriftInputError(
            f"{where} was computed with another model (sha256 {', '.join(sorted(s[:12] for s in shas))}) "
            f"than {model.path} ({model.sha256[:12]}): model-side features would not compare; rebuild the "
            "reference with this model (make drift_reference, or bin/drift_reference.py --set model=...)"
        )
    bad = [c for c in FEATURE_COLUMNS if not np.isfinite(reference[c].to_numpy(dtype=float)).all()]
    if bad:
        raise DriftInputError(f"{where}: non-finite values in {', '.join(bad)}")


def run_evidently(
    reference: pd.DataFrame, current: pd.DataFrame, method: str, threshold: float, drift_share: float
):
    """Evidently's DataDriftPreset over FEATURE_COLUMNS, with its per-column tests: the evaluation."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(FEATURE_COLUMNS)
    definition = DataDefinition(numerical_columns=columns)
    preset = DataDriftPreset(columns=columns, method=method, threshold=threshold, drift_share=drift_share)
    report = Report([preset], include_tests=True)
    # A constant column (every image the same height) makes Evidently's correlation plots divide 0 by 0:
    # harmless for the tests, which compare distributions, so the warning is silenced rather than printed.
    with np.errstate(divide="ignore", invalid="ignore"):
        return report.run(
            Dataset.from_pandas(current[columns].astype(float), data_definition=definition),
            Dataset.from_pandas(reference[columns].astype(float), data_definition=definition),
        )


def summarise(evaluation: dict, drift_share: float) -> dict:
    """drift.json's core from an evaluation's `dict()`: dataset drift, share and each column's test.

    A column's `drifted` is Evidently's own per-column test (ValueDrift); the dataset drifts when the
    share of drifted columns reaches `drift_share`, Evidently's DriftedColumnsCount rule.
    """
    scores, share, method, threshold = {}, None, None, None
    for metric in evaluation["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = float(metric["value"])
            method, threshold = config.get("method"), config.get("threshold")
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    drifted = {}
    for test in evaluation["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift"):
            drifted[params["column"]] = test["status"] == "FAIL"
    if share is None or set(scores) != set(drifted):
        raise RuntimeError("Evidently's result lacks the drift share or a column's test (API change?)")
    return {
        "dataset_drift": share >= drift_share,
        "drifted_share": share,
        "drift_share": drift_share,
        "method": method,
        "threshold": threshold,
        "features": {c: {"drift_score": scores[c], "drifted": drifted[c]} for c in FEATURE_COLUMNS},
    }


def served_versions(found: CurrentImages, model: DriftModel) -> tuple[str, list[str]]:
    """(the model version the report is about, warnings): the shadow records' version, else the model's."""
    if not found.versions:
        return model.meta.model_version, []
    version, n = found.versions.most_common(1)[0]
    warnings = []
    if len(found.versions) > 1:
        others = ", ".join(f"{v} ({k})" for v, k in found.versions.most_common()[1:])
        warnings.append(f"shadow records name several model versions: {version} ({n}) and {others}")
    return version, warnings


def served_share_difference(found: CurrentImages, current: pd.DataFrame, threshold: float) -> float | None:
    """Largest |served polyp_fraction - recomputed predicted_polyp_share| over the shadow images.

    About 0 when the report's model is the served one: the model-side features then are what /predict
    returned. Only requests answered at the model's own `threshold` compare (a client may ask for
    another); None when there are none.
    """
    recomputed = dict(zip(current["image"], current["predicted_polyp_share"]))
    diffs = [
        abs(share - recomputed[name])
        for name, (share, at) in found.served_share.items()
        if name in recomputed and at == threshold
    ]
    return float(max(diffs)) if diffs else None
