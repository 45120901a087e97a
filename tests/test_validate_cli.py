"""bin/validate_data.py on real Kvasir-SEG files: a corrupted JPEG and a removed mask stop it."""

from __future__ import annotations

import json
import shutil

from bin_helpers import ROOT, load_bin, run_script


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


def test_other_folder_never_overwrites_the_pipeline_record(real_samples, tmp_path, monkeypatch):
    # The pipeline's reports/data_validation.json is a DVC output: checking another folder (here a
    # damaged copy) must leave it alone and write its own report beside it.
    copy = tmp_path / "damaged"
    shutil.copytree(real_samples, copy)
    removed = next((copy / "masks").iterdir())
    removed.unlink()
    orphan = removed.name
    monkeypatch.chdir(tmp_path)

    rc = load_bin("validate_data").main(
        ["--conf", str(ROOT / "conf/validate_data.yaml"), "--data", str(copy)]
    )

    # The image without its mask is left out and listed with the reason (a warning: nothing else is lost).
    assert rc == 0
    assert not (tmp_path / "reports" / "data_validation.json").exists()
    report = json.loads((tmp_path / "reports" / "data_validation-damaged.json").read_text())
    assert report["data"] == str(copy)
    pairing = next(r for r in report["rules"] if r["rule"] == "pairing")
    assert pairing["status"] == "fail" and pairing["severity"] == "warning"
    assert pairing["offending"] == [f"images/{orphan} (no mask)"]
