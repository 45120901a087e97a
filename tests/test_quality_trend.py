"""The quality trend (lib/trend.py, bin/quality_trend.py) against a real SQLite MLflow store in tmp_path:
versions registered with lib.registry.register_run from runs holding known evaluation metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from bin_helpers import ROOT, load_bin

from lib.config import ConfigError
from lib.plots import trend_png
from lib.registry import EVALUATION_TAGS, PYFUNC_TAG, client, register_run
from lib.report import render_index, trend_section
from lib.tracking import registered_model_name
from lib.trend import (
    Point,
    TrendConfig,
    candidate_point,
    flag_regressions,
    load_trend_config,
    quality_trend,
)

NAME = registered_model_name(ROOT / "conf/register.yaml")  # what bin/quality_trend.py looks up
CONF = ROOT / "conf/quality_trend.yaml"
SETTINGS = TrendConfig(
    enabled=True, register_conf="conf/register.yaml", test_split="test", val_split="val", tolerance=0.01
)
# Three evaluations: v2 improves on v1, v3 falls 0.03 below v2 (more than the 0.01 tolerance).
EVALUATIONS = [
    {"test_dice_mean": 0.85, "test_iou_mean": 0.76, "val_dice_mean": 0.84},
    {"test_dice_mean": 0.87, "test_iou_mean": 0.79, "val_dice_mean": 0.86},
    {"test_dice_mean": 0.84, "test_iou_mean": 0.74, "val_dice_mean": 0.87},
]


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store):
    """A fresh store with experiment polyp-seg; returns (client, experiment id)."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(ROOT)  # the confs name their files relative to the repository root
    c = client()  # also mlflow's global URI, which registration resolves `models:/` sources with
    return c, c.create_experiment("polyp-seg", artifact_location=(tmp_path / "artifacts").as_uri())


def register(c, experiment: str, metrics: dict[str, float], git_sha: str = "abc1234") -> tuple[str, str]:
    """A finished run with `metrics` and a logged model, registered the way bin/register.py does it."""
    run = c.create_run(experiment, tags={"git_sha": git_sha, "data_rev": "rev0"})
    for key, value in {"best_val_dice": 0.8, **metrics}.items():
        c.log_metric(run.info.run_id, key, value)
    model = c.create_logged_model(experiment, name="pyfunc", source_run_id=run.info.run_id)
    c.set_tag(run.info.run_id, PYFUNC_TAG, f"models:/{model.model_id}")
    c.set_terminated(run.info.run_id)
    version, reused = register_run(c, NAME, c.get_run(run.info.run_id), by="tester")
    assert not reused
    return str(version.version), run.info.run_id


def run_cli(out: Path) -> dict:
    assert load_bin("quality_trend").main(["--conf", str(CONF), "--out", str(out)]) == 0
    return json.loads((out / "trend.json").read_text())


def png_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    assert image.std() > 0  # something is drawn
    return image.shape[1], image.shape[0]


def test_three_versions_table_regression_plot_and_page(store, tmp_path):
    c, experiment = store
    versions = [register(c, experiment, m, git_sha=f"sha{i}")[0] for i, m in enumerate(EVALUATIONS)]
    c.set_registered_model_alias(NAME, "production", versions[1])
    c.set_registered_model_alias(NAME, "staging", versions[2])

    table = run_cli(tmp_path / "out")
    points = table["points"]
    assert [p["version"] for p in points] == versions and table["note"] == ""
    for p, m in zip(points, EVALUATIONS):
        assert (p["test_dice"], p["test_iou"], p["val_dice"]) == (
            m["test_dice_mean"],
            m["test_iou_mean"],
            m["val_dice_mean"],
        )
        assert p["metrics_from"] == "run" and p["created"]
    assert [p["regression"] for p in points] == [False, False, True]
    assert points[2]["best_earlier"] == f"v{versions[1]}"
    assert points[2]["below_best"] == pytest.approx(0.87 - 0.84)
    assert points[1]["below_best"] == pytest.approx(0.85 - 0.87)  # better than the best earlier
    assert points[1]["aliases"] == ["production"] and points[2]["aliases"] == ["staging"]
    assert [p["git_sha"] for p in points] == ["sha0", "sha1", "sha2"]

    width, height = png_size(tmp_path / "out" / "trend.png")
    assert width >= 400 and height >= 250
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count("<tr") == 1 + len(versions) and page.count('class="regression"') == 1
    assert f"REGRESSION: 0.0300 below v{versions[1]}" in page and 'src="trend.png"' in page
    assert "NOT FOR CLINICAL USE" in page and "production" in page


def test_registration_keeps_the_runs_evaluation_on_the_version(store):
    c, experiment = store
    version, _ = register(c, experiment, EVALUATIONS[0])
    tags = c.get_model_version(NAME, version).tags
    assert {k: float(tags[k]) for k in EVALUATION_TAGS} == EVALUATIONS[0]


def test_a_version_without_evaluation_is_shown_as_missing(store, tmp_path):
    c, experiment = store
    register(c, experiment, EVALUATIONS[1])
    bare, _ = register(c, experiment, {})  # registered from a run that was never evaluated
    last, _ = register(c, experiment, EVALUATIONS[2])
    points = run_cli(tmp_path / "out")["points"]
    missing = points[1]
    assert missing["version"] == bare and missing["test_dice"] is None and missing["metrics_from"] == ""
    assert not missing["regression"] and missing["note"].startswith("not evaluated")
    # The gap is no reference: v3 is still compared with v1, the best evaluated version before it.
    assert points[2]["version"] == last and points[2]["regression"] and points[2]["best_earlier"] == "v1"
    assert "not evaluated" in (tmp_path / "out" / "index.html").read_text()
    png_size(tmp_path / "out" / "trend.png")


