"""Real DVC on the fetch_data stage: a source under data/own is watched, so `dvc status` sees a changed or
added file, and `dvc repro` carries it into the manifest and data_rev.

The repository is built in tmp_path from the project's own bin/fetch_data.py, lib/ and fetch_data stage
(less Kvasir-SEG's extracted folder, which needs the download), with one folder source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from bin_helpers import ROOT

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
KVASIR_OUT = "data/raw/Kvasir-SEG"


def fetch_stage() -> dict:
    """The project's fetch_data stage, without the Kvasir-SEG folder among its outputs."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["fetch_data"]
    outs = [o for o in stage["outs"] if (o if isinstance(o, str) else next(iter(o))) != KVASIR_OUT]
    assert len(outs) == len(stage["outs"]) - 1, "the project's fetch_data stage no longer outputs Kvasir-SEG"
    assert "data/own" in stage["deps"]
    return {**stage, "outs": outs}


def write_pair(root: Path, stem: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:40, 20:50] = 255
    assert cv2.imwrite(str(root / "images" / f"{stem}.png"), rng.integers(0, 256, (64, 64, 3), np.uint8))
    assert cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    shutil.copy2(ROOT / "bin/fetch_data.py", repo / "bin/fetch_data.py")
    shutil.copytree(ROOT / "lib", repo / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "data").mkdir()
    shutil.copy2(ROOT / "data/kvasir-seg.SHA256SUMS", repo / "data/kvasir-seg.SHA256SUMS")
    conf = yaml.safe_load((ROOT / "conf/data.yaml").read_text())
    conf["sources"] = {"clinic": {"kind": "folder", "path": "data/own/clinic", "role": "train"}}
    (repo / "conf").mkdir()
    (repo / "conf/data.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fetch_data": fetch_stage()}}, sort_keys=False))
    for i in range(3):
        write_pair(repo / "data/own/clinic", f"f{i}", seed=i)
    dvc(repo, tmp_path, "init", "--no-scm")
    return repo


def dvc(repo: Path, tmp_path: Path, *args: str) -> tuple[str, str]:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the stage's `python`: this venv's
        "PYTHONPATH": str(repo),  # the stage's `lib` is the copy in the tmp repository
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
    }
    result = subprocess.run(
        [str(VENV_BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout, result.stderr


def status(repo: Path, tmp_path: Path) -> dict:
    return json.loads(dvc(repo, tmp_path, "status", "--json")[0])


DATA_OWN_CHANGED = {"fetch_data": [{"changed deps": {"data/own": "modified"}}]}


def test_dvc_status_sees_changes_under_data_own(repo, tmp_path):
    out, err = dvc(repo, tmp_path, "repro")
    assert "fetch_data: clinic: 3 pairs" in out
    assert "is not a folder under data/own" not in out + err  # fetch_data knows DVC watches it
    first = json.loads((repo / "data/sources.json").read_text())
    assert first["sources"]["clinic"]["n_pairs"] == 3
    assert (repo / "data/manifests/clinic.SHA256SUMS").is_file()
    assert (repo / "data/catalog.csv").read_text().splitlines()[1].startswith("clinic-f0,clinic,train,")
    assert status(repo, tmp_path) == {}

    # One mask file's bytes change: the stage is out of date, and a repro changes data_rev.
    mask = repo / "data/own/clinic/masks/f1.png"
    data = bytearray(mask.read_bytes())
    data[len(data) // 2] ^= 0x01
    mask.write_bytes(bytes(data))
    assert status(repo, tmp_path) == DATA_OWN_CHANGED

    dvc(repo, tmp_path, "repro")
    second = json.loads((repo / "data/sources.json").read_text())
    assert second["data_rev"] != first["data_rev"]
    assert status(repo, tmp_path) == {}

    # A file added: out of date again.
    write_pair(repo / "data/own/clinic", "f3", seed=3)
    assert status(repo, tmp_path) == DATA_OWN_CHANGED
