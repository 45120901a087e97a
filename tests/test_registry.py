"""MLflow logging, registration, promotion and rollback against a real SQLite store in tmp_path.

The ONNX model is tests.support.tinymodel's one-convolution net (real onnxruntime, no torch export), so each
test takes seconds; tests/test_export.py covers the real U-Net export.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from bin_helpers import load_bin

from lib.decision import Decision
from lib.io import read_image
from lib.model_contract import read_model_json, write_model_json
from lib.preprocess import prepare_input
from lib.pyfunc_model import example_frame, small_jpeg
from lib.registry import (
    HISTORY_TAG,
    PRODUCTION,
    SHA_TAG,
    STAGING,
    client,
    log_exported_models,
    model_card,
    run_for_checkpoint,
)
from lib.tracking import setup_mlflow
from tests.support.tinymodel import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "data" / "raw" / "Kvasir-SEG" / "images"
VAL = ROOT / "data" / "splits" / "val.csv"
NAME = "polyp-seg-unet"
pytestmark = pytest.mark.skipif(not IMAGES.is_dir(), reason="needs data/raw/Kvasir-SEG (make data)")


def first_val_image() -> Path:
    return IMAGES / f"{VAL.read_text().splitlines()[1].split(',')[0]}.jpg"


@pytest.fixture
def mlflow(tmp_path, monkeypatch, empty_store):
    """A fresh SQLite tracking store with experiment polyp-seg, artifacts in tmp_path."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    c = client()
    c.create_experiment("polyp-seg", artifact_location=(tmp_path / "artifacts").as_uri())
    return setup_mlflow("polyp-seg")


def checkpoint_meta(run_id: str = "f" * 32, val_dice: float = 0.7, version: str = "abc1234-00000000") -> dict:
    return {
        "git_sha": "abc1234",
        "git_dirty": False,
        "data_rev": "rev0",
        "model_version": version,
        "run_id": run_id,
        "epoch": 3,
        "val_dice": val_dice,
    }


def export_tiny(mlflow, tmp_path: Path, meta: dict, decision: Decision | None = None) -> dict:
    """What bin/export.py does after parity, with the tiny stand-in ONNX model."""
    out = tmp_path / f"model-{meta['model_version']}"
    onnx_path = write_tiny_model(out, size=64, version=meta["model_version"], decision=decision)
    info = replace(read_model_json(out / "model.json"), run_id=meta["run_id"])
    write_model_json(out / "model.json", info)
    run_id, _ = run_for_checkpoint(mlflow, "polyp-seg", meta)
    rgb = read_image(first_val_image())
    x, _ = prepare_input(rgb, 64, info.mean, info.std)
    uris = log_exported_models(mlflow, run_id, onnx_path, out / "model.json", small_jpeg(rgb), x)
    # bin/export.py's mlflow_report: the run bin/register.py registers by default
    (tmp_path / "export_mlflow.json").write_text(json.dumps({"logged": True, **uris}))
    return uris


def test_unknown_checkpoint_run_gets_a_new_run_with_its_metadata(mlflow):
    run_id, created = run_for_checkpoint(mlflow, "polyp-seg", checkpoint_meta(val_dice=0.66))
    run = mlflow.get_run(run_id)
    assert created and run.data.metrics["best_val_dice"] == 0.66
    assert run.data.tags["source_run_id"] == "f" * 32 and run.data.tags["git_sha"] == "abc1234"


def test_known_checkpoint_run_is_used(mlflow):
    with mlflow.start_run() as run:
        pass
    assert run_for_checkpoint(mlflow, "polyp-seg", checkpoint_meta(run.info.run_id)) == (
        run.info.run_id,
        False,
    )


