"""Own data sources end to end on small real files: bin/fetch_data.py's catalog and summary for every
layout (folder, folder with TIFF/16-bit/label-map/colour masks, nnU-Net v2), what it leaves out and why,
the one mask rule through validation, the preprocess cache and evaluation, data_rev, grouped splits per
source, and the per-source sampling weights of MixedBatchSampler."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml
from bin_helpers import ROOT, load_bin

from lib.evaluation import scan_split
from lib.io import read_image, read_mask
from lib.schema import describe_mask
from lib.training import MixedBatchSampler

SIDE = 64  # image side: the validator's smallest plausible side, and the preprocess size (no resampling)
BOX = (slice(12, 40), slice(20, 52))  # the polyp of every synthetic mask


# --- building sources ---------------------------------------------------------------------------


def texture(seed: int) -> np.ndarray:
    """`(SIDE, SIDE, 3) uint8` RGB, smooth and clearly different for each seed (no near-duplicates)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    fine = np.random.default_rng(seed + 10_000).integers(0, 24, (SIDE, SIDE, 3), dtype=np.uint8)
    return cv2.add(smooth, fine)


def polyp() -> np.ndarray:
    """`(SIDE, SIDE) bool`: the polyp pixels every mask encoding below stores."""
    mask = np.zeros((SIDE, SIDE), bool)
    mask[BOX] = True
    return mask


def encode_mask(encoding: str, mask: np.ndarray) -> np.ndarray:
    """The array cv2.imwrite stores for `mask` in one encoding (BGR order for colour)."""
    if encoding == "png8":  # {0, 255}
        return mask.astype(np.uint8) * 255
    if encoding == "label01":  # {0, 1} label map (nnU-Net, many exports)
        return mask.astype(np.uint8)
    if encoding == "png16":  # {0, 65535}
        return mask.astype(np.uint16) * 65535
    if encoding == "red":  # red polyp on black, written BGR: (0, 0, 255)
        bgr = np.zeros((*mask.shape, 3), np.uint8)
        bgr[mask, 2] = 255
        return bgr
    if encoding == "grey3":  # three equal channels
        return np.repeat(mask.astype(np.uint8)[..., None] * 255, 3, axis=2)
    raise ValueError(encoding)


ENCODINGS = ("png8", "label01", "png16", "red", "grey3")


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_mask(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def folder_source(
    root: Path,
    keys: list[str],
    seed: int,
    image_suffix: str = ".png",
    encoding: str = "png8",
) -> dict[str, np.ndarray]:
    """images/<key><suffix> + masks/<key>.png for each key (a key may hold a video subfolder)."""
    written = {}
    for i, key in enumerate(keys):
        rgb = texture(seed + i)
        write_image(root / "images" / f"{key}{image_suffix}", rgb)
        write_mask(root / "masks" / f"{key}.png", encode_mask(encoding, polyp()))
        written[key] = rgb
    return written


def nnunet_source(root: Path, cases: list[str], seed: int, **meta) -> None:
    """An nnU-Net v2 raw dataset: dataset.json, imagesTr/<case>_0000.png (RGB), labelsTr/<case>.png {0, 1}."""
    dataset = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "polyp": 1},
        "numTraining": len(cases),
        "file_ending": ".png",
        **meta,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(dataset))
    for i, case in enumerate(cases):
        write_image(root / "imagesTr" / f"{case}_0000.png", texture(seed + i))
        write_mask(root / "labelsTr" / f"{case}.png", encode_mask("label01", polyp()))


def write_groups(root: Path, groups: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "groups.csv").write_text("stem,group\n" + "".join(f"{s},{g}\n" for s, g in groups.items()))


# --- running the stages -------------------------------------------------------------------------


def data_conf(path: Path, sources: dict[str, dict]) -> Path:
    """A conf/data.yaml-shaped file at `path`, outputs under data/ of the working directory."""
    conf = {
        "sources": sources,
        "catalog": "data/catalog.csv",
        "summary": "data/sources.json",
        "manifest_dir": "data/manifests",
        "timeout_s": 10,
    }
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


def fetch(conf: Path, *overrides: str) -> int:
    args = ["--conf", str(conf)]
    for item in overrides:
        args += ["--set", item]
    return load_bin("fetch_data").main(args)


def catalog_rows(path: str | Path = "data/catalog.csv") -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def summary(path: str | Path = "data/sources.json") -> dict:
    return json.loads(Path(path).read_text())


