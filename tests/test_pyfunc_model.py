"""The pyfunc's prediction path (lib/pyfunc_model.py) on the tiny real ONNX model, without MLflow logging."""

from __future__ import annotations

import base64
import json
import logging

from lib.onnx_export import ort_runner, ort_session
from lib.pyfunc_model import OUTPUT_COLUMNS, min_area_fraction, predict_masks
from tests.support.harness import sample_image_bytes
from tests.support.tinymodel import write_tiny_model


def predict(tmp_path, threshold: float, min_area: float):
    path = write_tiny_model(tmp_path / "model", size=64)
    meta = json.loads(path.with_name("model.json").read_text())
    images = [base64.b64encode(sample_image_bytes()).decode("ascii")]
    return predict_masks(ort_runner(ort_session(path)), images, meta, threshold, min_area)


def test_polyp_detected_applies_the_minimum_area_to_the_mask(tmp_path):
    anything, strict = predict(tmp_path, 0.5, 0.0), predict(tmp_path, 0.5, 0.99)
    assert list(anything.columns) == OUTPUT_COLUMNS
    assert anything.polyp_fraction[0] == strict.polyp_fraction[0] and 0 < strict.polyp_fraction[0] < 0.99
    assert bool(anything.polyp_detected[0]) and not strict.polyp_detected[0]


def test_an_empty_mask_is_never_a_detection(tmp_path):
    out = predict(tmp_path, 1.0, 0.0)  # the tiny model's sigmoid stays below 1
    assert out.polyp_fraction[0] == 0.0 and not out.polyp_detected[0]


def test_model_json_without_min_area_fraction_means_zero_and_says_so(caplog):
    caplog.set_level(logging.WARNING, logger="polypseg.pyfunc")
    assert min_area_fraction({"threshold": 0.5}) == 0.0
    assert "min_area_fraction" in caplog.text
    assert min_area_fraction({"min_area_fraction": 0.25}) == 0.25
