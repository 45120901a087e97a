"""lib/drift.py, bin/drift_reference.py and bin/drift_report.py: synthetic tables first, then real images.

The real-image tests compare test-split images with the validation reference: unshifted ones must not
be flagged (the first 40 and several random draws of 40), darkened, blurred, greyscale and non-endoscopy
images must each be flagged, for the reasons expected. They use models/model.onnx with the
drift_reference stage's reports/drift/reference.csv when both exist and belong together, else they build
the reference themselves (with the tiny stand-in model when there is no trained one). One test serves
the model with a real gunicorn in shadow mode and runs the report on what it stored; one opens the
report in headless Chromium and writes reports/drift/report.png.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from bin_helpers import ROOT, load_bin, run_script, write_catalog

from lib.config import load_config
from lib.corruptions import SEVERITIES, gaussian_blur
from lib.drift import (
    FEATURE_COLUMNS,
    MODEL_FEATURE_NAMES,
    CurrentImages,
    DriftInputError,
    check_reference,
    current_images,
    feature_row,
    feature_table,
    load_model,
    model_features,
    run_evidently,
    served_share_difference,
    served_versions,
    summarise,
)
from lib.drift_tracking import model_mismatch, model_run
from lib.image_features import FEATURE_NAMES
from lib.io import read_csv_stems
from lib.tracking import OWN_DATA_EXPERIMENT

RAW_IMAGES = ROOT / "data" / "raw" / "Kvasir-SEG" / "images"
REAL_MODEL = ROOT / "models" / "model.onnx"
COMMITTED_REFERENCE = ROOT / "reports" / "drift" / "reference.csv"
SCREENSHOT = ROOT / "reports" / "drift" / "report.png"
CONF = "conf/drift_report.yaml"
# Kvasir-SEG's JPEGs use the standard quantisation tables at about quality 75 (DC step 8): shifted copies
# are encoded alike, so the re-encoding alone does not look like drift (bytes_per_pixel would).
KVASIR_JPEG_QUALITY = 75
N_CURRENT = 40


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """RGB `(H, W, 3)` or grey `(H, W)` uint8 -> JPEG bytes at Kvasir's quality."""
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, KVASIR_JPEG_QUALITY])
    assert ok
    return data.tobytes()


# ---- synthetic: model-side features, inputs, the Evidently summary ------------------------------------


def test_model_features_of_a_hand_made_probability_map():
    prob = np.zeros((10, 10), np.float32)
    prob[1:3, 1:3] = 0.9  # polyp: 4 pixels
    prob[6:9, 6:9] = 0.8  # another: 9 pixels, not touching the first
    prob[0, 9] = 0.5  # uncertain, below the threshold
    prob[5, 0] = 0.7  # uncertain and (>= 0.7) in the mask: a third component
    f = model_features(prob, threshold=0.7)
    assert f == {"predicted_polyp_share": 0.14, "n_components": 3.0, "uncertain_share": 0.02}
    assert model_features(np.zeros((4, 4), np.float32), 0.5) == {
        "predicted_polyp_share": 0.0,
        "n_components": 0.0,
        "uncertain_share": 0.0,
    }
    with pytest.raises(ValueError):
        model_features(np.zeros((2, 2, 1), np.float32), 0.5)


def write_shadow_request(root: Path, day: str, name: str, record: dict, image: bytes | None) -> Path:
    folder = root / day / name
    folder.mkdir(parents=True)
    if image is not None:
        (folder / "input.jpg").write_bytes(image)
    (folder / "mask.png").write_bytes(b"")
    (folder / "record.json").write_text(json.dumps(record))
    return folder


