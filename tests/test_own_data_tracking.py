"""Nothing leaves the machine unasked: a user's own data (bin/evaluate.py --data, bin/drift_report.py
--current DIR) gets an MLflow run of its own, named after the folder, with metrics and tables only
(lib.tracking.is_image_artifact: no picture, overlay, montage or HTML page unless --log-images), and its
reports never replace the pipeline's; make predict-video's report never replaces the benchmark's.

A real embedded MLflow store (sqlite in tmp_path); small synthetic folders and the tiny models of
tests/support and tests/test_export.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from bin_helpers import ROOT, load_bin

from lib.config import load_config
from lib.drift_tracking import log_to_model_run
from lib.tracking import (
    DATA_SOURCE_TAG,
    OWN_DATA_EXPERIMENT,
    is_image_artifact,
    log_tables_only,
    log_to_run,
)

VERSION = "abc1234-tiny"  # the model version of the tiny checkpoint (tests/test_export.py) and ONNX model
PNG = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
# A report folder as bin/evaluate.py --data writes it: tables, and pictures of the data.
EVAL_TABLES = {
    "decision.json": "{}",
    "operating_points.csv": "threshold,min_component_ratio\n0.5,0.1\n",
    "config.yaml": "seed: 42\n",
    "robustness.json": "{}",
    "centre/metrics.json": '{"dice_mean": 0.8}',
    "centre/per_image.csv": "stem,dice\na,0.8\n",
    "centre/pr_curve.csv": "threshold,precision,recall\n0.5,0.9,0.8\n",
    "negatives/metrics.json": "{}",
}
EVAL_IMAGES = {
    "index.html": "<html><img src='data:image/png;base64,iVBORw0KGgo='></html>",
    "trend.png": PNG,
    "robustness.png": PNG,
    "centre/pr_curve.png": PNG,
    "centre/montage.png": PNG,
    "centre/overlays/best_a.png": PNG,
    "negatives/montage.png": PNG,
}


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store):
    """(client, training run id): the model's experiment with its finished training run, and the
    own-data experiment, artifacts of both in tmp_path."""
    from mlflow import MlflowClient

    shutil.copyfile(empty_store, tmp_path / "mlruns.db")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("polyp-seg", artifact_location=(tmp_path / "artifacts").as_uri())
    # Created here only to keep its artifacts in tmp_path (a server or the default store picks its own).
    client.create_experiment(OWN_DATA_EXPERIMENT, artifact_location=(tmp_path / "own-artifacts").as_uri())
    run = client.create_run(experiment, tags={"model_version": VERSION})
    client.set_terminated(run.info.run_id)
    return client, run.info.run_id


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of a run, folders walked."""
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def own_runs(client) -> list:
    """The own-data experiment's runs, newest first."""
    experiment = client.get_experiment_by_name(OWN_DATA_EXPERIMENT)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])


def write_files(root: Path, files: dict) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_what_counts_as_an_image_is_defined_once():
    for name in [
        *EVAL_IMAGES,
        "clip.MP4",
        "a.jpeg",
        "m.TIFF",
        "x.bmp",
        "v.avi",
        "mask.npy",
        "overlays/a.json",
    ]:
        assert is_image_artifact(name), name
    for name in [*EVAL_TABLES, "features.csv", "drift.json", "overlays.csv"]:
        assert not is_image_artifact(name), name


def test_log_tables_only_keeps_the_layout_and_withholds_images(store, tmp_path):
    client, training = store
    out = write_files(tmp_path / "eval-centre", EVAL_TABLES | EVAL_IMAGES)
    logged, withheld = log_tables_only(training, out, log_images=False, artifact_path="r")
    assert set(logged) == set(EVAL_TABLES) and set(withheld) == set(EVAL_IMAGES)
    assert artifacts(client, training) == {f"r/{name}" for name in EVAL_TABLES}


