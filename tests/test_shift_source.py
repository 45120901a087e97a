"""bin/shift_source.py: a Kvasir-like folder comes out resized, colour-shifted, re-encoded and grouped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from bin_helpers import ROOT, load_bin

from lib.io import read_image, read_mask

shift_source = load_bin("shift_source")

# (stem, near-duplicate group, (height, width)): the pairs 0/1 and 3/4 are near-duplicates; s5 is
# beyond n_images.
SOURCE = [("s0", 7, (120, 200)), ("s1", 7, (120, 200)), ("s2", 3, (180, 150)), ("s3", 9, (100, 100)),
          ("s4", 9, (100, 100)), ("s5", 2, (90, 90))]  # fmt: skip
N_IMAGES, LONG_SIDE = 5, 64
COLOUR = (120, 90, 60)  # RGB of the flat background: away from 0 and 255, so the gain never clips


@pytest.fixture
def kvasir(tmp_path: Path) -> Path:
    """Flat-coloured JPEGs with a darker ellipse, and JPEG masks of the ellipse with grey edges."""
    root = tmp_path / "Kvasir-SEG"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for stem, _, (h, w) in SOURCE:
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, 255, -1)
        mask = cv2.GaussianBlur(mask, (5, 5), 0)  # grey edges, as Kvasir-SEG's JPEG masks have
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:] = COLOUR
        rgb[mask >= 128] = (90, 60, 40)
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"{stem}.jpg"), mask)
    rows = "".join(f"{stem},{group}\n" for stem, group, _ in SOURCE)
    (tmp_path / "split.csv").write_text("stem,group\n" + rows)
    return root


def run(kvasir: Path, out: Path, *sets: str, force: bool = False) -> int:
    args = ["--conf", str(ROOT / "conf" / "shift_source.yaml"), "--set", f"raw_dir={kvasir}"]
    args += ["--set", f"split_csv={kvasir.parent / 'split.csv'}", "--set", f"out_dir={out}"]
    args += ["--set", f"n_images={N_IMAGES}", "--set", f"long_side={LONG_SIDE}", "--set", "n_videos=2"]
    for item in sets:
        args += ["--set", item]
    return shift_source.main(args + (["--force"] if force else []))


def png_depth(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR: colour type 0 = grey, 2 = RGB."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return data[24], data[25]


def groups_csv(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    stems = [r["stem"] for r in rows]
    assert len(stems) == len(set(stems)), "a stem listed twice"
    return {r["stem"]: r["group"] for r in rows}


def check_pair(image_path: Path, mask_path: Path, stem: str, kvasir: Path, mask_values: set[int]) -> None:
    """The image is at LONG_SIDE with the source's aspect; the mask is binary and matches the source's."""
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    source = read_mask(kvasir / "masks" / f"{stem}.jpg")
    h, w = source.shape
    assert max(image.shape[:2]) == LONG_SIDE and image.shape[2] == 3 and image.dtype == np.uint8
    assert abs(image.shape[1] / image.shape[0] - w / h) < 0.05
    assert mask.shape == image.shape[:2]
    assert set(np.unique(mask).tolist()) == mask_values
    expected = cv2.resize(source, mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
    assert ((mask == max(mask_values)) == (expected == 1)).mean() > 0.97


def check_groups(groups: dict[str, str]) -> None:
    """Every taken stem in exactly one synthetic video, near-duplicates together, several groups a video."""
    assert sorted(groups) == [s for s, _, _ in SOURCE[:N_IMAGES]]
    assert groups["s0"] == groups["s1"] and groups["s3"] == groups["s4"]
    assert len(set(groups.values())) == 2  # 3 source groups dealt into 2 videos


def test_folder_layout_png_and_16_bit_masks(kvasir, tmp_path):
    out = tmp_path / "own"
    assert run(kvasir, out, "layout=folder", "image_format=png", "mask_depth=16") == 0
    assert sorted(p.stem for p in (out / "images").iterdir()) == [s for s, _, _ in SOURCE[:N_IMAGES]]
    for stem, _, _ in SOURCE[:N_IMAGES]:
        image, mask = out / "images" / f"{stem}.png", out / "masks" / f"{stem}.png"
        assert png_depth(image) == (8, 2) and png_depth(mask) == (16, 0)
        check_pair(image, mask, stem, kvasir, {0, 65535})
    check_groups(groups_csv(out / "groups.csv"))


def test_folder_nested_layout_tiff_and_8_bit_masks(kvasir, tmp_path):
    out = tmp_path / "own"
    assert run(kvasir, out, "layout=folder-nested", "image_format=tiff", "mask_depth=8") == 0
    assert not (out / "groups.csv").exists()
    groups = {}
    for image in sorted((out / "images").glob("*/*")):
        video, stem = image.parent.name, image.stem
        assert image.suffix == ".tif" and image.read_bytes()[:4] in (b"II*\x00", b"MM\x00*")
        mask = out / "masks" / video / f"{stem}.png"
        assert png_depth(mask) == (8, 0)
        check_pair(image, mask, stem, kvasir, {0, 1})
        assert stem not in groups
        groups[stem] = video
    check_groups(groups)


def test_nnunet_layout(kvasir, tmp_path):
    out = tmp_path / "own"
    assert run(kvasir, out, "layout=nnunet", "image_format=png", "mask_depth=16") == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "polyp": 1} and meta["file_ending"] == ".png"
    assert meta["numTraining"] == N_IMAGES and len(meta["channel_names"]) == 3
    cases = sorted(p.name.removesuffix("_0000.png") for p in (out / "imagesTr").iterdir())
    assert cases == [s for s, _, _ in SOURCE[:N_IMAGES]]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.png" for c in cases]
    for case in cases:
        label = out / "labelsTr" / f"{case}.png"
        assert png_depth(label) == (8, 0)  # nnU-Net labels are 0/1 whatever mask_depth says
        check_pair(out / "imagesTr" / f"{case}_0000.png", label, case, kvasir, {0, 1})
    check_groups(groups_csv(out / "groups.csv"))


def test_gain_scales_each_channel_mean(kvasir, tmp_path):
    out, gain = tmp_path / "own", (0.8, 1.0, 1.25)
    assert run(kvasir, out, "layout=folder", f"gain={list(gain)}", "gamma=1.0") == 0
    shifted = read_image(out / "images" / "s2.png").reshape(-1, 3).mean(axis=0)
    source = read_image(kvasir / "images" / "s2.jpg").reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(shifted / source, gain, rtol=0.03)


def test_gamma_follows_the_gain(kvasir, tmp_path):
    out, gain, gamma = tmp_path / "own", np.array([0.8, 1.0, 1.25]), 0.8
    assert run(kvasir, out, "layout=folder", f"gain={gain.tolist()}", f"gamma={gamma}") == 0
    corner = read_image(out / "images" / "s3.png")[0, 0].astype(float)  # the flat background
    expected = 255 * (gain * np.array(COLOUR) / 255) ** gamma
    np.testing.assert_allclose(corner, expected, atol=4)  # JPEG's colour rounding, a few levels


def test_refuses_a_non_empty_out_dir_unless_forced(kvasir, tmp_path, capsys):
    out = tmp_path / "own"
    assert run(kvasir, out) == 0
    assert run(kvasir, out, "layout=nnunet") == 2
    assert "not empty" in capsys.readouterr().err and (out / "groups.csv").exists()
    assert run(kvasir, out, "layout=nnunet", force=True) == 0
    assert (out / "dataset.json").exists() and not (out / "images").exists()


def test_force_never_replaces_a_folder_it_did_not_write(kvasir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run(kvasir, out, force=True) == 2
    assert "not written by shift_source" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
