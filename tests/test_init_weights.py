"""`train.init_from`: a path, `models:/NAME@alias` or `models:/NAME/N` gives back the saved weights.

A real SQLite MLflow store in tmp_path, no mocks. Version 1 is registered the way the pipeline does it:
lib.registry.log_exported_models (the tiny stand-in ONNX model of tests.support.tinymodel, plus the
checkpoint, as bin/export.py passes it) then register_run and @staging. Version 2 stands for a version
registered before the checkpoint was logged: its run holds no checkpoint. The checkpoint is a tiny
random-weight Lite0 U-Net in bin/train.py's format, so the module takes seconds.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.init_weights import InitWeightsError, load_init_weights, resolve_init_checkpoint
from lib.model import ModelConfig, build_model, normalisation
from lib.preprocess import prepare_input
from lib.pyfunc_model import small_jpeg
from lib.registry import (
    CHECKPOINT_ARTIFACT,
    client,
    log_exported_models,
    register_run,
    run_for_checkpoint,
    set_staging,
)
from lib.tracking import setup_mlflow
from tests.support.tinymodel import write_tiny_model

NAME = "polyp-seg-unet"
CFG = ModelConfig(
    arch="Unet",
    encoder="tu-tf_efficientnet_lite0",
    encoder_weights=None,
    decoder_channels=(16, 16, 16, 16, 8),
    input_size=64,
)


def save_checkpoint(path: Path, run_id: str) -> dict:
    """A random-weight U-Net saved with bin/train.py's keys; returns its state dict."""
    torch.manual_seed(0)
    state = build_model(CFG).state_dict()
    mean, std = normalisation(CFG.encoder)
    meta = {
        "git_sha": "abc1234",
        "git_dirty": False,
        "data_rev": "rev0",
        "model_version": "abc1234-init",
        "run_id": run_id,
        "epoch": 2,
        "val_dice": 0.61,
    }
    payload = {"state_dict": state, "model_config": asdict(CFG), "config": {}, "mean": list(mean)}
    torch.save({**payload, "std": list(std), "threshold": 0.5, "metadata": meta}, path)
    return state


@pytest.fixture(scope="module")
def registry(tmp_path_factory, empty_store):
    """v1 (@staging) exported with its checkpoint; v2 (@old) from a run without one."""
    root = tmp_path_factory.mktemp("init_from")
    shutil.copyfile(empty_store, root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        c = client()
        c.create_experiment("polyp-seg", artifact_location=(root / "artifacts").as_uri())
        mlflow = setup_mlflow("polyp-seg")
        with mlflow.start_run() as training:  # stands for the training run
            mlflow.log_metric("best_val_dice", 0.61)
        ckpt = root / "tiny.pt"  # not best.pt: the artifact gets its fixed name anyway
        state = save_checkpoint(ckpt, training.info.run_id)
        meta = torch.load(ckpt, weights_only=True)["metadata"]
        run_id, created = run_for_checkpoint(mlflow, "polyp-seg", meta)
        assert run_id == training.info.run_id and not created
        onnx_path = write_tiny_model(root / "onnx", size=64)
        rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        x, _ = prepare_input(rgb, 64, (0.5,) * 3, (0.5,) * 3)
        log_exported_models(
            mlflow, run_id, onnx_path, onnx_path.with_name("model.json"), small_jpeg(rgb), x, checkpoint=ckpt
        )
        v1, _ = register_run(c, NAME, mlflow.get_run(run_id), "tester")
        set_staging(c, NAME, v1.version, "tester")
        with mlflow.start_run() as older:  # an export from before the checkpoint was logged
            mlflow.log_text("{}", "export/model.json")
        v2 = c.create_model_version(NAME, f"runs:/{older.info.run_id}/export", run_id=older.info.run_id)
        c.set_registered_model_alias(NAME, "old", v2.version)
        yield {"root": root, "ckpt": ckpt, "state": state, "meta": meta, "v1": v1, "v2": v2}


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(1)  # other weights than the checkpoint's
    return build_model(CFG)


def assert_same_weights(model: torch.nn.Module, state: dict) -> None:
    got = model.state_dict()
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_registered_version_run_holds_the_checkpoint_at_the_fixed_path(registry):
    c = client()
    paths = [f.path for f in c.list_artifacts(registry["v1"].run_id, CHECKPOINT_ARTIFACT.rsplit("/", 1)[0])]
    assert paths == [CHECKPOINT_ARTIFACT] and registry["v1"].run_id == registry["meta"]["run_id"]


def test_a_path_spec_loads_the_saved_weights_and_returns_the_metadata(registry, tmp_path):
    model = fresh_model()
    assert not all(torch.equal(v, registry["state"][k]) for k, v in model.state_dict().items())
    path = resolve_init_checkpoint(str(registry["ckpt"]), tmp_path / "cache")
    assert path == registry["ckpt"] and not (tmp_path / "cache").exists()  # nothing downloaded
    meta = load_init_weights(model, path, CFG)
    assert_same_weights(model, registry["state"])
    assert meta == registry["meta"] and meta["run_id"] == registry["v1"].run_id


@pytest.mark.parametrize("spec", [f"models:/{NAME}@staging", f"models:/{NAME}/1"])
def test_a_registered_version_spec_downloads_its_checkpoint(registry, tmp_path, spec):
    path = resolve_init_checkpoint(spec, tmp_path / "cache")
    assert path.is_file() and path.name == "best.pt" and (tmp_path / "cache") in path.parents
    assert path.read_bytes() == registry["ckpt"].read_bytes()
    model = fresh_model()
    meta = load_init_weights(model, path, CFG)
    assert_same_weights(model, registry["state"])
    assert meta["model_version"] == "abc1234-init" and meta["run_id"] == registry["v1"].run_id


def test_a_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "best.pt"
    with pytest.raises(InitWeightsError, match="no such checkpoint file") as err:
        resolve_init_checkpoint(str(missing), tmp_path)
    assert str(missing) in str(err.value)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (f"models:/{NAME}@nope", f"{NAME} has no alias 'nope' (aliases: old, staging)"),
        (f"models:/{NAME}/9", f"{NAME} has no version 9 (versions: 1, 2)"),
        ("models:/no-such-model@staging", "no registered model 'no-such-model'"),
        (f"models:/{NAME}/Production", "use models:/NAME@ALIAS or models:/NAME/N"),
    ],
)
def test_an_unknown_model_alias_or_version_is_named(registry, tmp_path, spec, says):
    with pytest.raises(InitWeightsError) as err:
        resolve_init_checkpoint(spec, tmp_path)
    assert spec in str(err.value) and says in str(err.value)


@pytest.mark.parametrize("spec", [f"models:/{NAME}/2", f"models:/{NAME}@old"])
def test_a_version_without_the_checkpoint_artifact_says_so(registry, tmp_path, spec):
    with pytest.raises(InitWeightsError, match=f"has no checkpoint artifact {CHECKPOINT_ARTIFACT}") as err:
        resolve_init_checkpoint(spec, tmp_path)
    assert spec in str(err.value) and f"{NAME} v2" in str(err.value)


def test_a_mismatched_architecture_is_refused_and_the_model_is_left_alone(registry):
    other = replace(CFG, decoder_channels=(8, 8, 8, 8, 8))
    torch.manual_seed(1)
    model = build_model(other)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        InitWeightsError, match=r"decoder_channels \(16, 16, 16, 16, 8\) != \(8, 8, 8, 8, 8\)"
    ):
        load_init_weights(model, registry["ckpt"], other)
    assert_same_weights(model, before)
