"""The model contract (lib/model_contract.py): one writer, one reader, every field checked by name."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from lib.model_contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelContractError,
    ModelMeta,
    meta_to_dict,
    read_model_json,
    write_model_json,
)

ROOT = Path(__file__).resolve().parents[1]
META = ModelMeta(
    input_size=256,
    input_name=INPUT_NAME,
    output_name=OUTPUT_NAME,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    threshold=0.65,
    min_area_fraction=0.005,
    decision_chosen_on="val (150 images + 317 negative crops)",
    model_version="989f0e0-44b7981d",
    git_sha="989f0e0deb2e9a0c9c41faadb8d499c5e57e5b95",
    data_rev="cd09d52999ff0a916c1d4333015faa6f.dir",
    opset=20,
    sha256="a" * 64,
    run_id="44b7981dd63f46d1af1eff1af4e9c2c7",
    git_dirty=False,
    val_dice=0.876,
    epoch=15,
    encoder="tu-resnet34",
)
# The keys bin/export.py has written since the image-level rule (reports/ and old files use them).
EXPORT_KEYS = (
    "input_size input_name output_name mean std threshold min_area_fraction decision_chosen_on model_version "
    "git_sha data_rev opset run_id git_dirty val_dice epoch encoder precision sha256 min_component_ratio"
).split()


def written(tmp_path, **changes) -> str:
    """model.json of META with `changes` (None deletes the key), as a path."""
    raw = {**meta_to_dict(META), **changes}
    path = tmp_path / "model.json"
    path.write_text(json.dumps({k: v for k, v in raw.items() if v is not None}))
    return str(path)


def test_writer_then_reader_round_trips(tmp_path):
    assert read_model_json(write_model_json(tmp_path / "model.json", META)) == META
    int8 = replace(META, precision="int8", fp32_sha256="b" * 64, quantization={"format": "QDQ"})
    assert read_model_json(write_model_json(tmp_path / "int8.json", int8)) == int8


def test_the_file_keeps_the_existing_key_names(tmp_path):
    raw = json.loads(write_model_json(tmp_path / "model.json", META).read_text())
    assert raw["mean"] == [0.485, 0.456, 0.406] and raw["sha256"] == "a" * 64
    assert set(raw) == set(EXPORT_KEYS)  # the names model.json has always had, and the component filter
    assert "fp32_sha256" not in raw and "quantization" not in raw  # optional fields that are None


@pytest.mark.parametrize(
    "key", ["mean", "std", "threshold", "input_size", "sha256", "model_version", "opset"]
)
def test_a_model_json_without_a_required_field_is_refused_naming_it(tmp_path, key):
    with pytest.raises(ModelContractError, match=f"no '{key}'"):
        read_model_json(written(tmp_path, **{key: None}))


@pytest.mark.parametrize(
    "key, value",
    [
        ("mean", [0.5, 0.5]),
        ("mean", ["0.5", 0.5, 0.5]),
        ("std", [0.5, 0.0, 0.5]),
        ("threshold", 1.5),
        ("threshold", True),
        ("min_area_fraction", None),
        ("input_size", 64.0),
        ("input_name", ""),
        ("opset", "20"),
        ("sha256", "abc"),
        ("precision", "fp16"),
        ("val_dice", "high"),
        ("min_component_ratio", 1.5),
        ("min_component_ratio", "0.2"),
    ],
)
def test_a_malformed_field_is_refused_naming_it(tmp_path, key, value):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**meta_to_dict(META), key: value}))
    with pytest.raises(ModelContractError, match=f"'{key}' must be"):
        read_model_json(path)


def test_every_problem_is_named_at_once_and_junk_is_not_a_model_json(tmp_path):
    message = str(
        pytest.raises(ModelContractError, read_model_json, written(tmp_path, mean=None, std=None)).value
    )
    assert "no 'mean'" in message and "no 'std'" in message
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ModelContractError, match="expected a JSON object"):
        read_model_json(tmp_path / "list.json")
    with pytest.raises(ModelContractError, match="cannot read"):
        read_model_json(tmp_path / "absent.json")


def test_the_writer_refuses_what_the_reader_would(tmp_path):
    with pytest.raises(ModelContractError, match="'threshold' must be"):
        write_model_json(tmp_path / "model.json", replace(META, threshold=float("nan")))
    assert not (tmp_path / "model.json").exists()


def test_legacy_model_json_without_min_area_fraction_loads_with_one_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="polypseg.model")
    meta = read_model_json(written(tmp_path, min_area_fraction=None, decision_chosen_on=None))
    assert meta.min_area_fraction == 0.0 and meta.decision_chosen_on == "unknown"
    assert len(caplog.records) == 1 and "min_area_fraction" in caplog.text


@pytest.mark.skipif(not (ROOT / "models/model.json").is_file(), reason="needs the export stage's model.json")
def test_the_pipelines_own_model_json_reads():
    assert read_model_json(ROOT / "models/model.json").precision == "fp32"


def test_a_model_json_from_before_the_component_filter_reads_as_filter_off(tmp_path):
    meta = read_model_json(written(tmp_path, min_component_ratio=None))
    assert meta.min_component_ratio == 0.0  # what those models were served with
    assert read_model_json(written(tmp_path, min_component_ratio=0.3)).min_component_ratio == 0.3