def test_models_go_into_the_training_run_even_when_it_is_in_another_experiment(mlflow, tmp_path):
    other = mlflow.create_experiment("elsewhere", artifact_location=(tmp_path / "other").as_uri())
    run = mlflow.MlflowClient().create_run(other)
    uris = export_tiny(mlflow, tmp_path, checkpoint_meta(run.info.run_id))
    assert uris["run_id"] == run.info.run_id
    assert mlflow.get_run(run.info.run_id).data.tags["pyfunc_model_uri"] == uris["pyfunc_model_uri"]


def test_logged_pyfunc_loads_back_and_returns_a_mask_at_the_original_size(mlflow, tmp_path):
    uris = export_tiny(mlflow, tmp_path, checkpoint_meta())
    model = mlflow.pyfunc.load_model(uris["pyfunc_model_uri"])
    rgb = read_image(first_val_image())
    out = model.predict(example_frame(first_val_image().read_bytes()))
    assert list(out.columns) == ["mask_png", "width", "height", "polyp_fraction", "polyp_detected"]
    assert out.polyp_detected[0] == (out.polyp_fraction[0] > 0)  # the tiny model's rule: min area 0
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(out.mask_png[0]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == rgb.shape[:2] == (out.height[0], out.width[0])
    assert set(np.unique(mask)) <= {0, 255} and out.polyp_fraction[0] == pytest.approx((mask > 0).mean())
    everything = model.predict(example_frame(first_val_image().read_bytes()), params={"threshold": 0.0})
    assert everything.polyp_fraction[0] == 1.0 and everything.polyp_detected[0]
    for uri in (uris["pyfunc_model_uri"], uris["onnx_model_uri"]):
        card = model_card(uri)
        assert card["has_signature"] and card["has_input_example"]
    assert mlflow.get_run(uris["run_id"]).data.tags["pyfunc_model_uri"] == uris["pyfunc_model_uri"]
    outputs = mlflow.models.get_model_info(uris["pyfunc_model_uri"]).signature.outputs.input_names()
    assert outputs == ["mask_png", "width", "height", "polyp_fraction", "polyp_detected"]


def test_pyfunc_polyp_detected_follows_model_json_min_area_and_the_threshold_param(mlflow, tmp_path):
    strict = Decision(threshold=0.5, min_area_fraction=0.99, chosen_on="test")
    uris = export_tiny(mlflow, tmp_path, checkpoint_meta(), decision=strict)
    model = mlflow.pyfunc.load_model(uris["pyfunc_model_uri"])
    frame = example_frame(first_val_image().read_bytes())
    out = model.predict(frame)
    assert 0.0 < out.polyp_fraction[0] < 0.99 and not out.polyp_detected[0]
    assert model.predict(frame, params={"threshold": 0.0}).polyp_detected[0]  # all pixels: 1.0 >= 0.99


def register_args(tmp_path: Path, export_report: str | None = None) -> list[str]:
    """bin/register.py's arguments; by default it registers the run of the latest export_tiny."""
    report = str(tmp_path / "export_mlflow.json") if export_report is None else export_report
    return [
        "--conf",
        str(ROOT / "conf/register.yaml"),
        "--by",
        "tester",
        "--set",
        f"report={tmp_path}/register.json",
        "--set",
        f"export_report={json.dumps(report)}",
    ]


def test_register_stages_the_exported_run_not_a_better_earlier_one(mlflow, tmp_path):
    # An experiment exported a model with a higher validation Dice, then the workspace went back to
    # the default and exported that: the default's run is what evaluate and the gates measured.
    export_tiny(mlflow, tmp_path, checkpoint_meta("e" * 32, 0.80, "v-experiment"))
    ours = export_tiny(mlflow, tmp_path, checkpoint_meta("d" * 32, 0.70, "v-default"))
    assert load_bin("register").main(register_args(tmp_path)) == 0
    report = json.loads((tmp_path / "register.json").read_text())
    assert report["run_id"] == ours["run_id"] and report["tags"]["model_version"] == "v-default"
    assert report["picked_by"].startswith("export report")


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "cannot read the export report"),
        ("{not json", "cannot read the export report"),
        (json.dumps({"logged": False}), "records no MLflow run"),
        (json.dumps({"logged": True, "run_id": "0" * 32}), "is not in"),
    ],
)
def test_register_refuses_an_export_report_without_a_usable_run(mlflow, tmp_path, capsys, content, reason):
    export_tiny(mlflow, tmp_path, checkpoint_meta("a" * 32, 0.61, "v-any"))  # a run exists all the same
    bad = tmp_path / "bad_export.json"
    if content is not None:
        bad.write_text(content)
    assert load_bin("register").main(register_args(tmp_path, str(bad))) == 1
    assert reason in capsys.readouterr().err
    assert not client().search_model_versions(f"name='{NAME}'")  # nothing registered