def test_current_images_reads_the_shadow_layout(tmp_path):
    jpeg = encode_jpeg(np.full((8, 8, 3), 100, np.uint8))
    a = {"model_version": "m-1", "polyp_fraction": 0.25, "threshold": 0.7, "input_stored": True}
    write_shadow_request(tmp_path, "2026-11-30", "120000000_r1_aaaa", a, jpeg)
    write_shadow_request(tmp_path, "2026-11-30", "120001000_r2_bbbb", {**a, "model_version": "m-2"}, jpeg)
    write_shadow_request(tmp_path, "2026-12-01", "080000000_r3_cccc", {**a, "input_stored": False}, None)
    (tmp_path / "2026-12-01" / "090000000_r4_dddd").mkdir()  # no record.json yet: being written, skipped
    found = current_images(tmp_path)
    assert found.source == "shadow"
    assert [name for name, _ in found.images] == [
        "2026-11-30/120000000_r1_aaaa",
        "2026-11-30/120001000_r2_bbbb",
    ]
    assert found.versions == {"m-1": 1, "m-2": 1}
    assert found.without_input == 1
    assert found.served_share == {
        "2026-11-30/120000000_r1_aaaa": (0.25, 0.7),
        "2026-11-30/120001000_r2_bbbb": (0.25, 0.7),
    }
    # Served shares compare with the recomputed ones only at the model's threshold.
    current = pd.DataFrame({"image": [n for n, _ in found.images], "predicted_polyp_share": [0.2, 0.3]})
    assert served_share_difference(found, current, threshold=0.7) == pytest.approx(0.05)
    assert served_share_difference(found, current, threshold=0.5) is None


