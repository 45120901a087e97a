"""The pyfunc's prediction path (lib/pyfunc_model.py) on the tiny real ONNX model, without MLflow logging."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from lib.inference import predict_probability
from lib.io import decode_image
from lib.model_contract import read_model_json
from lib.onnx_session import make_session, session_runner
from lib.pyfunc_model import OUTPUT_COLUMNS, PolypSegModel, example_frame, predict_masks
from serve.predictor import load_local
from tests.support.harness import sample_image_bytes
from tests.support.tinymodel import write_tiny_model


def predict(tmp_path, threshold: float, min_area: float):
    path = write_tiny_model(tmp_path / "model", size=64)
    meta = replace(read_model_json(path.with_name("model.json")), min_area_fraction=min_area)
    images = [base64.b64encode(sample_image_bytes()).decode("ascii")]
    return predict_masks(session_runner(make_session(path)), images, meta, threshold)


def test_polyp_detected_applies_the_minimum_area_to_the_mask(tmp_path):
    anything, strict = predict(tmp_path, 0.5, 0.0), predict(tmp_path, 0.5, 0.99)
    assert list(anything.columns) == OUTPUT_COLUMNS
    assert anything.polyp_fraction[0] == strict.polyp_fraction[0] and 0 < strict.polyp_fraction[0] < 0.99
    assert bool(anything.polyp_detected[0]) and not strict.polyp_detected[0]


def test_an_empty_mask_is_never_a_detection(tmp_path):
    out = predict(tmp_path, 1.0, 0.0)  # the tiny model's sigmoid stays below 1
    assert out.polyp_fraction[0] == 0.0 and not out.polyp_detected[0]


def load_pyfunc(onnx_path) -> PolypSegModel:
    """The pyfunc as MLflow loads it: load_context with the two artifacts."""
    model = PolypSegModel()
    artifacts = {"model_onnx": str(onnx_path), "model_json": str(onnx_path.with_name("model.json"))}
    model.load_context(SimpleNamespace(artifacts=artifacts))
    return model


def test_model_json_without_min_area_fraction_means_zero_and_says_so(tmp_path, caplog):
    path = write_tiny_model(tmp_path, size=64)
    legacy = json.loads(path.with_name("model.json").read_text())
    del legacy["min_area_fraction"]
    path.with_name("model.json").write_text(json.dumps(legacy))
    caplog.set_level(logging.WARNING, logger="polypseg.model")
    assert load_pyfunc(path).meta.min_area_fraction == 0.0
    assert "min_area_fraction" in caplog.text


def test_server_and_pyfunc_give_identical_probabilities_through_the_shared_path(tmp_path):
    path = write_tiny_model(tmp_path, size=64)
    image = sample_image_bytes()
    rgb = decode_image(image)
    served = load_local(path).predict(rgb)
    pyfunc = load_pyfunc(path)
    meta = pyfunc.meta
    prob = predict_probability(pyfunc.run_model, rgb, meta.input_size, meta.mean, meta.std)
    assert prob.shape == served.prob.shape == rgb.shape[:2] and np.array_equal(prob, served.prob)
    assert min(served.preprocess_ms, served.inference_ms, served.postprocess_ms) >= 0
    out = pyfunc.predict(None, example_frame(image))
    assert out.polyp_fraction[0] == float((served.prob >= meta.threshold).mean())
