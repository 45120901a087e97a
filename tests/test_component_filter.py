"""Every consumer of an exported model makes the same mask: model.json's threshold and its small-component
filter (lib.decision.binary_mask), so a speck the evaluation dropped is dropped by serving, the MLflow pyfunc
model, batch and video prediction, and the drift features too. Real tiny ONNX model, real image bytes."""

import base64

import cv2
import falcon.testing
import numpy as np
import pytest

from lib.batch_predict import Segmenter
from lib.decision import Decision
from lib.drift import feature_row, load_model
from lib.model_contract import read_model_json
from lib.onnx_session import make_session, session_runner
from lib.pyfunc_model import predict_masks
from lib.video import FrameSegmenter
from serve.app import create_app
from serve.predictor import load_local
from serve.settings import Settings
from tests.support.tinymodel import write_tiny_model

SIZE = 64
POLYP, SPECK = 20 * 20, 2 * 2  # pixels of the red square and of the red speck


def frame() -> np.ndarray:
    """A 64x64 BGR frame the tiny model reads as a 20x20 polyp and a 2x2 speck (red is polyp, green not)."""
    bgr = np.zeros((SIZE, SIZE, 3), np.uint8)
    bgr[..., 1] = 200
    bgr[5:25, 5:25] = (0, 0, 255)
    bgr[50:52, 50:52] = (0, 0, 255)
    return bgr


def png_bytes() -> bytes:
    return cv2.imencode(".png", frame())[1].tobytes()


@pytest.fixture(params=[0.0, 0.1], ids=["filter-off", "filter-0.1"])
def model(request, tmp_path):
    decision = Decision(0.5, 0.0, "test", min_component_ratio=request.param)
    path = write_tiny_model(tmp_path / "model", size=SIZE, decision=decision)
    return path, request.param


def expected_area(ratio: float) -> int:
    return POLYP if ratio > 0 else POLYP + SPECK


def test_model_json_carries_the_filter(model):
    path, ratio = model
    meta = read_model_json(path.with_name("model.json"))
    assert meta.min_component_ratio == ratio
    assert meta.mask(np.zeros((4, 4), np.float32)).dtype == bool


def test_served_mask(model):
    path, ratio = model
    client = falcon.testing.TestClient(create_app(load_local(path), Settings()))
    resp = client.simulate_post(
        "/predict", body=png_bytes(), headers={"Content-Type": "image/png", "Accept": "image/png"}
    )
    assert resp.status_code == 200, resp.text
    mask = cv2.imdecode(np.frombuffer(resp.content, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert int(np.count_nonzero(mask)) == expected_area(ratio)
    assert mask[50:52, 50:52].any() == (ratio == 0)


def test_pyfunc_mask(model):
    path, ratio = model
    meta = read_model_json(path.with_name("model.json"))
    run = session_runner(make_session(path, 1), meta.input_name, meta.output_name)
    row = predict_masks(run, [base64.b64encode(png_bytes()).decode()], meta, meta.threshold).iloc[0]
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(row["mask_png"]), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert int(np.count_nonzero(mask)) == expected_area(ratio)
    assert row["polyp_fraction"] == pytest.approx(expected_area(ratio) / SIZE**2)


def test_batch_mask(model, tmp_path):
    path, ratio = model
    image = tmp_path / "frame.png"
    image.write_bytes(png_bytes())
    out = Segmenter(str(path))({"path": np.array([str(image)]), "name": np.array(["frame.png"])})
    assert out["status"][0] == "ok", out["error"][0]
    assert out["polyp_share"][0] == pytest.approx(expected_area(ratio) / SIZE**2, abs=1e-6)
    assert out["components"][0] == (1 if ratio > 0 else 2)


def test_video_mask(model):
    path, ratio = model
    meta = read_model_json(path.with_name("model.json"))
    run = session_runner(make_session(path, 1), meta.input_name, meta.output_name)
    mask = FrameSegmenter(run, meta)(frame())
    assert int(np.count_nonzero(mask)) == expected_area(ratio)


def test_drift_features_see_the_served_mask(model):
    path, ratio = model
    row = feature_row(png_bytes(), load_model(path, threads=1))
    assert row["predicted_polyp_share"] == pytest.approx(expected_area(ratio) / SIZE**2)
    assert row["n_components"] == (1 if ratio > 0 else 2)
