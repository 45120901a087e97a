"""Loading a model for serving: model.json checks, graph cross-checks, registry URIs (serve/predictor.py)."""

import json
import logging

import falcon
import falcon.testing
import pytest
from test_serve_app import post

from serve.app import create_app
from serve.predictor import ModelError, load_local, load_predictor, read_model_meta
from serve.settings import Settings
from tests.support.harness import sample_image_bytes
from tests.support.tinymodel import write_tiny_model


def tiny_meta(tmp_path, **changes) -> dict:
    """The tiny model's model.json (written by the shared contract) with `changes`; None deletes a key."""
    write_tiny_model(tmp_path, size=64)
    meta = {**json.loads((tmp_path / "model.json").read_text()), **changes}
    meta = {k: v for k, v in meta.items() if v is not None}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    return meta


def test_unloadable_model_file_is_a_model_error(tmp_path):
    tiny_meta(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="cannot load"):
        load_local(tmp_path / "model.onnx")


def test_model_metadata_that_contradicts_the_graph_is_refused(tmp_path):
    path = write_tiny_model(tmp_path, size=64)
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "input_size": 128}))
    with pytest.raises(ModelError, match="does not fit"):
        load_local(path)
    (tmp_path / "model.json").write_text(json.dumps({**meta, "output_name": "probs"}))
    with pytest.raises(ModelError, match="no output"):
        load_local(path)


def test_registry_uri_must_name_a_model():
    with pytest.raises(ModelError, match="models:/NAME@ALIAS"):
        load_predictor("unused", model_uri="polyp-seg-unet@production")


def test_metadata_threshold_must_be_a_probability(tmp_path):
    tiny_meta(tmp_path, threshold=2)
    with pytest.raises(ModelError, match="'threshold' must be a number in \\[0, 1\\], got 2"):
        read_model_meta(tmp_path / "model.json")


def test_metadata_without_threshold_is_refused(tmp_path):
    tiny_meta(tmp_path, threshold=None)
    with pytest.raises(ModelError, match="no 'threshold'"):
        read_model_meta(tmp_path / "model.json")


@pytest.mark.parametrize("key", ["mean", "std"])
def test_metadata_without_normalisation_is_refused_not_defaulted(tmp_path, key):
    # An ImageNet-normalised model served with a guessed 0.5 would answer, wrongly, without a word.
    path = write_tiny_model(tmp_path, size=64)
    tiny_meta(tmp_path, **{key: None})
    with pytest.raises(ModelError, match=f"no '{key}'"):
        load_local(path)


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.2", True, [0.1]])
def test_metadata_min_area_fraction_must_be_a_fraction(tmp_path, value):
    tiny_meta(tmp_path, min_area_fraction=value)
    with pytest.raises(ModelError, match="min_area_fraction"):
        read_model_meta(tmp_path / "model.json")


def test_older_model_json_without_min_area_fraction_loads_as_zero_with_one_warning(tmp_path, caplog):
    path = write_tiny_model(tmp_path, size=64)
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["min_area_fraction"], meta["decision_chosen_on"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    caplog.set_level(logging.WARNING, logger="polypseg.model")
    client = falcon.testing.TestClient(create_app(load_local(path), Settings()))
    for _ in range(2):
        body = post(client, sample_image_bytes()).json
        assert body["min_area_fraction"] == 0.0 and body["polyp_detected"] is True
    warnings = [r for r in caplog.records if r.name == "polypseg.model" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "min_area_fraction" in warnings[0].getMessage()
    assert client.simulate_get("/version").json["model"]["decision_chosen_on"] == "unknown"
