"""The MLflow pyfunc wrapper: base64 images in, base64 PNG masks out, through the shared lib/ path.

Input: a DataFrame with a string column `image` (base64 JPEG/PNG bytes). Output: a DataFrame with
`mask_png` (base64 PNG, 0/255, at the original size), `width`, `height`, `polyp_fraction` and
`polyp_detected` (lib.decision.polyp_detected on that mask with model.json's `min_area_fraction`).
Optional param `threshold` (default: model.json's). Artifacts: `model_onnx`, `model_json` (read by
lib/model_contract.py); the threshold and `min_area_fraction` in model.json are the operating point
chosen on validation. Probabilities come from lib.inference, the path the server and evaluation take.
It is logged as an MLflow "model from code" (this file is the model's code, nothing is pickled)
with code_paths=["lib"], so it loads wherever mlflow, onnxruntime and OpenCV are.
"""

from __future__ import annotations

import base64
import os

import cv2
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, set_model
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from lib.decision import polyp_detected
from lib.inference import predict_probability
from lib.io import decode_image
from lib.model_contract import INPUT_NAME, OUTPUT_NAME, ModelMeta, read_model_json
from lib.onnx_session import make_session, session_runner

OUTPUT_COLUMNS = ["mask_png", "width", "height", "polyp_fraction", "polyp_detected"]
THREADS_ENV = "POLYPSEG_ORT_THREADS"  # onnxruntime intra-op threads inside the pyfunc (default 1)


def encode_png(mask: np.ndarray) -> bytes:
    """`(H, W) uint8` -> PNG bytes."""
    ok, buf = cv2.imencode(".png", mask)
    if not ok:
        raise ValueError("could not encode the mask as PNG")
    return buf.tobytes()


def predict_masks(run_model, images: list[str], meta: ModelMeta, threshold: float) -> pd.DataFrame:
    """Base64 images -> the output DataFrame (one row per image), masks at `threshold` with model.json's
    component filter, and `polyp_detected` by its `min_area_fraction` (lib.decision)."""
    rows = []
    for i, b64 in enumerate(images):
        try:
            rgb = decode_image(base64.b64decode(b64, validate=True))
        except ValueError as exc:  # binascii.Error and DecodeError are both ValueErrors
            raise ValueError(f"row {i}: 'image' is not a base64 JPEG/PNG: {exc}") from None
        prob = predict_probability(run_model, rgb, meta.input_size, meta.mean, meta.std)
        mask = meta.mask(prob, threshold).astype(np.uint8)
        rows.append(
            {
                "mask_png": base64.b64encode(encode_png(mask * 255)).decode("ascii"),
                "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0]),
                "polyp_fraction": float(mask.mean()),
                "polyp_detected": polyp_detected(mask, meta.min_area_fraction),
            }
        )
    return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


class PolypSegModel(PythonModel):
    """onnxruntime behind the same preprocessing as training and evaluation."""

    def load_context(self, context):
        self.meta = read_model_json(context.artifacts["model_json"])  # read once: an old one warns once
        threads = int(os.environ.get(THREADS_ENV, "1"))
        session = make_session(context.artifacts["model_onnx"], threads=threads)
        self.run_model = session_runner(session, self.meta.input_name, self.meta.output_name)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if "image" not in model_input:
            raise ValueError("input needs a string column 'image' holding base64 JPEG/PNG bytes")
        threshold = float((params or {}).get("threshold", self.meta.threshold))
        return predict_masks(self.run_model, list(model_input["image"]), self.meta, threshold)


def pyfunc_signature(threshold: float) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema(
            [
                ColSpec("string", "mask_png"),
                ColSpec("long", "width"),
                ColSpec("long", "height"),
                ColSpec("double", "polyp_fraction"),
                ColSpec("boolean", "polyp_detected"),
            ]
        ),
        params=ParamSchema([ParamSpec("threshold", "double", float(threshold))]),
    )


def onnx_signature(size: int, input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (1, 3, size, size), input_name)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (1, 1, size, size), output_name)]),
    )


def example_frame(image_bytes: bytes) -> pd.DataFrame:
    """The pyfunc input example: one base64 image."""
    return pd.DataFrame({"image": [base64.b64encode(image_bytes).decode("ascii")]})


def small_jpeg(rgb: np.ndarray, width: int = 96) -> bytes:
    """`(H, W, 3) uint8` RGB -> a JPEG `width` pixels wide (aspect kept): a compact input example."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("could not encode the example image")
    return buf.tobytes()


# Models from code: mlflow runs this file when it loads the model and takes the object set here.
set_model(PolypSegModel())