def test_register_picks_the_best_run_sets_staging_and_reuses_the_version(mlflow, tmp_path):
    export_tiny(mlflow, tmp_path, checkpoint_meta("a" * 32, 0.61, "v-low"))
    best = export_tiny(mlflow, tmp_path, checkpoint_meta("b" * 32, 0.74, "v-high"))
    export_tiny(mlflow, tmp_path, checkpoint_meta("c" * 32, 0.66, "v-mid"))  # the latest export
    register = load_bin("register")
    assert register.main(register_args(tmp_path, export_report="")) == 0  # "": the best run by val Dice
    report = json.loads((tmp_path / "register.json").read_text())
    assert report["run_id"] == best["run_id"] and report["alias"] == STAGING and not report["reused"]
    assert report["picked_by"] == "best best_val_dice"
    assert report["verification"]["has_signature"] and report["verification"]["has_input_example"]
    assert report["tags"]["registered_by"] == "tester" and report["tags"]["model_version"] == "v-high"
    assert register.main(register_args(tmp_path, export_report="")) == 0
    again = json.loads((tmp_path / "register.json").read_text())
    assert again["reused"] and again["version"] == report["version"]
    assert len(client().search_model_versions(f"name='{NAME}'")) == 1
    from serve.predictor import load_registry  # the server's loader finds model.onnx + model.json in it

    assert load_registry(f"models:/{NAME}@staging").meta.artifact_version == "v-high"


def test_the_same_weights_at_a_new_operating_point_are_a_new_version(mlflow, tmp_path):
    # bin/evaluate.py chose another threshold or component filter: the ONNX file is byte for byte the
    # same, model.json is not, and a server must not keep serving the old operating point.
    meta = checkpoint_meta("c" * 32, 0.7, "v-same")
    meta["run_id"] = export_tiny(mlflow, tmp_path, meta)[
        "run_id"
    ]  # the run made for it: export again into it
    register = load_bin("register")
    assert register.main(register_args(tmp_path)) == 0
    first = json.loads((tmp_path / "register.json").read_text())
    export_tiny(mlflow, tmp_path, meta, Decision(0.5, 0.0, "val", min_component_ratio=0.3))
    assert register.main(register_args(tmp_path)) == 0
    second = json.loads((tmp_path / "register.json").read_text())
    assert not second["reused"] and second["version"] != first["version"]
    assert second["tags"]["onnx_sha256"] == first["tags"]["onnx_sha256"]
    assert second["tags"]["model_json_sha256"] != first["tags"]["model_json_sha256"]
    from serve.predictor import load_registry

    assert load_registry(f"models:/{NAME}@staging").meta.min_component_ratio == 0.3
    export_tiny(mlflow, tmp_path, meta, Decision(0.5, 0.0, "val", min_component_ratio=0.3))  # again
    assert register.main(register_args(tmp_path)) == 0
    assert json.loads((tmp_path / "register.json").read_text())["version"] == second["version"]


GATES_CONF = str(ROOT / "conf/gates.yaml")


def promote_args(*flags: str) -> list[str]:
    return ["--conf", GATES_CONF, *flags]