def validate(report: str = "reports/validation.json") -> tuple[int, dict]:
    rc = load_bin("validate_data").main(
        [
            "--conf",
            str(ROOT / "conf/validate_data.yaml"),
            "--set",
            "catalog=data/catalog.csv",
            "--set",
            "sources_summary=data/sources.json",
            "--set",
            f"report={report}",
        ]
    )
    return rc, {r["rule"]: r for r in json.loads(Path(report).read_text())["rules"]}


def make_splits() -> tuple[int, dict[str, list[str]], dict]:
    rc = load_bin("make_splits").main(
        [
            "--conf",
            str(ROOT / "conf/make_splits.yaml"),
            "--set",
            "catalog=data/catalog.csv",
            "--set",
            "sources_summary=data/sources.json",
            "--set",
            "out_dir=data/splits",
            "--set",
            "report=reports/splits.json",
        ]
    )
    splits = {
        name: [row["stem"] for row in catalog_rows(f"data/splits/{name}.csv")]
        for name in ("train", "val", "test", "external")
    }
    return rc, splits, summary("reports/splits.json")


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """tmp_path as the working directory, so reports and data/ outputs land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- 1. every layout through fetch_data ---------------------------------------------------------


def test_tiff_images_with_16_bit_masks(work):
    written = folder_source(
        work / "own/tiff", ["f0", "f1", "f2"], seed=1, image_suffix=".tif", encoding="png16"
    )
    conf = data_conf(work / "data.yaml", {"tiff": {"kind": "folder", "path": "own/tiff"}})

    assert fetch(conf) == 0

    rows = catalog_rows()
    assert [r["stem"] for r in rows] == ["tiff-f0", "tiff-f1", "tiff-f2"]
    for row, (key, rgb) in zip(rows, written.items()):
        assert row == {
            "stem": f"tiff-{key}",
            "source": "tiff",
            "role": "train",
            "group": "",
            "image": f"own/tiff/images/{key}.tif",
            "mask": f"own/tiff/masks/{key}.png",
        }
        assert np.array_equal(read_image(row["image"]), rgb)  # TIFF is lossless, RGB order kept
        assert cv2.imread(row["mask"], cv2.IMREAD_UNCHANGED).dtype == np.uint16
        assert np.array_equal(read_mask(row["mask"]), polyp())
    source = summary()["sources"]["tiff"]
    assert source["n_pairs"] == 3 and source["skipped"] == [] and source["kind"] == "folder"
    assert source["grouping"] == "near-duplicate similarity"
    manifest = Path(source["manifest"]).read_text().splitlines()
    assert len(manifest) == 6 and manifest[0].endswith("  images/f0.tif")


def test_png_images_with_label_map_masks_and_colour_masks(work):
    folder_source(work / "own/labels", ["a", "b"], seed=10, encoding="label01")
    folder_source(work / "own/red", ["a", "b"], seed=20, encoding="red")
    folder_source(work / "own/grey3", ["a", "b"], seed=30, encoding="grey3")
    sources = {name: {"kind": "folder", "path": f"own/{name}"} for name in ("labels", "red", "grey3")}
    conf = data_conf(work / "data.yaml", sources)

    assert fetch(conf) == 0

    rows = catalog_rows()
    # Stems carry their source's prefix, so the same file names in three sources stay three pairs each.
    assert [r["stem"] for r in rows] == ["grey3-a", "grey3-b", "labels-a", "labels-b", "red-a", "red-b"]
    assert {r["source"] for r in rows} == set(sources)
    for row in rows:
        mask = read_mask(row["mask"])
        assert mask.any(), f"{row['mask']} reads as empty"
        assert np.array_equal(mask, polyp())


def test_nnunet_v2_dataset(work):
    nnunet_source(work / "own/Dataset501_Polyp", ["case_000", "case_001", "case_002"], seed=40)
    conf = data_conf(work / "data.yaml", {"nn": {"kind": "nnunet", "path": "own/Dataset501_Polyp"}})

    assert fetch(conf) == 0

    rows = catalog_rows()
    assert [r["stem"] for r in rows] == ["nn-case_000", "nn-case_001", "nn-case_002"]
    assert rows[0]["image"] == "own/Dataset501_Polyp/imagesTr/case_000_0000.png"
    assert rows[0]["mask"] == "own/Dataset501_Polyp/labelsTr/case_000.png"
    assert all(np.array_equal(read_mask(r["mask"]), polyp()) for r in rows)
    assert summary()["sources"]["nn"]["n_pairs"] == 3


def test_same_file_names_in_two_sources_get_unique_stems(work):
    folder_source(work / "own/a", ["f0", "f1"], seed=50)
    nnunet_source(work / "own/b", ["f0", "f1"], seed=60)
    sources = {"a": {"kind": "folder", "path": "own/a"}, "b": {"kind": "nnunet", "path": "own/b"}}
    conf = data_conf(work / "data.yaml", sources)

    assert fetch(conf) == 0
    stems = [r["stem"] for r in catalog_rows()]
    assert stems == ["a-f0", "a-f1", "b-f0", "b-f1"] and len(set(stems)) == 4


def test_same_stems_without_prefixes_are_refused(work, capsys):
    folder_source(work / "own/a", ["f0"], seed=70)
    folder_source(work / "own/b", ["f0"], seed=71)
    sources = {
        "a": {"kind": "folder", "path": "own/a", "prefix": ""},
        "b": {"kind": "folder", "path": "own/b", "prefix": ""},
    }
    assert fetch(data_conf(work / "data.yaml", sources)) == 1
    assert "stem f0 is in sources a and b" in capsys.readouterr().err
    assert not (work / "data/catalog.csv").exists()


@pytest.mark.parametrize(
    "meta, complaint",
    [
        ({"file_ending": ".nii.gz"}, "file_ending '.nii.gz'"),
        ({"labels": {"background": 0, "polyp": 1, "adenoma": 2}}, "one foreground class"),
    ],
    ids=["nifti", "two-foreground-labels"],
)
def test_nnunet_dataset_json_that_cannot_be_read_is_refused(work, capsys, meta, complaint):
    root = work / "own/Dataset502_Polyp"
    nnunet_source(root, ["case_000"], seed=80, **meta)
    conf = data_conf(work / "data.yaml", {"nn": {"kind": "nnunet", "path": "own/Dataset502_Polyp"}})

    assert fetch(conf) == 1

    err = capsys.readouterr().err
    assert "own/Dataset502_Polyp/dataset.json" in err and complaint in err
    assert not (work / "data/catalog.csv").exists()


# --- 2. what is left out, and why -----------------------------------------------------------------


def test_unusable_files_are_left_out_listed_and_reported_by_validation(work, capsys):
    root = work / "own/clinic"
    folder_source(root, ["f0", "f1", "f2", "f3", "ungrouped"], seed=100)
    write_image(root / "images/lonely.png", texture(110))  # an image without its mask
    write_mask(root / "masks/orphan.png", encode_mask("png8", polyp()))  # a mask without its image
    (root / "images/notes.txt").write_text("scanned on the old endoscope\n")  # not an image
    write_image(root / "images/dup.png", texture(111))  # one stem, two images
    write_image(root / "images/dup.jpg", texture(112))
    write_mask(root / "masks/dup.png", encode_mask("png8", polyp()))
    write_groups(root, {"f0": "v1", "f1": "v1", "f2": "v2", "f3": "v2", "lonely": "v3", "dup": "v3"})
    conf = data_conf(work / "data.yaml", {"clinic": {"kind": "folder", "path": "own/clinic"}})

    assert fetch(conf) == 0

    assert [r["stem"] for r in catalog_rows()] == ["clinic-f0", "clinic-f1", "clinic-f2", "clinic-f3"]
    source = summary()["sources"]["clinic"]
    assert source["n_pairs"] == 4 and source["grouping"] == "metadata (groups.csv)"
    skipped = {s["path"]: s["reason"] for s in source["skipped"]}
    assert skipped == {
        "images/notes.txt": "not an image file (.txt)",
        "images/dup.jpg": "stem appears twice (dup.jpg, dup.png)",
        "images/dup.png": "stem appears twice (dup.jpg, dup.png)",
        "images/lonely.png": "no mask",
        "masks/dup.png": "no image",
        "masks/orphan.png": "no image",
        "ungrouped": "not in groups.csv",
    }
    assert "left out images/lonely.png: no mask" in capsys.readouterr().err

    rc, rules = validate()

    assert rc == 0  # what the scan left out is a warning: the catalog's pairs are all usable
    pairing = rules["pairing"]
    assert pairing["status"] == "fail" and pairing["severity"] == "warning"
    assert sorted(pairing["offending"]) == sorted(f"clinic: {p} ({r})" for p, r in skipped.items())
    assert all(r["status"] == "pass" for name, r in rules.items() if name != "pairing")

    truncated = work / "own/clinic/images/f2.png"
    truncated.write_bytes(truncated.read_bytes()[:300])

    rc, rules = validate("reports/validation-2.json")

    assert rc == 1
    decodable = rules["decodable"]
    assert decodable["status"] == "fail" and decodable["severity"] == "critical"
    assert decodable["offending"] == ["images/clinic-f2.png (truncated image data (no end marker))"]
    assert "clinic-f2.png" in capsys.readouterr().err
    assert summary("reports/validation-2.json")["passed"] is False


def test_unpaired_file_in_a_video_subfolder_is_named_by_its_path(work):
    root = work / "own/videos"
    folder_source(root, ["v1/f0", "v1/f1", "v2/f0", "v2/f1"], seed=120)
    (root / "masks/v2/f1.png").unlink()  # images/v1/f1.png is paired, images/v2/f1.png is not
    (root / "images/v1/f0.png").unlink()
    conf = data_conf(work / "data.yaml", {"videos": {"kind": "folder", "path": "own/videos"}})

    assert fetch(conf) == 0

    assert [r["stem"] for r in catalog_rows()] == ["videos-v1__f1", "videos-v2__f0"]
    skipped = summary()["sources"]["videos"]["skipped"]
    assert skipped == [
        {"path": "images/v2/f1.png", "reason": "no mask"},
        {"path": "masks/v1/f0.png", "reason": "no image"},
    ]


# --- 3. one mask rule for every stage --------------------------------------------------------------


def test_every_stage_reads_every_mask_encoding_alike(work):
    root = work / "own/masks"
    for i, encoding in enumerate(ENCODINGS):
        folder_source(root, [encoding], seed=200 + i, encoding=encoding)
    nnunet_source(work / "own/nn", ["case_000"], seed=210)
    sources = {"enc": {"kind": "folder", "path": "own/masks"}, "nn": {"kind": "nnunet", "path": "own/nn"}}
    assert fetch(data_conf(work / "data.yaml", sources)) == 0
    rows = {r["stem"]: r for r in catalog_rows()}
    assert sorted(rows) == sorted([f"enc-{e}" for e in ENCODINGS] + ["nn-case_000"])
    expected = polyp()

    # lib/io.read_mask: the one reading
    for stem, row in rows.items():
        assert np.array_equal(read_mask(row["mask"]), expected), stem

    # the validator's record
    for stem, row in rows.items():
        record = describe_mask(stem + ".png", Path(row["mask"]).read_bytes())
        assert record.error is None and record.foreground == pytest.approx(expected.mean()), stem

    # the preprocess cache, at the files' own size (no resampling)
    rc = load_bin("preprocess").main(
        ["--conf", str(ROOT / "conf/preprocess.yaml"), "--set", "catalog=data/catalog.csv"]
        + ["--set", "out_dir=data/processed", "--set", f"size={SIDE}"]
    )
    assert rc == 0
    order = [r["stem"] for r in catalog_rows("data/processed/index.csv")]
    cached = np.load("data/processed/masks.npy")
    assert sorted(order) == sorted(rows) and cached.shape == (len(rows), SIDE, SIDE)
    for stem, cache in zip(order, cached):
        assert np.array_equal(cache, expected), stem

    # evaluation's ground truth: a prediction of exactly the polyp scores no false positive or negative
    cfg = SimpleNamespace(pr_bins=10, calibration_bins=5, seed=0)
    images = {s: Path(r["image"]) for s, r in rows.items()}
    masks = {s: Path(r["mask"]) for s, r in rows.items()}
    for stem in rows:
        scan = scan_split(
            "t", [stem], images, masks, lambda rgb: expected.astype(np.float32), ((0.5,), (0.0,)), cfg, None
        )
        tp, fp, fn, _ = scan.counts[0][0]
        assert (tp, fp, fn) == (expected.sum(), 0, 0), stem

    # validation agrees: 16-bit, {0,1} and red-on-black masks all pass, none reads as empty
    rc, rules = validate()
    assert rules["foreground_fraction"]["status"] == "pass"  # the {0,1} masks are not empty
    assert rc == 0
    assert [name for name, r in rules.items() if r["status"] == "fail"] == []


# --- 4. data_rev ------------------------------------------------------------------------------------


def test_data_rev_follows_sources_and_bytes(work, tmp_path_factory):
    folder_source(work / "own/a", ["f0", "f1"], seed=300)
    folder_source(work / "own/b", ["f0", "f1"], seed=310)
    one = data_conf(work / "one.yaml", {"a": {"kind": "folder", "path": "own/a"}})
    two = data_conf(
        work / "two.yaml",
        {"a": {"kind": "folder", "path": "own/a"}, "b": {"kind": "folder", "path": "own/b"}},
    )

    assert fetch(one) == 0
    rev_one = summary()["data_rev"]
    assert fetch(two) == 0
    first = summary()
    assert first["data_rev"] != rev_one
    assert first["sources"]["a"]["manifest_sha256"] != first["sources"]["b"]["manifest_sha256"]
    manifest_b = Path("data/manifests/b.SHA256SUMS").read_text()

    changed = work / "own/b/masks/f1.png"
    original = changed.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    changed.write_bytes(bytes(data))
    assert fetch(two) == 0
    second = summary()
    assert second["data_rev"] != first["data_rev"]
    assert second["sources"]["a"]["manifest_sha256"] == first["sources"]["a"]["manifest_sha256"]
    assert second["sources"]["b"]["manifest_sha256"] != first["sources"]["b"]["manifest_sha256"]
    diff = set(Path("data/manifests/b.SHA256SUMS").read_text().splitlines()) ^ set(manifest_b.splitlines())
    assert len(diff) == 2 and all(line.endswith("  masks/f1.png") for line in diff)

    changed.write_bytes(original)
    assert fetch(two) == 0
    assert summary()["data_rev"] == first["data_rev"]

    # The same sources under the same names, elsewhere on disk: the same revision.
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    folder_source(elsewhere / "a", ["f0", "f1"], seed=300)
    folder_source(elsewhere / "b", ["f0", "f1"], seed=310)
    assert fetch(two, f"sources.a.path={elsewhere / 'a'}", f"sources.b.path={elsewhere / 'b'}") == 0
    assert summary()["data_rev"] == first["data_rev"]


# --- 5. splits -----------------------------------------------------------------------------------------


def groups_of(stems: list[str], label) -> dict[str, set[str]]:
    """{group label: stems} of `stems`, `label(stem)` giving each stem's group."""
    out: dict[str, set[str]] = {}
    for s in stems:
        out.setdefault(label(s), set()).add(s)
    return out