def test_the_versions_tags_stand_in_when_its_run_has_no_metrics(store):
    c, experiment = store
    version, _ = register(c, experiment, {})  # e.g. evaluated against another store
    for key, value in EVALUATIONS[0].items():
        c.set_model_version_tag(NAME, version, key, str(value))
    (point,) = quality_trend(NAME, SETTINGS).points
    assert point.metrics_from == "version tags" and point.test_dice == EVALUATIONS[0]["test_dice_mean"]


def test_candidate_follows_the_versions_and_can_be_a_regression(store):
    c, experiment = store
    register(c, experiment, EVALUATIONS[0])
    _, run_id = register(c, experiment, EVALUATIONS[1])
    results = {"val": {"dice_mean": 0.88, "iou_mean": 0.8}, "test": {"dice_mean": 0.83, "iou_mean": 0.72}}
    provenance = {"run_id": run_id, "model_git_sha": "def5678", "data_rev": "rev1"}
    trend = quality_trend(NAME, SETTINGS, candidate_point(results, provenance, SETTINGS))
    candidate = trend.points[-1]
    assert [p.label for p in trend.points] == ["v1", "v2", "candidate"] and candidate.version is None
    assert (candidate.test_dice, candidate.test_iou, candidate.val_dice) == (0.83, 0.72, 0.88)
    assert candidate.regression and candidate.best_earlier == "v2" and candidate.note == "the run of v2"
    assert 'class="candidate"' not in trend_section(trend)  # a flagged candidate is shown as a regression
    assert candidate_point({"other": results["test"]}, provenance, SETTINGS) is None  # no test split


def test_missing_store_gives_an_empty_trend_and_creates_nothing(tmp_path, monkeypatch):
    db = tmp_path / "absent.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(ROOT)
    table = run_cli(tmp_path / "out")
    assert table["points"] == [] and table["note"].startswith("no MLflow store at")
    assert not db.exists()  # reading must not create a store
    png_size(tmp_path / "out" / "trend.png")
    assert "no MLflow store" in (tmp_path / "out" / "index.html").read_text()


def test_a_store_without_the_model_says_so(store, tmp_path):
    table = run_cli(tmp_path / "out")
    assert table["points"] == [] and table["note"].startswith(f"no registered model '{NAME}'")


def test_regression_needs_more_than_the_tolerance_and_skips_gaps():
    def point(label: str, dice: float | None) -> Point:
        return Point(label, label, "", "", (), dice, dice, None, "run" if dice else "", "", "")

    # Exact binary fractions: a drop of exactly the tolerance is not a regression, a larger one is.
    points = [point("a", 0.75), point("b", None), point("c", 0.5), point("d", 0.4375), point("e", 0.875)]
    flagged = flag_regressions(points, tolerance=0.25)
    assert [p.regression for p in flagged] == [False, False, False, True, False]
    assert flagged[1].best_earlier is None and flagged[3].below_best == 0.3125
    assert flagged[4].best_earlier == "a" and flagged[4].below_best == -0.125


def test_evaluation_report_section_renders_without_a_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/absent.db")
    results = {"test": {"dice_mean": 0.8, "iou_mean": 0.7, "n_images": 3}}
    provenance = {"run_id": "r" * 32, "model_git_sha": "abc", "data_rev": "rev0"}
    trend = quality_trend(NAME, SETTINGS, candidate_point(results, provenance, SETTINGS))
    assert [p.label for p in trend.points] == ["candidate"] and trend.note.startswith("no MLflow store")
    page = render_index(results, {"model_version": "m"}, trend=trend_section(trend))
    assert "<h2>Quality trend</h2>" in page and "no MLflow store" in page and 'src="trend.png"' in page
    assert "Quality trend" not in render_index(results, {"model_version": "m"})
    image = cv2.imdecode(np.frombuffer(trend_png(trend), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] >= 400
    off = quality_trend(None, SETTINGS)  # trend.enabled: false: nothing read, the PNG says so
    assert off.points == () and "turned off" in off.note
    assert cv2.imdecode(np.frombuffer(trend_png(off), np.uint8), cv2.IMREAD_COLOR) is not None


@pytest.mark.parametrize("conf", ["conf/evaluate.yaml", "conf/smoke/evaluate.yaml"])
def test_evaluate_configs_name_a_registered_model_and_their_splits(conf):
    settings = load_trend_config(ROOT / conf)
    raw = yaml.safe_load((ROOT / conf).read_text())
    assert settings.test_split in raw["splits"] and settings.val_split in raw["splits"]
    assert registered_model_name(ROOT / settings.register_conf)
    assert 0 < settings.tolerance < 0.1


def test_a_bad_trend_block_is_a_config_error_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "evaluate.yaml"
    bad.write_text("trend: {enabled: true, register_conf: conf/register.yaml, test_split: test}\n")
    with pytest.raises(ConfigError, match="trend.val_split: required key is missing"):
        load_trend_config(bad)
    conf = tmp_path / "quality_trend.yaml"
    conf.write_text(f"evaluate_conf: {bad}\nout_dir: {tmp_path / 'out'}\n")
    assert load_bin("quality_trend").main(["--conf", str(conf)]) == 2
    assert "trend.val_split" in capsys.readouterr().err
