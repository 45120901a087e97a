"""Manifest verification and atomic extraction of the dataset."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from lib.fetch import ManifestError, fetch_dataset, read_manifest, resolve_source, verify_tree


def make_release(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A tiny dataset zip in the Kvasir-SEG layout and its manifest."""
    files = {"Kvasir-SEG/images/a.jpg": b"image-a", "Kvasir-SEG/masks/a.jpg": b"mask-a"}
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return archive, {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_read_manifest_parses_sha256sum_lines(tmp_path):
    path = tmp_path / "SUMS"
    path.write_text(f"{'a' * 64}  Kvasir-SEG/images/x.jpg\n\n{'b' * 64}  Kvasir-SEG/masks/x.jpg\n")
    assert read_manifest(path) == {"Kvasir-SEG/images/x.jpg": "a" * 64, "Kvasir-SEG/masks/x.jpg": "b" * 64}


def test_malformed_manifest_line_is_rejected(tmp_path):
    path = tmp_path / "SUMS"
    path.write_text("not-a-hash file\n")
    with pytest.raises(ValueError, match="SUMS:1"):
        read_manifest(path)


def test_good_zip_is_extracted_and_verified(tmp_path):
    archive, manifest = make_release(tmp_path)
    out = tmp_path / "raw"
    assert fetch_dataset(str(archive), out, manifest) == "fetched and verified"
    assert (out / "Kvasir-SEG/images/a.jpg").read_bytes() == b"image-a"
    assert fetch_dataset(str(archive), out, manifest) == "present and verified"


def test_tampered_file_stops_and_leaves_nothing_behind(tmp_path):
    archive, manifest = make_release(tmp_path)
    manifest["Kvasir-SEG/masks/a.jpg"] = "0" * 64
    out = tmp_path / "raw"
    with pytest.raises(ManifestError, match="sha256 differs: Kvasir-SEG/masks/a.jpg"):
        fetch_dataset(str(archive), out, manifest)
    assert not (out / "Kvasir-SEG").exists()
    assert list(out.iterdir()) == []  # no half-written staging folder either


def test_missing_and_extra_files_are_named(tmp_path):
    _, manifest = make_release(tmp_path)
    root = tmp_path / "tree"
    (root / "Kvasir-SEG/images").mkdir(parents=True)
    (root / "Kvasir-SEG/images/a.jpg").write_bytes(b"image-a")
    (root / "Kvasir-SEG/images/extra.jpg").write_bytes(b"?")
    problems = {(p.path, p.problem) for p in verify_tree(root, manifest)}
    assert problems == {
        ("Kvasir-SEG/masks/a.jpg", "missing"),
        ("Kvasir-SEG/images/extra.jpg", "not in manifest"),
    }


def test_corrupted_existing_copy_is_reported_not_deleted(tmp_path):
    archive, manifest = make_release(tmp_path)
    out = tmp_path / "raw"
    fetch_dataset(str(archive), out, manifest)
    (out / "Kvasir-SEG/images/a.jpg").write_bytes(b"changed")
    with pytest.raises(ManifestError, match="exists but does not match"):
        fetch_dataset(str(archive), out, manifest)
    assert (out / "Kvasir-SEG/images/a.jpg").read_bytes() == b"changed"


def test_extracted_folder_is_a_valid_source(tmp_path):
    archive, manifest = make_release(tmp_path)
    first = tmp_path / "first"
    fetch_dataset(str(archive), first, manifest)
    second = tmp_path / "second"
    assert fetch_dataset(str(first), second, manifest) == "fetched and verified"


def test_zip_with_path_traversal_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../outside.txt", b"x")
    with pytest.raises(ValueError, match="unsafe path"):
        fetch_dataset(str(archive), tmp_path / "raw", {"Kvasir-SEG/x": "0" * 64})


def test_source_precedence(tmp_path):
    local = tmp_path / "local.zip"
    assert resolve_source("https://x", str(local), {}) == ("https://x", "config")
    local.write_bytes(b"")
    assert resolve_source("https://x", str(local), {}) == (str(local), "local copy")
    assert resolve_source("https://x", str(local), {"KVASIR_SEG_SOURCE": "/d"}) == ("/d", "KVASIR_SEG_SOURCE")


def test_committed_manifest_lists_the_whole_dataset():
    manifest = read_manifest(Path(__file__).resolve().parents[1] / "data" / "kvasir-seg.SHA256SUMS")
    assert sum(n.startswith("Kvasir-SEG/images/") for n in manifest) == 1000
    assert sum(n.startswith("Kvasir-SEG/masks/") for n in manifest) == 1000
