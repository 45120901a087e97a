"""`make finetune` end to end on tiny synthetic data: a 64 px base trained by bin/train.py, then
bin/finetune.py on another folder with group labels. Every step is the real script; the numbers mean
nothing at this size, the machinery does: grouped splits, rehearsal, both models evaluated alike, a
servable ONNX, an honest verdict, no image in MLflow, REGISTER refused when the model is not better."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from bin_helpers import ROOT, run_script
from conftest import write_pair

pytestmark = pytest.mark.integration

TINY = {  # a bin/train.py config small enough for seconds on a CPU
    "model.encoder": "tu-tf_efficientnet_lite0",
    "model.encoder_weights": None,
    "model.decoder_channels": [16, 8, 8, 8, 8],
    "model.input_size": 64,
    "optim.epochs": 1,
    "optim.batch_size": 4,
    "runtime.threads": 1,
    "runtime.log_every": 0,
}


def write_png_pair(folder: Path, stem: str, seed: int, box: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (120, 150, 3), dtype=np.uint8)
    mask = np.zeros((120, 150), np.uint8)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = 255
    for sub, array in (("images", image), ("masks", mask)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / sub / f"{stem}.png"), array)


def tiny_train_conf(path: Path, base: Path) -> Path:
    conf = yaml.safe_load(base.read_text())
    for key, value in TINY.items():
        block, name = key.split(".")
        conf[block][name] = value
    path.write_text(yaml.safe_dump(conf))
    return path


def run_ok(name: str, *args: str, env: dict) -> str:
    done = run_script(name, *args, env=env, timeout=900)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlruns.db'}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for name in ("polyp-seg", "polyp-seg-finetune"):  # artifacts in tmp, not in the repository's ./mlruns
        client.create_experiment(name, artifact_location=(tmp / "artifacts" / name).as_uri())
    # The base: a folder standing in for Kvasir-SEG, split and cached as the pipeline does, trained 1 epoch.
    for i in range(20):
        write_pair(tmp / "basedata", f"b{i:02d}", seed=i)
    data_conf = {
        "sources": {"kvasir": {"kind": "folder", "path": str(tmp / "basedata"), "prefix": ""}},
        "catalog": str(tmp / "catalog.csv"),
        "summary": str(tmp / "sources.json"),
        "manifest_dir": str(tmp / "manifests"),
        "timeout_s": 10,
    }
    (tmp / "data.yaml").write_text(yaml.safe_dump(data_conf))
    base_data = [f"catalog={tmp / 'catalog.csv'}", f"sources_summary={tmp / 'sources.json'}"]
    run_ok("fetch_data.py", "--conf", str(tmp / "data.yaml"), env=env)
    splits = tmp / "splits"
    sets = [
        a for s in [*base_data, f"out_dir={splits}", f"report={tmp / 'splits.json'}"] for a in ("--set", s)
    ]
    run_ok("make_splits.py", "--conf", "conf/make_splits.yaml", *sets, env=env)
    cache = [f"catalog={tmp / 'catalog.csv'}", f"out_dir={tmp / 'processed'}", "size=64"]
    run_ok("preprocess.py", *[a for s in cache for a in ("--set", s)], env=env)
    train_conf = tiny_train_conf(tmp / "tiny_train.yaml", ROOT / "conf" / "finetune_train.yaml")
    base = [
        *base_data,
        f"cache_dir={tmp / 'processed'}",
        f"train_split={splits / 'train.csv'}",
        f"val_split={splits / 'val.csv'}",
        f"out_dir={tmp / 'base'}",
        f"metrics={tmp / 'base' / 'metrics.json'}",
        "experiment=polyp-seg",
    ]
    run_ok("train.py", "--conf", str(train_conf), *[a for s in base for a in ("--set", s)], env=env)
    # The user's folder: another look, 24 frames of 6 "videos" (groups.csv).
    own = tmp / "clinic"
    for i in range(24):  # PNG frames with clean {0, 255} masks, larger than the base's
        write_png_pair(own, f"f{i:02d}", seed=100 + i, box=(20 + i % 7, 24, 90, 110 + i % 9))
    (own / "groups.csv").write_text("stem,group\n" + "".join(f"f{i:02d},v{i % 6}\n" for i in range(24)))
    out = {
        "data": str(own),
        "name": "clinic",
        "base": str(tmp / "base" / "best.pt"),
        "train_conf": str(train_conf),
        "base_catalog": str(tmp / "catalog.csv"),
        "base_summary": str(tmp / "sources.json"),
        "base_train": str(splits / "train.csv"),
        "base_test": str(splits / "test.csv"),
        "base_val": str(splits / "val.csv"),
        "work_dir": str(tmp / "work"),
        "models_dir": str(tmp / "models"),
        "reports_dir": str(tmp / "reports"),
    }
    args = [a for k, v in out.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    # REGISTER=1 with a gain no model reaches: the report is written, then registration is refused.
    args += ["--set", "min_gain=1.0", "--set", "register=true"]
    done = run_script("finetune.py", "--conf", "conf/finetune.yaml", *args, env=env, timeout=900)
    return tmp, done


def test_finetune_writes_a_servable_model_and_an_honest_report(finetuned):
    tmp, done = finetuned
    metrics = json.loads((tmp / "reports" / "clinic" / "metrics.json").read_text())
    for side in ("base", "finetuned"):
        for key in ("test_dice", "kvasir_test_dice", "val_dice"):
            assert 0.0 <= metrics[side][key] <= 1.0
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 24
    assert metrics["grouping"] == "metadata (groups.csv)"
    assert metrics["better_on_held_out_groups"] is False  # min_gain 1.0: no model is better by that
    assert "NOT better" in metrics["verdict"] and metrics["verdict"] in done.stdout
    assert metrics["train_wall_seconds"] > 0 and metrics["data_rev"] != metrics["own_data_rev"]
    assert metrics["n_rehearsal"] > 0  # the base's training frames were mixed in
    from serve.predictor import load_local

    assert load_local(str(tmp / "models" / "clinic" / "model.onnx"))  # servable: model.json beside it


def test_register_is_refused_when_not_better(finetuned):
    _, done = finetuned
    assert done.returncode == 1, done.stderr[-2000:]
    assert "REGISTER=1 refused" in done.stderr
    assert "] register" not in done.stdout  # bin/finetune.py never reached the register step


def test_no_group_crosses_the_folders_splits(finetuned):
    tmp = finetuned[0]
    groups = {f"clinic-f{i:02d}": f"v{i % 6}" for i in range(24)}
    seen = {}
    for split in ("train", "val", "test"):
        with open(tmp / "work" / "clinic" / "splits" / f"{split}.csv") as fh:
            for row in csv.DictReader(fh):
                seen.setdefault(groups[row["stem"]], set()).add(split)
    assert all(len(s) == 1 for s in seen.values()), seen


def test_finetune_logs_no_image_to_mlflow(finetuned):
    tmp = finetuned[0]
    artifacts = []
    db = sqlite3.connect(tmp / "mlruns.db")
    for (root,) in db.execute("select artifact_uri from runs"):
        folder = Path(root.removeprefix("file://"))
        artifacts += [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    assert any(p.name == "best.pt" for p in artifacts), "the training runs logged their weights"
    assert not [p for p in artifacts if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".html"}]