def assert_groups_whole(splits: dict[str, list[str]], label) -> None:
    where: dict[str, set[str]] = {}
    for name in ("train", "val", "test"):
        for s in splits[name]:
            where.setdefault(label(s), set()).add(name)
    crossing = {g: sorted(n) for g, n in where.items() if len(n) > 1}
    assert crossing == {}, f"groups in more than one split: {crossing}"


@pytest.mark.parametrize("layout", ["groups.csv", "one subfolder per video"])
def test_no_group_crosses_splits(work, layout):
    root = work / "own/clinic"
    if layout == "groups.csv":
        keys = [f"f{i:02d}" for i in range(40)]
        labels = {k: f"video{i % 8}" for i, k in enumerate(keys)}  # interleaved: stem order says nothing
        write_groups(root, labels)

        def label(stem: str) -> str:
            return labels[stem.removeprefix("clinic-")]

        grouping = "metadata (groups.csv)"
    else:
        keys = [f"video{v}/frame{f}" for v in range(8) for f in range(5)]

        def label(stem: str) -> str:
            return stem.removeprefix("clinic-").split("__")[0]

        grouping = "metadata (one subfolder per video or patient)"
    folder_source(root, keys, seed=400)
    assert fetch(data_conf(work / "data.yaml", {"clinic": {"kind": "folder", "path": "own/clinic"}})) == 0
    assert {r["group"] for r in catalog_rows()} == {f"clinic:video{v}" for v in range(8)}

    rc, splits, report = make_splits()

    assert rc == 0
    stems = splits["train"] + splits["val"] + splits["test"]
    assert sorted(stems) == sorted(r["stem"] for r in catalog_rows()) and len(stems) == 40
    assert splits["external"] == []
    assert_groups_whole(splits, label)
    assert all(splits[n] for n in ("train", "val", "test"))
    assert report["sources"]["clinic"]["grouping"] == grouping
    assert report["sources"]["clinic"]["n_groups"] == 8
    assert "warning" not in report["sources"]["clinic"]


