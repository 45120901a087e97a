"""Data sources: the folders conf/data.yaml lists, paired image by mask, hashed, and one catalog of them.

Kinds: `kvasir-seg` (the public dataset, fetched and verified by lib/fetch.py), `folder` (`images/` and
`masks/` paired by file stem, optionally one subfolder per video or patient, or a `groups.csv`), and
`nnunet` (an nnU-Net v2 raw dataset: `dataset.json`, `imagesTr/<case>_0000<ending>`,
`labelsTr/<case><ending>`). Every later stage reads the catalog (`stem, source, role, group, image, mask`)
and never looks for files by name itself, so a stem means the same pair everywhere. Stems carry their
source's prefix (`<name>-` unless the config says otherwise), so they stay unique across sources.
Files that cannot be used (unpaired, not an image, a stem twice, not in groups.csv) are listed with
their reason, never dropped silently; whether a listed file can be decoded is lib/schema.py's check.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from lib.io import IMAGE_SUFFIXES, sha256_file

CATALOG_FIELDS = ("stem", "source", "role", "group", "image", "mask")
GROUPS_FILE = "groups.csv"  # optional: `stem,group` (stem as in images/, without suffix)
NNUNET_CHANNEL = "_0000"  # nnU-Net v2's suffix of an image's first (here: only) channel file


@dataclass(frozen=True)
class SourceConfig:
    """One entry of conf/data.yaml `sources`. Only `kind` and `path` are always needed."""

    kind: Literal["kvasir-seg", "folder", "nnunet"]
    path: str  # the dataset root (kvasir-seg: where bin/fetch_data.py extracts it)
    role: Literal["train", "external"] = "train"  # external: evaluated only, never trained on
    weight: float = 1.0  # training draws of each of its images per epoch, relative to 1 (0.5: a random half)
    prefix: str | None = None  # stem prefix; None = "<name>-" (Kvasir's "" keeps its committed splits)
    url: str | None = None  # kvasir-seg: where to download the zip
    local_copy: str | None = None  # kvasir-seg: a zip used instead of the URL when it exists
    manifest: str | None = None  # kvasir-seg: committed per-file sha256 (paths relative to path's parent)


@dataclass(frozen=True)
class DataConfig:
    """conf/data.yaml: the sources and where the catalog and the source summary go."""

    sources: dict[str, SourceConfig]  # name -> source, in order
    catalog: str  # data/catalog.csv
    summary: str  # data/sources.json: per-source counts, manifest digest, skipped files, data_rev
    manifest_dir: str  # per-file sha256 of each local source: <manifest_dir>/<name>.SHA256SUMS
    timeout_s: float  # kvasir-seg download timeout
    dvc_stage: bool = True  # read by the DVC stage: say which sources `dvc status` cannot watch


@dataclass(frozen=True)
class Entry:
    stem: str
    source: str
    role: str
    group: str  # "" when the source has no group metadata; else "<source>:<group>"
    image: str
    mask: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def stem_prefix(name: str, source: SourceConfig) -> str:
    return f"{name}-" if source.prefix is None else source.prefix


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _keyed(folder: Path, strip: str = "") -> tuple[dict[str, Path], list[Skipped]]:
    """{key: path} of the image files under `folder` (key: relative path without suffix, less `strip`)."""
    found: dict[str, list[Path]] = {}
    skipped = []
    for path in _files(folder):
        rel = path.relative_to(folder)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(
                Skipped(
                    f"{folder.name}/{rel.as_posix()}", f"not an image file ({path.suffix or 'no suffix'})"
                )
            )
            continue
        key = rel.with_suffix("").as_posix()
        if strip:
            if not key.endswith(strip):
                skipped.append(Skipped(f"{folder.name}/{rel.as_posix()}", f"name does not end in {strip}"))
                continue
            key = key[: -len(strip)]
        found.setdefault(key, []).append(path)
    keyed = {}
    for key, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            skipped += [
                Skipped(f"{folder.name}/{p.relative_to(folder).as_posix()}", f"stem appears twice ({names})")
                for p in paths
            ]
        else:
            keyed[key] = paths[0]
    return keyed, skipped


def _pair(
    images: dict[str, Path], masks: dict[str, Path], image_dir: str, mask_dir: str
) -> tuple[list[str], list[Skipped]]:
    def where(folder: str, key: str, path: Path) -> str:  # keep a video subfolder: images/<video>/<frame>
        return f"{folder}/{(Path(key).parent / path.name).as_posix()}"

    skipped = [Skipped(where(image_dir, k, images[k]), "no mask") for k in sorted(set(images) - set(masks))]
    skipped += [Skipped(where(mask_dir, k, masks[k]), "no image") for k in sorted(set(masks) - set(images))]
    return sorted(set(images) & set(masks)), skipped


def read_groups(path: Path) -> dict[str, str]:
    """`stem,group` CSV -> {stem: group}; ValueError naming the file for another header."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:2]] != ["stem", "group"]:
        raise ValueError(f"{path}: expected a CSV with the header 'stem,group'")
    return {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2 and r[0].strip()}


