"""Shared fixtures: tiny synthetic datasets written to tmp_path, and a handful of real Kvasir-SEG samples."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_ZIP = ROOT.parent / "shared" / "datasets" / "kvasir-seg.zip"
RAW = ROOT / "data" / "raw" / "Kvasir-SEG"


def write_pair(folder: Path, stem: str, size=(80, 96), box=(21, 19, 53, 61), seed=0) -> None:
    """A textured RGB image and a JPEG mask with a white box (grey edges, like Kvasir-SEG)."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = 255
    mask = cv2.GaussianBlur(mask, (3, 3), 0)  # anti-aliased edge, as in the annotation tool
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{stem}.jpg"), image)
    cv2.imwrite(str(folder / "masks" / f"{stem}.jpg"), mask)


@pytest.fixture
def synthetic_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for i in range(4):
        write_pair(root, f"s{i}", seed=i)
    return root


@pytest.fixture(scope="session")
def real_samples(tmp_path_factory) -> Path:
    """16 real Kvasir-SEG pairs (from data/raw when fetched, else from the shared zip)."""
    root = tmp_path_factory.mktemp("kvasir16")
    for sub in ("images", "masks"):
        (root / sub).mkdir()
    if RAW.is_dir():
        stems = sorted(p.stem for p in (RAW / "images").glob("*.jpg"))[:16]
        for s in stems:
            for sub in ("images", "masks"):
                (root / sub / f"{s}.jpg").write_bytes((RAW / sub / f"{s}.jpg").read_bytes())
    elif SHARED_ZIP.exists():
        with zipfile.ZipFile(SHARED_ZIP) as z:
            names = sorted(n for n in z.namelist() if n.startswith("Kvasir-SEG/images/"))[:16]
            for n in names:
                for sub in ("images", "masks"):
                    member = n.replace("/images/", f"/{sub}/")
                    (root / sub / Path(member).name).write_bytes(z.read(member))
    else:
        pytest.skip("no Kvasir-SEG copy (data/raw or ../shared/datasets/kvasir-seg.zip)")
    return root


# The tiny real ONNX model of tests/support/tinymodel.py (64 px), for the serving tests; modules that
# need another size define their own `model_path`.
@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from tests.support.tinymodel import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model"), size=64)


@pytest.fixture(scope="module")
def predictor(model_path):
    from serve.predictor import load_local

    return load_local(model_path)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store made once: creating the schema takes seconds, copying none."""
    import mlflow

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path