def test_current_images_takes_any_folder_of_jpeg_and_png_recursively(tmp_path):
    for rel in ("a.jpg", "sub/b.PNG", "sub/deeper/c.jpeg", "notes.txt", "d.gif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = current_images(tmp_path)
    assert found.source == "folder" and not found.versions
    assert [name for name, _ in found.images] == ["a.jpg", "sub/b.PNG", "sub/deeper/c.jpeg"]
    with pytest.raises(FileNotFoundError, match="not found"):
        current_images(tmp_path / "missing")


def synthetic_table(n: int, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    """A feature table: every column N(0, 1), `brightness_mean` moved by `shift`, `height` constant."""
    table = pd.DataFrame({c: rng.normal(0.0, 1.0, n) for c in FEATURE_COLUMNS})
    table["brightness_mean"] += shift
    table["height"] = 530.0  # degenerate: every image the same height, on both sides
    return table


def test_evidently_summary_flags_the_shifted_column_and_survives_a_constant_one():
    rng = np.random.default_rng(0)
    reference, current = synthetic_table(150, rng), synthetic_table(40, rng, shift=3.0)
    summary = summarise(run_evidently(reference, current, "ks", 0.001, 0.1).dict(), 0.1)
    drifted = [c for c, f in summary["features"].items() if f["drifted"]]
    assert drifted == ["brightness_mean"]
    assert summary["features"]["brightness_mean"]["drift_score"] < 1e-6  # a K-S p-value
    assert summary["features"]["height"] == {"drift_score": 1.0, "drifted": False}
    assert summary["drifted_share"] == pytest.approx(1 / len(FEATURE_COLUMNS))
    assert summary["dataset_drift"] is False  # 1 of 18 < 0.1
    assert (summary["method"], summary["threshold"]) == ("ks", 0.001)
    # The same evaluation against a lower share: one drifted column is enough.
    assert summarise(run_evidently(reference, current, "ks", 0.001, 0.05).dict(), 0.05)["dataset_drift"]


def test_unshifted_synthetic_tables_do_not_drift():
    rng = np.random.default_rng(1)
    summary = summarise(
        run_evidently(synthetic_table(150, rng), synthetic_table(40, rng), "ks", 0.001, 0.1).dict(), 0.1
    )
    assert summary["dataset_drift"] is False and summary["drifted_share"] == 0.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.support.tinymodel import write_tiny_model

    return load_model(write_tiny_model(tmp_path_factory.mktemp("tiny"), size=64), threads=1)


def test_check_reference_refuses_another_models_table_and_missing_columns(tiny_model):
    rng = np.random.default_rng(2)
    table = synthetic_table(10, rng).assign(model_sha256=tiny_model.sha256)
    check_reference(table, tiny_model, "ref.csv")  # passes
    with pytest.raises(DriftInputError, match="another model"):
        check_reference(table.assign(model_sha256="0" * 64), tiny_model, "ref.csv")
    with pytest.raises(DriftInputError, match="missing column.*predicted_polyp_share"):
        check_reference(table.drop(columns="predicted_polyp_share"), tiny_model, "ref.csv")


def test_model_version_comes_from_the_records_and_a_different_one_is_a_warning(tiny_model):
    version = tiny_model.meta.model_version
    assert served_versions(CurrentImages([], "folder"), tiny_model) == (version, [])
    found = CurrentImages([], "shadow")
    found.versions.update({"other-1": 3, version: 1})
    chosen, warnings = served_versions(found, tiny_model)
    assert chosen == "other-1" and "several model versions" in warnings[0]
    assert model_mismatch(version, {}, tiny_model) is None
    assert "other-1" in model_mismatch("other-1", {}, tiny_model)
    registry = {"sha256": tiny_model.sha256}
    assert model_mismatch("polyp-seg-unet/3", registry, tiny_model) is None  # same ONNX file
    assert "polyp-seg-unet/3" in model_mismatch("polyp-seg-unet/3", {"sha256": "f" * 64}, tiny_model)


def test_mlflow_run_of_a_registry_version_and_of_a_tagged_local_version(tiny_model, tmp_path, monkeypatch):
    """A real sqlite store: NAME/N -> its run and onnx_sha256 tag; a local version -> the run tagged so."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("polyp-seg", artifact_location=(tmp_path / "artifacts").as_uri())
    version = tiny_model.meta.model_version
    run_id = client.create_run(experiment, tags={"model_version": version}).info.run_id
    client.create_registered_model("polyp-seg-unet")
    mv = client.create_model_version(
        "polyp-seg-unet", f"runs:/{run_id}/model", run_id=run_id, tags={"onnx_sha256": tiny_model.sha256}
    )

    served = f"polyp-seg-unet/{mv.version}"
    run = model_run(served, tiny_model)
    assert run == {"run_id": run_id, "found": True, "sha256": tiny_model.sha256, "reason": ""}
    assert model_mismatch(served, run, tiny_model) is None  # the registry version is this ONNX file
    assert model_run(version, tiny_model)["run_id"] == run_id  # the tiny model.json names no run: by tag
    missing = model_run("polyp-seg-unet/99", tiny_model)
    assert missing["found"] is False and missing["reason"]
    untagged = model_run("abc1234-00000000", tiny_model)
    assert untagged["found"] is False and "model_version=abc1234-00000000" in untagged["reason"]


def test_report_with_too_few_images_is_a_clear_error(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(encode_jpeg(np.full((8, 8, 3), 90, np.uint8)))
    result = run_script(
        "drift_report.py", "--conf", CONF, "--current", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert result.returncode == 2, result.stderr
    assert "3 usable current image(s)" in result.stderr and "at least 20" in result.stderr
    assert not (tmp_path / "o").exists()


def test_report_without_a_shadow_directory_says_how_to_get_one(tmp_path):
    missing = tmp_path / "shadow"
    result = run_script("drift_report.py", "--conf", CONF, "--set", f"shadow_dir={missing}")
    assert result.returncode == 2
    assert str(missing) in result.stderr and "POLYPSEG_SHADOW_DIR" in result.stderr


def test_drift_reference_script_writes_one_row_per_stem(real_samples, tmp_path, tiny_model):
    stems = sorted(p.stem for p in (real_samples / "images").glob("*.jpg"))[:4]
    split = tmp_path / "split.csv"
    split.write_text("stem,group\n" + "".join(f"{s},0\n" for s in stems))
    out = tmp_path / "reference.csv"
    overrides = [
        f"model={tiny_model.path}",
        f"catalog={write_catalog(real_samples, tmp_path / 'catalog')[0]}",
        f"split={split}",
        f"out={out}",
    ]
    result = run_script(
        "drift_reference.py",
        "--conf",
        "conf/drift_reference.yaml",
        *sum((["--set", o] for o in overrides), []),
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table["image"]) == stems
    assert set(FEATURE_COLUMNS) <= set(table.columns) and "predicted_polyp_share" in table.columns
    assert set(table["model_sha256"]) == {tiny_model.sha256}
    # The row is what feature_row computes from the same file: one definition for reference and current.
    first = feature_row((real_samples / "images" / f"{stems[0]}.jpg").read_bytes(), tiny_model)
    assert table.iloc[0][list(FEATURE_COLUMNS)].to_dict() == pytest.approx(first)


# ---- real images: the validation reference against test images, unshifted and shifted ---------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model, reference table, reference CSV path): the trained model when there is one."""
    if not RAW_IMAGES.is_dir():
        pytest.skip("needs data/raw/Kvasir-SEG (make data)")
    if REAL_MODEL.is_file():
        model_path = REAL_MODEL
    else:  # a fresh clone's CI has only the data: the tiny stand-in gives (meaningless but fixed) masks
        from tests.support.tinymodel import write_tiny_model

        model_path = write_tiny_model(tmp_path_factory.mktemp("tiny-model"), size=64)
    model = load_model(model_path, threads=2)
    reference_csv = COMMITTED_REFERENCE
    if not (reference_csv.is_file() and set(pd.read_csv(reference_csv)["model_sha256"]) == {model.sha256}):
        reference_csv = tmp_path_factory.mktemp("reference") / "reference.csv"
        result = run_script(
            "drift_reference.py",
            "--conf",
            "conf/drift_reference.yaml",
            "--set",
            f"model={model_path}",
            "--set",
            f"out={reference_csv}",
        )
        assert result.returncode == 0, result.stderr
    return model, pd.read_csv(reference_csv), reference_csv


def texture(rng: np.random.Generator, h: int = 529, w: int = 622) -> np.ndarray:
    """A non-endoscopy picture of Kvasir's usual size: smooth colour noise, stripes or fine noise."""
    kind = rng.integers(3)
    if kind == 0:
        x = cv2.resize(
            rng.random((h // 8, w // 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
        )
    elif kind == 1:
        yy, xx = np.mgrid[0:h, 0:w]
        freq, angle = rng.uniform(0.02, 0.2), rng.uniform(0, np.pi)
        s = (0.5 + 0.5 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle))))[..., None]
        x = s * rng.random(3) + (1 - s) * rng.random(3)
    else:
        x = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip(x * 255, 0, 255).astype(np.uint8)


SHIFTS = {
    "darkened": lambda rgb: (rgb.astype(np.float32) * 0.5).round().astype(np.uint8),
    # lib/corruptions.py's "clearly visible" defocus (severity 2): sigma 1 % of the shorter side
    "blurred": lambda rgb: gaussian_blur(rgb, None, None, **SEVERITIES["gaussian_blur"][2])[0],
    "greyscale": lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),  # a one-channel JPEG
}
# What each shift must move, besides the dataset verdict: the reason it is flagged.
EXPECTED = {
    "darkened": {"brightness_mean", "value_mean"},
    "blurred": {"sharpness"},
    "greyscale": {"saturation_mean", "hue_mean"},
    "textures": {"hue_mean", "black_border_share"},
}