def _groups_for(root: Path, keys: list[str]) -> tuple[dict[str, str], str, list[Skipped]]:
    """Group of each key, the grouping's name, and keys left out for having no group."""
    table = root / GROUPS_FILE
    if table.is_file():
        groups = read_groups(table)
        missing = [k for k in keys if k not in groups and k.rsplit("/", 1)[-1] not in groups]
        known = {k: groups.get(k, groups.get(k.rsplit("/", 1)[-1], "")) for k in keys if k not in missing}
        return known, f"metadata ({GROUPS_FILE})", [Skipped(k, f"not in {GROUPS_FILE}") for k in missing]
    if keys and all("/" in k for k in keys):
        return {k: k.split("/", 1)[0] for k in keys}, "metadata (one subfolder per video or patient)", []
    return {k: "" for k in keys}, "near-duplicate similarity", []


def scan_source(name: str, source: SourceConfig) -> tuple[list[Entry], list[Skipped], str]:
    """(catalog entries, skipped files, grouping) of one source; FileNotFoundError/ValueError if unusable."""
    root = Path(source.path)
    if not root.is_dir():
        raise FileNotFoundError(f"source {name}: {root} is not a folder")
    if source.kind == "nnunet":
        ending = nnunet_file_ending(root)
        images, skipped = _keyed(root / "imagesTr", NNUNET_CHANNEL)
        masks, more = _keyed(root / "labelsTr")
        extra = sorted(p for p in (root / "imagesTr").glob(f"*_0001{ending}"))
        if extra:
            raise ValueError(
                f"source {name}: {extra[0].name}: one file per channel is not supported; "
                f"store each frame as one RGB {ending} file (<case>_0000{ending}), "
                "as nnU-Net's NaturalImage2DIO does"
            )
        keys, unpaired = _pair(images, masks, "imagesTr", "labelsTr")
    else:
        for sub in ("images", "masks"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"source {name}: {root} must hold images/ and masks/; missing {sub}/")
        images, skipped = _keyed(root / "images")
        masks, more = _keyed(root / "masks")
        keys, unpaired = _pair(images, masks, "images", "masks")
    groups, grouping, ungrouped = _groups_for(root, keys)
    prefix = stem_prefix(name, source)
    entries = [
        Entry(
            stem=prefix + k.replace("/", "__"),
            source=name,
            role=source.role,
            group=f"{name}:{groups[k]}" if groups[k] else "",
            image=str(images[k]),
            mask=str(masks[k]),
        )
        for k in keys
        if k in groups
    ]
    return entries, skipped + more + unpaired + ungrouped, grouping