def gate_staged(tmp_path: Path, dice: float = 0.85, **identity) -> int:
    """Write passing reports for the staged version's model (or for `identity`), run bin/gates.py on
    them; its exit status. The results land on the version as gates_* tags."""
    tags = client().get_model_version_by_alias(NAME, STAGING).tags
    ours = {"model_version": tags["model_version"], **identity}
    sha = identity.get("sha256", tags[SHA_TAG])
    reports = {
        "metrics": {"dice_mean": dice, "n_images": 150, **ours},
        "parity": {
            "passed": True,
            "mean_abs_diff": 1e-7,
            "max_abs_diff": 1e-6,
            "tolerance": 1e-4,
            **ours,
            "sha256": sha,
        },
        "latency": {"gate": {"p50_ms": 20.0, "measure": "http_api"}, **ours, "onnx_sha256": sha},
    }
    args = ["--conf", GATES_CONF]
    for name, payload in reports.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))
        args += [f"--{name}", str(tmp_path / f"{name}.json")]
    return load_bin("gates").main(args)


def stage_new_version(mlflow, tmp_path, run_hex: str, dice: float) -> str:
    export_tiny(mlflow, tmp_path, checkpoint_meta(run_hex * 32, dice, f"v-{run_hex}"))
    assert load_bin("register").main(register_args(tmp_path)) == 0
    return str(json.loads((tmp_path / "register.json").read_text())["version"])


def holders(alias: str) -> list[str]:
    c = client()  # search results leave aliases out: read each version
    versions = [str(mv.version) for mv in c.search_model_versions(f"name='{NAME}'")]
    return [v for v in sorted(versions, key=int) if alias in c.get_model_version(NAME, v).aliases]


def test_promote_refuses_without_approval_or_name(mlflow, tmp_path):
    stage_new_version(mlflow, tmp_path, "a", 0.7)
    assert gate_staged(tmp_path) == 0
    promote = load_bin("promote")
    assert promote.main(promote_args("--by", "alice")) == 1
    assert promote.main(promote_args("--approve")) == 1
    assert holders(PRODUCTION) == []


def test_promote_refuses_a_version_without_stored_gate_results(mlflow, tmp_path, capsys):
    version = stage_new_version(mlflow, tmp_path, "a", 0.7)
    assert load_bin("promote").main(promote_args("--approve", "--by", "alice")) == 1
    assert holders(PRODUCTION) == [] and "no gate results stored on it" in capsys.readouterr().err
    assert client().get_model_version(NAME, version).tags["promotion_refused_by"] == "alice"


def test_promote_refuses_when_a_gate_failed(mlflow, tmp_path, capsys):
    version = stage_new_version(mlflow, tmp_path, "a", 0.7)
    assert gate_staged(tmp_path, dice=0.5) == 1  # gates fail, and say so on the version
    tags = client().get_model_version(NAME, version).tags
    assert tags["gates_passed"] == "false" and tags["gates_model_version"] == "v-a"
    assert load_bin("promote").main(promote_args("--approve", "--by", "alice")) == 1
    assert holders(PRODUCTION) == [] and "its gates failed: test_dice" in capsys.readouterr().err
    tags = client().get_model_version(NAME, version).tags
    assert tags["promotion_refused_by"] == "alice" and "test_dice" in tags["audit.002"]


def test_gates_on_reports_of_another_model_fail_and_block_promotion(mlflow, tmp_path, capsys):
    stage_new_version(mlflow, tmp_path, "a", 0.7)
    assert gate_staged(tmp_path, model_version="v-other") == 1  # excellent numbers, wrong model
    assert "stale" in capsys.readouterr().out
    assert load_bin("promote").main(promote_args("--approve", "--by", "alice")) == 1
    assert holders(PRODUCTION) == []


def test_promote_refuses_stale_stored_results(mlflow, tmp_path, capsys):
    version = stage_new_version(mlflow, tmp_path, "a", 0.7)
    assert gate_staged(tmp_path) == 0
    client().set_model_version_tag(NAME, version, "gates_model_version", "v-older")  # judged another model
    assert load_bin("promote").main(promote_args("--approve", "--by", "alice")) == 1
    assert "stale" in capsys.readouterr().err and holders(PRODUCTION) == []