@pytest.fixture(scope="module")
def current(setup):
    """Features of every test image (unshifted draws) and of the first N_CURRENT under each shift."""
    model = setup[0]
    stems = read_csv_stems(ROOT / "data" / "splits" / "test.csv")
    unshifted, skipped = feature_table([(s, RAW_IMAGES / f"{s}.jpg") for s in stems], model)
    assert not skipped
    shifted = {}
    for name, shift in SHIFTS.items():
        rows = []
        for s in stems[:N_CURRENT]:
            rgb = cv2.cvtColor(cv2.imread(str(RAW_IMAGES / f"{s}.jpg")), cv2.COLOR_BGR2RGB)
            rows.append(feature_row(encode_jpeg(shift(rgb)), model))
        shifted[name] = pd.DataFrame(rows)
    rng = np.random.default_rng(13)
    shifted["textures"] = pd.DataFrame(
        [feature_row(encode_jpeg(texture(rng)), model) for _ in range(N_CURRENT)]
    )
    return unshifted, shifted


def verdict(reference: pd.DataFrame, table: pd.DataFrame) -> dict:
    """drift.json's summary with the method and thresholds of conf/drift_report.yaml."""
    cfg = load_config(load_bin("drift_report").DriftReportConfig, ROOT / CONF)
    evaluation = run_evidently(reference, table, cfg.method, cfg.threshold, cfg.drift_share)
    return summarise(evaluation.dict(), cfg.drift_share)