def test_each_source_split_on_its_own_and_external_kept_out(work, capsys):
    folder_source(work / "own/plain", [f"f{i:02d}" for i in range(20)], seed=500)
    folder_source(work / "own/other", [f"f{i:02d}" for i in range(20)], seed=600)
    write_groups(work / "own/other", {f"f{i:02d}": f"g{i}" for i in range(20)})
    nnunet_source(work / "own/ext", [f"case_{i:03d}" for i in range(6)], seed=700)
    sources = {
        "plain": {"kind": "folder", "path": "own/plain"},
        "other": {"kind": "folder", "path": "own/other"},
        "ext": {"kind": "nnunet", "path": "own/ext", "role": "external"},
    }
    assert fetch(data_conf(work / "data.yaml", sources)) == 0

    rc, splits, report = make_splits()

    assert rc == 0
    assert splits["external"] == [f"ext-case_{i:03d}" for i in range(6)]
    assert not any(s.startswith("ext-") for n in ("train", "val", "test") for s in splits[n])
    assert report["n_external"] == 6 and "ext" not in report["sources"]
    for source in ("plain", "other"):
        counts = {n: sum(s.startswith(f"{source}-") for s in splits[n]) for n in ("train", "val", "test")}
        assert counts == {"train": 14, "val": 3, "test": 3}, source
        assert report["sources"][source]["splits"] == counts
    assert report["sources"]["plain"]["grouping"] == "near-duplicate similarity"
    assert report["sources"]["plain"]["warning"] == load_bin("make_splits").SIMILARITY_WARNING
    assert report["sources"]["other"]["grouping"] == "metadata (groups.csv)"
    assert "warning" not in report["sources"]["other"]
    assert "warning: plain: grouped by image similarity only" in capsys.readouterr().err