def test_own_evaluation_logs_tables_to_a_new_run_named_after_the_folder(store, tmp_path):
    client, training = store
    out = write_files(tmp_path / "reports" / "eval-centre", EVAL_TABLES | EVAL_IMAGES)
    meta = {"model_version": VERSION, "run_id": training}
    results = {"centre": {"dice_mean": 0.8, "n_images": 3}}
    note = load_bin("evaluate").log_own_data(str(tmp_path / "centre"), meta, results, out, False)
    (run,) = own_runs(client)
    assert note.startswith(f"logged to MLflow run {run.info.run_id}"), note
    assert "7 image file(s) not logged" in note
    assert run.info.run_id != training and run.info.run_name == "evaluate centre"
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["model_version"], tags[DATA_SOURCE_TAG], tags["model_run_id"]) == (
        VERSION,
        "centre",
        training,
    )
    assert run.data.metrics == {"centre_dice_mean": 0.8}
    assert artifacts(client, run.info.run_id) == set(EVAL_TABLES)  # no picture of the data
    assert artifacts(client, training) == set() and client.get_run(training).data.metrics == {}


def test_own_evaluation_logs_images_only_when_asked(store, tmp_path):
    client, training = store
    out = write_files(tmp_path / "eval-centre", EVAL_TABLES | EVAL_IMAGES)
    meta = {"model_version": VERSION, "run_id": training}
    note = load_bin("evaluate").log_own_data(str(tmp_path / "centre"), meta, {}, out, True)
    (run,) = own_runs(client)
    assert "not logged" not in note
    assert artifacts(client, run.info.run_id) == set(EVAL_TABLES) | set(EVAL_IMAGES)
    assert artifacts(client, training) == set()


def test_the_pipelines_own_evaluation_still_logs_its_whole_report_to_the_training_run(store, tmp_path):
    client, training = store
    out = write_files(tmp_path / "eval", EVAL_TABLES | EVAL_IMAGES)
    assert log_to_run(training, {"test": {"dice_mean": 0.9}}, str(out)) == f"logged to MLflow run {training}"
    assert artifacts(client, training) == {f"eval/{name}" for name in EVAL_TABLES | EVAL_IMAGES}
    assert own_runs(client) == []


def test_evaluate_data_end_to_end_writes_beside_the_pipeline_report_and_logs_its_own_run(store, tmp_path):
    """bin/evaluate.py --data on 3 synthetic pairs with a random-weight tiny checkpoint."""
    from conftest import write_pair
    from test_export import save_tiny_checkpoint

    client, training = store
    import torch

    checkpoint = save_tiny_checkpoint(tmp_path / "best.pt", run_id=training, size=64)
    ckpt = torch.load(checkpoint, weights_only=False)
    torch.save({**ckpt, "threshold": 0.5}, checkpoint)  # bin/train.py stores conf/train.yaml's threshold
    for i in range(3):
        write_pair(tmp_path / "centre", f"c{i}", seed=i)
    decision = {"threshold": 0.5, "min_area_fraction": 0.0, "chosen_on": "val", "min_component_ratio": 0.0}
    pipeline = write_files(
        tmp_path / "reports" / "eval", {"index.html": "x", "decision.json": json.dumps(decision)}
    )
    before = snapshot(pipeline)
    sets = [
        f"checkpoint={checkpoint}",
        f"out_dir={pipeline}",
        "negatives.enabled=false",
        "robustness.enabled=false",
        "trend.enabled=false",
        "overlays_per_kind=1",
    ]
    argv = ["--conf", str(ROOT / "conf" / "evaluate.yaml"), "--data", str(tmp_path / "centre")]
    assert load_bin("evaluate").main([*argv, *sum((["--set", s] for s in sets), [])]) == 0
    out = tmp_path / "reports" / "eval-centre"
    assert (out / "index.html").is_file() and (out / "centre" / "metrics.json").is_file()
    assert snapshot(pipeline) == before  # the pipeline's report is untouched
    (run,) = own_runs(client)
    assert run.info.run_name == "evaluate centre" and run.data.tags[DATA_SOURCE_TAG] == "centre"
    assert run.data.tags["model_version"] == VERSION and "centre_dice_mean" in run.data.metrics
    logged = artifacts(client, run.info.run_id)
    assert "centre/metrics.json" in logged and "centre/per_image.csv" in logged
    assert not [name for name in logged if is_image_artifact(name)], logged
    assert artifacts(client, training) == set() and client.get_run(training).data.metrics == {}


# ---- bin/drift_report.py ------------------------------------------------------------------------------


def write_jpegs(folder: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i}.jpg"), rng.integers(0, 255, (72, 88, 3), dtype=np.uint8))
    return folder


