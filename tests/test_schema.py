"""Each schema rule flags its broken case and passes a clean folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lib.config import from_dict
from lib.io import MASK_THRESHOLD, read_mask
from lib.schema import RULES, SchemaConfig, describe_image, describe_mask, run_rules

ROOT = Path(__file__).resolve().parents[1]
CFG = from_dict(SchemaConfig, yaml.safe_load((ROOT / "conf/validate_data.yaml").read_text())["schema"])


def scan(root: Path):
    images = [describe_image(p.name, p.read_bytes()) for p in sorted((root / "images").iterdir())]
    masks = [describe_mask(p.name, p.read_bytes()) for p in sorted((root / "masks").iterdir())]
    return images, masks


def failed(root: Path, cfg: SchemaConfig = CFG) -> dict[str, list[str]]:
    return {r["rule"]: r["offending"] for r in run_rules(*scan(root), cfg) if r["status"] == "fail"}


def test_every_rule_is_registered():
    expected = {
        "pairing",
        "decodable",
        "image_format",
        "mask_format",
        "size_match",
        "duplicates",
        "foreground_fraction",
        "image_size",
    }
    assert {r.name for r in RULES} == expected


def test_clean_folder_passes(synthetic_dataset):
    assert failed(synthetic_dataset) == {}


def test_missing_mask_fails_pairing(synthetic_dataset):
    (synthetic_dataset / "masks" / "s1.jpg").unlink()
    assert failed(synthetic_dataset)["pairing"] == ["images/s1.jpg (no mask)"]


def test_orphan_mask_fails_pairing(synthetic_dataset):
    (synthetic_dataset / "images" / "s2.jpg").unlink()
    assert failed(synthetic_dataset)["pairing"] == ["masks/s2.jpg (no image)"]


def test_two_masks_for_one_stem_fail_pairing(synthetic_dataset):
    cv2.imwrite(str(synthetic_dataset / "masks" / "s0.png"), np.zeros((80, 96), np.uint8))
    assert len(failed(synthetic_dataset)["pairing"]) == 2


def test_truncated_jpeg_fails_decodable(synthetic_dataset):
    path = synthetic_dataset / "images" / "s3.jpg"
    path.write_bytes(path.read_bytes()[:-400])
    assert failed(synthetic_dataset)["decodable"][0].startswith("images/s3.jpg")


def test_garbage_bytes_fail_decodable(synthetic_dataset):
    (synthetic_dataset / "masks" / "s0.jpg").write_bytes(b"not an image at all")
    assert failed(synthetic_dataset)["decodable"][0].startswith("masks/s0.jpg")


def test_grayscale_image_fails_image_format(synthetic_dataset):
    cv2.imwrite(str(synthetic_dataset / "images" / "s0.png"), np.full((80, 96), 99, np.uint8))
    (synthetic_dataset / "images" / "s0.jpg").unlink()
    assert failed(synthetic_dataset)["image_format"] == ["images/s0.png (1 channel(s), uint8)"]


def test_sixteen_bit_image_fails_image_format(synthetic_dataset):
    cv2.imwrite(str(synthetic_dataset / "images" / "s0.png"), np.full((80, 96, 3), 999, np.uint16))
    (synthetic_dataset / "images" / "s0.jpg").unlink()
    assert "image_format" in failed(synthetic_dataset)


def test_soft_mask_fails_mask_format(synthetic_dataset):
    gradient = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (80, 1))
    cv2.imwrite(str(synthetic_dataset / "masks" / "s1.png"), gradient)
    (synthetic_dataset / "masks" / "s1.jpg").unlink()
    assert failed(synthetic_dataset)["mask_format"][0].startswith("masks/s1.png")


def test_colour_mask_is_read_by_its_brightest_channel(synthetic_dataset):
    # An annotation tool's red-on-black mask is a binary mask: lib/io.py mask_to_gray reads it, so the
    # validator must accept it too (one mask rule); a colour photo in masks/ still fails as not binary.
    colour = np.zeros((80, 96, 3), np.uint8)
    colour[10:40, 10:40] = (0, 0, 255)
    cv2.imwrite(str(synthetic_dataset / "masks" / "s1.png"), colour)
    (synthetic_dataset / "masks" / "s1.jpg").unlink()
    assert "mask_format" not in failed(synthetic_dataset)
    photo = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    cv2.imwrite(str(synthetic_dataset / "masks" / "s1.png"), photo)
    assert failed(synthetic_dataset)["mask_format"][0].startswith("masks/s1.png")


def test_grey_jpeg_edges_still_pass_mask_format(synthetic_dataset):
    # A JPEG mask has grey pixels along every edge; those must not count as a soft mask.
    record = describe_mask("s0.jpg", (synthetic_dataset / "masks" / "s0.jpg").read_bytes())
    assert 0 < record.grey_fraction < CFG.max_grey_fraction


def test_validation_binarises_masks_as_preprocessing_and_evaluation_do(synthetic_dataset):
    # One definition (lib/io.py MASK_THRESHOLD): the foreground validation reports is the polyp share
    # read_mask gives the training cache and evaluation, grey JPEG edges included.
    path = synthetic_dataset / "masks" / "s0.jpg"
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert ((gray > 0) & (gray < MASK_THRESHOLD)).any()  # grey edges: where "> 0" would differ
    assert describe_mask(path.name, path.read_bytes()).foreground == read_mask(path).mean()


def test_size_mismatch_fails_size_match(synthetic_dataset):
    cv2.imwrite(
        str(synthetic_dataset / "masks" / "s2.jpg"), np.zeros((40, 48), np.uint8) + 255 * np.eye(40, 48)
    )
    assert failed(synthetic_dataset)["size_match"] == ["s2 (image 96x80, mask 48x40)"]


def test_identical_images_fail_duplicates(synthetic_dataset):
    data = (synthetic_dataset / "images" / "s0.jpg").read_bytes()
    (synthetic_dataset / "images" / "s3.jpg").write_bytes(data)
    assert failed(synthetic_dataset)["duplicates"] == ["s0.jpg = s3.jpg"]


def test_empty_mask_fails_foreground_fraction(synthetic_dataset):
    cv2.imwrite(str(synthetic_dataset / "masks" / "s1.jpg"), np.zeros((80, 96), np.uint8))
    result = failed(synthetic_dataset)
    assert result["foreground_fraction"] == ["masks/s1.jpg (foreground 0.0000)"]


def test_tiny_image_fails_image_size(tmp_path):
    from tests.conftest import write_pair

    write_pair(tmp_path, "small", size=(40, 40), box=(5, 5, 30, 30))
    assert failed(tmp_path)["image_size"] == ["images/small.jpg (40x40)"]


def test_warning_rules_do_not_count_as_critical(synthetic_dataset):
    cv2.imwrite(str(synthetic_dataset / "masks" / "s1.jpg"), np.zeros((80, 96), np.uint8))
    results = {r["rule"]: r for r in run_rules(*scan(synthetic_dataset), CFG)}
    assert results["foreground_fraction"]["severity"] == "warning"
    assert all(r["status"] == "pass" for r in results.values() if r["severity"] == "critical")


def test_severity_override_is_applied(synthetic_dataset):
    cfg = replace(CFG, severity={"foreground_fraction": "critical"})
    results = {r["rule"]: r for r in run_rules(*scan(synthetic_dataset), cfg)}
    assert results["foreground_fraction"]["severity"] == "critical"


def test_unknown_rule_in_severity_is_an_error(synthetic_dataset):
    with pytest.raises(ValueError, match="unknown rule"):
        run_rules(*scan(synthetic_dataset), replace(CFG, severity={"no_such_rule": "critical"}))
