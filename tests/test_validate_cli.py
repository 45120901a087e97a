"""bin/validate_data.py on real Kvasir-SEG files: a corrupted JPEG and a removed mask stop it."""

from __future__ import annotations

import json
import shutil

from bin_helpers import run_script


def test_corrupted_image_and_missing_mask_exit_nonzero(real_samples, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(real_samples, copy)
    images = sorted((copy / "images").iterdir())
    corrupted, orphan = images[0], images[1]
    corrupted.write_bytes(corrupted.read_bytes()[: len(corrupted.read_bytes()) // 2])
    (copy / "masks" / orphan.name).unlink()
    report = tmp_path / "report.json"

    result = run_script("validate_data.py", "--data", str(copy), "--report", str(report))

    assert result.returncode == 1
    assert "decodable" in result.stderr and corrupted.name in result.stderr
    assert "pairing" in result.stderr and orphan.name in result.stderr
    rules = {r["rule"]: r for r in json.loads(report.read_text())["rules"]}
    assert rules["decodable"]["status"] == "fail" and rules["pairing"]["status"] == "fail"
    assert json.loads(report.read_text())["passed"] is False


def test_real_samples_pass(real_samples, tmp_path):
    result = run_script("validate_data.py", "--data", str(real_samples), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "r.json").read_text())["statistics"]
    assert stats["n_images"] == stats["n_masks"] == 16


def test_folder_without_masks_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    result = run_script("validate_data.py", "--data", str(tmp_path), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 2
    assert "masks" in result.stderr