# --- 6. per-source sampling weights -----------------------------------------------------------------------


def epoch(sampler: MixedBatchSampler, e: int) -> list[list[int]]:
    sampler.set_epoch(e)
    return list(sampler)


def test_weights_of_one_give_the_old_batches_exactly():
    for e in (1, 2, 3):
        old = MixedBatchSampler(50, 7, 8, 2, seed=5)
        new = MixedBatchSampler(50, 7, 8, 2, seed=5, blocks=((20, 1.0), (30, 1.0)))
        assert epoch(new, e) == epoch(old, e)
        assert len(new) == len(old)


def test_weight_half_draws_a_fresh_half_and_weight_two_draws_twice():
    # positives 0..9 (weight 1), 10..29 (weight 0.5), 30..35 (weight 2); 2 negatives per batch
    sampler = MixedBatchSampler(36, 4, 6, 2, seed=1, drop_last=False, blocks=((10, 1.0), (20, 0.5), (6, 2.0)))
    assert sampler.n_draws == 10 + 10 + 12
    assert len(sampler) == 8  # 32 draws, 4 positives per batch

    halves = []
    for e in (1, 2):
        batches = epoch(sampler, e)
        assert len(batches) == len(sampler)
        positives = [i for b in batches for i in b if i < 36]
        assert all(sum(i >= 36 for i in b) == 2 for b in batches)
        counts = np.bincount(positives, minlength=36)
        assert (counts[:10] == 1).all()
        assert sorted(counts[10:30].tolist()) == [0] * 10 + [1] * 10
        assert (counts[30:] == 2).all()
        halves.append(set(np.flatnonzero(counts[10:30]).tolist()))
    assert halves[0] != halves[1]  # a different random half each epoch


def test_dropped_last_batch_and_block_checks():
    sampler = MixedBatchSampler(30, 0, 4, 0, seed=0, blocks=((10, 2.0), (20, 0.25)))
    assert sampler.n_draws == 25 and len(sampler) == 6  # 6 full batches of 4, one draw dropped
    batches = epoch(sampler, 1)
    assert len(batches) == 6 and all(len(b) == 4 for b in batches)
    with pytest.raises(ValueError, match="must cover"):
        MixedBatchSampler(30, 0, 4, 0, seed=0, blocks=((10, 1.0), (10, 1.0)))
    with pytest.raises(ValueError, match="weights >= 0"):
        MixedBatchSampler(30, 0, 4, 0, seed=0, blocks=((10, 1.0), (20, -1.0)))