def test_promote_with_approval_archives_the_previous_and_rollback_restores_it(mlflow, tmp_path):
    promote = load_bin("promote")
    first = stage_new_version(mlflow, tmp_path, "a", 0.70)
    assert gate_staged(tmp_path) == 0
    assert promote.main(promote_args("--approve", "--by", "alice")) == 0
    assert holders(PRODUCTION) == [first]
    second = stage_new_version(mlflow, tmp_path, "b", 0.75)
    assert gate_staged(tmp_path) == 0
    assert promote.main(promote_args("--approve", "--by", "bob")) == 0
    assert holders(PRODUCTION) == [second]
    c = client()
    old, new = c.get_model_version(NAME, first).tags, c.get_model_version(NAME, second).tags
    assert old["archived_by"] == "bob" and old["archived_at"] and new["promoted_by"] == "bob"
    promoted = json.loads(
        next(v for k, v in sorted(new.items()) if k.startswith("audit.") and "promoted" in v)
    )
    assert promoted["gates"]["passed"] and {g["name"] for g in promoted["gates"]["gates"]} >= {"test_dice"}
    assert c.get_registered_model(NAME).tags[HISTORY_TAG] == f"{first},{second}"

    assert promote.main(promote_args("--rollback")) == 1  # who rolls back must be named
    assert promote.main(promote_args("--rollback", "--by", "carol", "--reason", "drift")) == 0
    assert holders(PRODUCTION) == [first]
    assert c.get_model_version(NAME, second).tags["rolled_back_by"] == "carol"
    assert c.get_model_version(NAME, first).tags["restored_by"] == "carol"
    assert promote.main(promote_args("--rollback", "--by", "carol")) == 1  # nothing earlier


def test_gates_fail_for_a_logged_model_without_signature_or_example(mlflow, tmp_path, capsys):
    import onnx

    onnx_path = write_tiny_model(tmp_path / "bare", size=64)
    with mlflow.start_run():
        info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="bare", pip_requirements=["onnxruntime"])
    args = promote_args("--model-uri", info.model_uri)
    assert load_bin("gates").main(args) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("model_card"))
    assert "FAIL" in row and "missing signature, input_example" in row


@pytest.mark.integration
def test_ephemeral_server_starts_answers_and_stops(tmp_path):
    script = str(ROOT / "bin" / "mlflow_server.sh")
    env = {**os.environ, "PY": str(ROOT / ".venv/bin/python"), "MLFLOW": str(ROOT / ".venv/bin/mlflow")}
    started = subprocess.run(
        [script, "start", str(tmp_path)], capture_output=True, text=True, env=env, timeout=400
    )
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    pid = int((tmp_path / "server.pid").read_text())
    try:
        assert urllib.request.urlopen(f"{url}/health", timeout=10).read() == b"OK"
    finally:
        subprocess.run([script, "stop", str(tmp_path)], env=env, timeout=60, check=True)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_registry_state_lists_versions_aliases_and_tags(mlflow, tmp_path):
    first = stage_new_version(mlflow, tmp_path, "a", 0.70)
    assert gate_staged(tmp_path) == 0
    assert load_bin("promote").main(promote_args("--approve", "--by", "alice")) == 0
    second = stage_new_version(mlflow, tmp_path, "b", 0.75)
    out = tmp_path / "state.json"
    args = ["--conf", str(ROOT / "conf/register.yaml"), "--out", str(out)]
    assert load_bin("registry_state").main(args) == 0
    state = json.loads(out.read_text())
    by_version = {v["version"]: v for v in state["versions"]}
    assert state["name"] == NAME and list(by_version) == [first, second]
    assert by_version[first]["aliases"] == [PRODUCTION]
    assert by_version[first]["tags"]["promoted_by"] == "alice"
    assert by_version[second]["aliases"] == [STAGING] and by_version[second]["run_id"]