@pytest.mark.integration
def test_unshifted_test_images_are_not_flagged_first_40_and_random_draws(setup, current):
    reference, unshifted = setup[1], current[0]
    draws = [np.arange(N_CURRENT)] + [
        np.random.default_rng(seed).choice(len(unshifted), N_CURRENT, replace=False) for seed in range(5)
    ]
    for rows in draws:
        summary = verdict(reference, unshifted.iloc[rows])
        assert summary["dataset_drift"] is False, [c for c, f in summary["features"].items() if f["drifted"]]


@pytest.mark.integration
@pytest.mark.parametrize("shift", [*SHIFTS, "textures"])
def test_each_shift_is_flagged_for_its_reason(setup, current, shift):
    summary = verdict(setup[1], current[1][shift])
    drifted = {c for c, f in summary["features"].items() if f["drifted"]}
    assert summary["dataset_drift"] is True, summary["features"]
    assert EXPECTED[shift] <= drifted, sorted(drifted)


@pytest.fixture(scope="module")
def store(tmp_path_factory, setup):
    """A real MLflow sqlite store in a tmp dir, with one run tagged with the model's version."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("polyp-seg", artifact_location=(root / "artifacts").as_uri())
    # --current DIR logs to a run of its own there: its artifacts in the tmp dir too
    client.create_experiment(OWN_DATA_EXPERIMENT, artifact_location=(root / "own-artifacts").as_uri())
    run = client.create_run(experiment, tags={"model_version": setup[0].meta.model_version})
    client.set_terminated(run.info.run_id)
    return uri, run.info.run_id


def run_report(setup, store, *args: str) -> tuple:
    _, _, reference_csv = setup
    env = {"MLFLOW_TRACKING_URI": store[0], "MLFLOW_DISABLE_TELEMETRY": "true"}
    sets = ["--set", f"reference={reference_csv}", "--set", f"model={setup[0].path}"]
    return run_script("drift_report.py", "--conf", CONF, *sets, *args, env=env)


@pytest.fixture(scope="module")
def darkened_report(setup, store, tmp_path_factory):
    """bin/drift_report.py --current on 40 darkened test JPEGs, --fail-on-drift."""
    folder, out = tmp_path_factory.mktemp("darkened"), tmp_path_factory.mktemp("darkened-report")
    for s in read_csv_stems(ROOT / "data" / "splits" / "test.csv")[:N_CURRENT]:
        rgb = cv2.cvtColor(cv2.imread(str(RAW_IMAGES / f"{s}.jpg")), cv2.COLOR_BGR2RGB)
        (folder / f"{s}.jpg").write_bytes(encode_jpeg(SHIFTS["darkened"](rgb)))
    return run_report(setup, store, "--current", str(folder), "--out", str(out), "--fail-on-drift"), out


@pytest.mark.integration
def test_report_script_flags_40_darkened_images_and_logs_tables_to_a_run_of_its_own(
    darkened_report, setup, store
):
    result, out = darkened_report
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads((out / "drift.json").read_text())
    assert report["dataset_drift"] is True and 0 < report["drifted_share"] <= 1
    assert (report["n_current"], report["n_reference"]) == (N_CURRENT, len(setup[1]))
    assert report["model_version"] == setup[0].meta.model_version  # a folder: the report's own model
    assert report["features"]["brightness_mean"]["drifted"] is True
    assert set(report["features"]) == set(FEATURE_COLUMNS)
    assert len(pd.read_csv(out / "features.csv")) == N_CURRENT
    # A given folder (--current): a run of its own named after it, tables only (no index.html).
    assert report["mlflow"]["logged"] is True and report["mlflow"]["model_run_id"] == store[1]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store[0])
    own = client.get_run(report["mlflow"]["run_id"])
    folder = Path(report["current"]["path"]).name
    assert own.info.run_id != store[1] and own.info.run_name == f"drift {folder}"
    assert own.data.tags["data_source"] == folder
    assert {a.path for a in client.list_artifacts(own.info.run_id)} == {"drift.json", "features.csv"}
    assert own.info.experiment_id == client.get_experiment_by_name(OWN_DATA_EXPERIMENT).experiment_id


@pytest.mark.integration
def test_report_script_passes_40_unshifted_images(setup, store, tmp_path):
    folder = tmp_path / "unshifted"
    folder.mkdir()
    for s in read_csv_stems(ROOT / "data" / "splits" / "test.csv")[:N_CURRENT]:
        shutil.copy(RAW_IMAGES / f"{s}.jpg", folder)
    result = run_report(
        setup, store, "--current", str(folder), "--out", str(tmp_path / "out"), "--fail-on-drift"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert report["dataset_drift"] is False and report["drifted_features"] == []


@pytest.mark.integration
def test_shadow_mode_to_drift_report_end_to_end(setup, store, tmp_path):
    """A real gunicorn in shadow mode stores 25 requests; the report reads them as its default source."""
    import http.client

    from tests.support.harness import Gunicorn

    model, reference, _ = setup
    shadow = tmp_path / "shadow"
    stems = read_csv_stems(ROOT / "data" / "splits" / "test.csv")[N_CURRENT : N_CURRENT + 25]
    with Gunicorn(model.path, workers=2, env={"POLYPSEG_SHADOW_DIR": str(shadow)}) as server:
        for s in stems:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request(
                "POST",
                "/predict",
                body=(RAW_IMAGES / f"{s}.jpg").read_bytes(),
                headers={"Content-Type": "image/jpeg"},
            )
            assert conn.getresponse().status == 200
            conn.close()
    result = run_report(
        setup,
        store,
        "--set",
        f"shadow_dir={shadow}",
        "--set",
        "min_images=20",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert report["current"]["source"] == "shadow" and report["n_current"] == 25
    assert report["model_version"] == model.meta.model_version and report["warnings"] == []
    # The report's model-side features are what /predict returned: same model, same path, same threshold.
    assert report["served_share_max_abs_diff"] < 1e-5
    assert report["dataset_drift"] is False
    assert report["mlflow"]["logged"] is True


@pytest.mark.integration
def test_report_html_shows_the_drift_table_in_headless_chromium(darkened_report):
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip(f"{chromium} is not installed (make chromium installs it)")
    from playwright.sync_api import expect, sync_playwright

    index = darkened_report[1] / "index.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(index.resolve().as_uri(), wait_until="load")
        page.wait_for_selector("table tbody tr", timeout=30_000)  # everything is inline: no network
        assert "Dataset Drift is detected" in page.inner_text("body")
        # Sorted by K-S p-value, smallest first, the first page lists the drifted columns drift.json names.
        page.get_by_text("Drift Score", exact=True).click()
        rows = [r.inner_text() for r in page.locator("table tbody tr").all()]
        drifted = json.loads((darkened_report[1] / "drift.json").read_text())["drifted_features"]
        shown = [r for r in rows if "Detected" in r and "Not Detected" not in r]
        assert len(shown) == min(len(drifted), len(rows)) and all(any(c in r for c in drifted) for r in shown)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        # The table filters by column name.
        page.fill("input[placeholder='Search']", "brightness_mean")
        expect(page.locator("table tbody tr")).to_have_count(1)  # the filter applies after a debounce
        assert page.locator("table tbody tr").inner_text().split()[0] == "brightness_mean"
        browser.close()
    assert not errors, errors
    assert SCREENSHOT.stat().st_size > 10_000


def test_feature_columns_are_the_image_features_then_the_model_side_ones():
    assert FEATURE_COLUMNS == FEATURE_NAMES + MODEL_FEATURE_NAMES
    assert "predicted_polyp_share" in FEATURE_COLUMNS  # the served polyp share's baseline is read by name