def nnunet_file_ending(root: Path) -> str:
    """The image file ending of an nnU-Net v2 raw dataset, after checking its dataset.json."""
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} is not an nnU-Net v2 raw dataset: no dataset.json") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    ending = str(meta.get("file_ending", ""))
    if ending.lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path}: file_ending {ending!r}: only 2D image files are read ({', '.join(IMAGE_SUFFIXES)})"
        )
    labels = {int(v) if not isinstance(v, list) else -1 for v in dict(meta.get("labels", {})).values()}
    if labels != {0, 1}:
        raise ValueError(
            f"{path}: labels must be background 0 and one foreground class 1, got {meta.get('labels')}"
        )
    return ending


def detect_kind(root: str | Path) -> str:
    """`nnunet` when `root` has a dataset.json, else `folder` (for `--data DIR` style commands)."""
    return "nnunet" if (Path(root) / "dataset.json").is_file() else "folder"


def manifest_lines(root: Path) -> str:
    """`sha256sum` text of every file under `root`, paths relative to it."""
    return "".join(f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n" for p in _files(root))


def check_unique(entries: list[Entry]) -> None:
    seen: dict[str, str] = {}
    for e in entries:
        if e.stem in seen:
            raise ValueError(f"stem {e.stem} is in sources {seen[e.stem]} and {e.source}: give one a prefix")
        seen[e.stem] = e.source


def data_rev(digests: dict[str, str]) -> str:
    """One revision for the data used: a hash of each source's name and manifest digest, in order."""
    text = "".join(f"{name}:{digest}\n" for name, digest in digests.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_revision(root: str | Path) -> str:
    """`data_rev` of one folder given on a command line: its name and every file's sha256."""
    root = Path(root)
    digest = hashlib.sha256(manifest_lines(root).encode()).hexdigest()
    return data_rev({root.resolve().name: digest})


def catalog_text(entries: list[Entry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CATALOG_FIELDS)
    for e in sorted(entries, key=lambda e: e.stem):
        writer.writerow([getattr(e, f) for f in CATALOG_FIELDS])
    return out.getvalue()


@dataclass(frozen=True)
class Catalog:
    entries: dict[str, Entry]  # stem -> entry, sorted by stem

    @cached_property  # built once: stages index it per stem
    def images(self) -> dict[str, Path]:
        return {s: Path(e.image) for s, e in self.entries.items()}

    @cached_property
    def masks(self) -> dict[str, Path]:
        return {s: Path(e.mask) for s, e in self.entries.items()}

    def sources(self) -> list[str]:
        return list(dict.fromkeys(e.source for e in self.entries.values()))

    def select(self, role: str | None = None, source: str | None = None) -> list[str]:
        return [
            s
            for s, e in self.entries.items()
            if (role is None or e.role == role) and (source is None or e.source == source)
        ]


def private_stems(catalog: Catalog, summary: str | Path) -> set[str]:
    """Stems of sources other than the public Kvasir-SEG: their pictures are logged nowhere unless asked."""
    kinds = {name: s["kind"] for name, s in json.loads(Path(summary).read_text())["sources"].items()}
    return {stem for stem, e in catalog.entries.items() if kinds.get(e.source) != "kvasir-seg"}


def read_catalog(path: str | Path) -> Catalog:
    """The catalog written by bin/fetch_data.py; FileNotFoundError naming the stage that writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run bin/fetch_data.py (make data) first")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != CATALOG_FIELDS:
            raise ValueError(f"{path}: expected the columns {','.join(CATALOG_FIELDS)}")
        entries = {row["stem"]: Entry(**row) for row in reader}
    return Catalog(dict(sorted(entries.items())))


def folder_catalog(root: str | Path, name: str | None = None) -> tuple[Catalog, list[Skipped], str]:
    """A catalog of one folder or nnU-Net dataset given on a command line (`--data DIR`), unprefixed."""
    root = Path(root)
    name = name or root.resolve().name
    source = SourceConfig(kind=detect_kind(root), path=str(root), prefix="")
    entries, skipped, grouping = scan_source(name, source)
    return Catalog({e.stem: e for e in sorted(entries, key=lambda e: e.stem)}), skipped, grouping