@pytest.fixture
def drift_inputs(store, tmp_path):
    """(argv, pipeline report folder): the tiny ONNX model, a reference of 8 synthetic images, 6 current
    ones in centre/, and a pipeline report in reports/drift."""
    from lib.drift import feature_table, load_model
    from tests.support.tinymodel import write_tiny_model

    model_path = write_tiny_model(tmp_path / "model", size=64, version=VERSION)
    reference = write_jpegs(tmp_path / "reference-images", 8, seed=1)
    table, _ = feature_table(
        [(p.stem, p) for p in sorted(reference.glob("*.jpg"))], load_model(model_path, 1)
    )
    table.to_csv(tmp_path / "reference.csv", index=False)
    write_jpegs(tmp_path / "centre", 6, seed=2)
    pipeline = write_files(tmp_path / "reports" / "drift", {"index.html": "pipeline", "drift.json": "{}"})
    sets = [f"reference={tmp_path / 'reference.csv'}", f"model={model_path}", f"out_dir={pipeline}"]
    argv = ["--conf", str(ROOT / "conf" / "drift_report.yaml"), "--current", str(tmp_path / "centre")]
    return [*argv, *sum((["--set", s] for s in [*sets, "min_images=2"]), [])], pipeline


def test_drift_report_on_a_folder_logs_tables_to_a_run_of_its_own(store, drift_inputs, tmp_path):
    client, training = store
    argv, pipeline = drift_inputs
    before = snapshot(pipeline)
    main = load_bin("drift_report").main
    assert main(argv) == 0
    out = tmp_path / "reports" / "drift-centre"
    assert {"index.html", "drift.json", "features.csv"} <= set(snapshot(out))
    assert snapshot(pipeline) == before  # the pipeline's drift report is untouched
    report = json.loads((out / "drift.json").read_text())["mlflow"]
    (run,) = own_runs(client)
    assert report["logged"] is True and report["run_id"] == run.info.run_id != training
    assert report["model_run_id"] == training and report["images_logged"] is False
    assert run.info.run_name == "drift centre" and run.info.status == "FINISHED"
    assert (run.data.tags["model_version"], run.data.tags[DATA_SOURCE_TAG]) == (VERSION, "centre")
    assert {"drift_drifted_share", "drift_dataset_drift", "drift_n_current"} <= set(run.data.metrics)
    assert artifacts(client, run.info.run_id) == {"drift.json", "features.csv"}  # no index.html
    assert artifacts(client, training) == set()

    # Asked for: the HTML report too, in another new run; the model's run is still found past the first.
    assert main([*argv, "--log-images"]) == 0
    newest = own_runs(client)[0]
    assert newest.info.run_id != run.info.run_id and newest.data.tags["model_run_id"] == training
    assert artifacts(client, newest.info.run_id) == {"drift.json", "features.csv", "index.html"}
    assert artifacts(client, training) == set() and snapshot(pipeline) == before


def test_shadow_window_report_logs_the_html_to_the_models_run_only_when_asked(store, tmp_path):
    client, training = store
    out = write_files(tmp_path / "drift", {"index.html": "<html></html>", "drift.json": "{}"})
    files = [out / "index.html", out / "drift.json"]
    log_to_model_run(training, files, "drift_report/1", log_images=False)
    assert artifacts(client, training) == {"drift_report/1/drift.json"}
    log_to_model_run(training, files, "drift_report/2", log_images=True)
    assert {"drift_report/2/drift.json", "drift_report/2/index.html"} <= artifacts(client, training)


# ---- make predict-video -------------------------------------------------------------------------------


def test_predict_video_report_is_keyed_by_the_video_and_the_benchmark_keeps_its_own():
    from lib.video import load_predict_video_config

    template = load_predict_video_config(str(ROOT / "conf" / "predict_video.yaml")).report
    report_for = load_bin("predict_video").report_for
    assert report_for(template, "clips/case 7.mp4") == "reports/video/case 7.json"
    assert report_for("out/fixed.json", "clips/a.mp4") == "out/fixed.json"  # no {stem}: as given
    bench = load_bin("bench_video")
    cfg = load_config(bench.BenchVideoConfig, ROOT / "conf" / "bench_video.yaml")
    command = bench.fps_command(cfg, Path("val720.mp4"), Path("overlay.mp4"))
    assert command[command.index("--report") + 1] == cfg.fps_report == "reports/bench/video.json"
