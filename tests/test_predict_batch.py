"""bin/predict_batch.py on a real local Ray instance: masks, error rows for broken files, resuming.

One Ray run pair only: a local instance takes seconds to start on 2 cores. The Segmenter itself (the work
each actor does) is tested in-process.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lib.batch_predict import Segmenter, done_names, list_inputs, read_manifest
from lib.io import read_image
from tests.bin_helpers import run_script

pytest.importorskip("ray", reason="ray[data] is in requirements.lock: run make setup")


@pytest.fixture(scope="module")
def folder(real_samples, tmp_path_factory) -> Path:
    """8 real Kvasir images (one in a subfolder) and 3 broken files."""
    root = tmp_path_factory.mktemp("batch_in")
    images = sorted((real_samples / "images").glob("*.jpg"))[:8]
    for image in images[:7]:
        shutil.copy(image, root / image.name)
    (root / "sub").mkdir()
    shutil.copy(images[7], root / "sub" / images[7].name)
    data = images[0].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_bytes(b"this is not an image\n")
    return root


def conf_for(tmp_path: Path, model_path: Path) -> Path:
    conf = yaml.safe_load(Path("conf/predict_batch.yaml").read_text())
    conf.update(model=str(model_path), actors=2, batch_size=3, num_cpus=2, progress_every=4)
    path = tmp_path / "predict_batch.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_batch_run_writes_masks_and_error_rows_and_resumes(folder, model_path, tmp_path):
    out = tmp_path / "out"
    args = ("--conf", str(conf_for(tmp_path, model_path)), "--input", str(folder), "--output", str(out))
    first = run_script("predict_batch.py", *args, timeout=300)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "3 of 11 images failed" in first.stderr

    rows = {r["path"]: r for r in csv.DictReader((out / "manifest.csv").open())}
    assert len(rows) == 11
    errors = {p: r["error"] for p, r in rows.items() if r["status"] == "error"}
    assert set(errors) == {"truncated.jpg", "empty.png", "text.jpg"}
    assert "empty" in errors["empty.png"] and "truncated" in errors["truncated.jpg"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 8 and any(r["path"].startswith("sub/") for r in ok)
    for row in ok:
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        h, w = read_image(folder / row["path"]).shape[:2]
        assert mask.shape == (h, w) == (int(row["height"]), int(row["width"]))  # the original size
        assert set(np.unique(mask)) <= {0, 255}
        assert float(row["polyp_share"]) == pytest.approx((mask > 0).mean(), abs=1e-5)
        assert row["model_version"] == "tiny-test-0"

    second = run_script("predict_batch.py", *args, timeout=300)
    assert "11 done in an earlier run, 0 to do" in second.stdout
    assert second.returncode == 1  # still says the 3 failed
    assert len(list(csv.DictReader((out / "manifest.csv").open()))) == 11  # nothing redone


def test_segmenter_batches_agree_with_single_images(folder, model_path):
    seg = Segmenter(str(model_path), threads=1)
    paths = sorted(str(p) for p in folder.glob("*.jpg") if p.name not in {"truncated.jpg", "text.jpg"})[:4]
    names = np.array([Path(p).name for p in paths])
    together = seg({"path": np.array(paths), "name": names})
    for i, path in enumerate(paths):
        alone = seg({"path": np.array([path]), "name": names[i : i + 1]})
        assert alone["mask_png"][0] == together["mask_png"][i]


def test_resume_trusts_only_masks_that_exist(tmp_path):
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a.jpg.png").write_bytes(b"png")
    manifest = {
        "a.jpg": {"status": "ok", "mask": "masks/a.jpg.png"},
        "b.jpg": {"status": "ok", "mask": "masks/b.jpg.png"},  # mask deleted since: redo
        "c.jpg": {"status": "error", "mask": ""},
    }
    assert done_names(manifest, tmp_path) == {"a.jpg", "c.jpg"}
    assert read_manifest(tmp_path / "missing.csv") == {}


def test_inputs_folder_and_glob(folder):
    by_folder = list_inputs(str(folder))
    assert "sub/" + next((folder / "sub").iterdir()).name in {by_folder.name(f) for f in by_folder.files}
    by_glob = list_inputs(str(folder / "*.png"))
    assert [f.name for f in by_glob.files] == ["empty.png"]
    with pytest.raises(FileNotFoundError):
        list_inputs(str(folder / "*.tiff"))
