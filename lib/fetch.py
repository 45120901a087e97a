"""Getting Kvasir-SEG: pick the source, download or copy it, verify every file, extract atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lib.io import sha256_file


class ManifestError(RuntimeError):
    """Files that are missing or whose sha256 differs from the manifest."""


@dataclass(frozen=True)
class Mismatch:
    path: str
    problem: str  # "missing", "sha256 differs" or "not in manifest"


def read_manifest(path: str | Path) -> dict[str, str]:
    """`sha256sum` format -> {relative path: sha256}."""
    entries = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise ValueError(f"{path}:{n}: not a sha256sum line: {line!r}")
        entries[name.lstrip("*")] = digest
    return entries


def verify_tree(root: str | Path, manifest: dict[str, str]) -> list[Mismatch]:
    """Compare files under `root` with the manifest; empty list means every file matches."""
    root = Path(root)
    problems = []
    for name, digest in sorted(manifest.items()):
        path = root / name
        if not path.is_file():
            problems.append(Mismatch(name, "missing"))
        elif sha256_file(path) != digest:
            problems.append(Mismatch(name, "sha256 differs"))
    top_dirs = {Path(name).parts[0] for name in manifest}
    for top in top_dirs:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in manifest:
                problems.append(Mismatch(rel, "not in manifest"))
    return problems


def describe(problems: list[Mismatch], limit: int = 20) -> str:
    lines = [f"  {p.problem}: {p.path}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def resolve_source(configured: str, local_copy: str | None, env: dict[str, str]) -> tuple[str, str]:
    """Pick the data source: KVASIR_SEG_SOURCE, else an existing local copy, else the configured one.

    Returns (source, why) so the caller can say where the data came from.
    """
    if env.get("KVASIR_SEG_SOURCE"):
        return env["KVASIR_SEG_SOURCE"], "KVASIR_SEG_SOURCE"
    if local_copy and Path(local_copy).exists():
        return local_copy, "local copy"
    return configured, "config"


def materialise_source(source: str, workdir: Path, timeout_s: float) -> Path:
    """Return a local zip or folder for `source`, downloading a URL into `workdir`."""
    if source.startswith(("http://", "https://")):
        target = workdir / "download.zip"
        print(f"fetch_data: downloading {source}", flush=True)
        with urllib.request.urlopen(source, timeout=timeout_s) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if total:
                    print(f"\rfetch_data: {done / 1e6:.1f}/{total / 1e6:.1f} MB", end="", flush=True)
            print(flush=True)
        return target
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source {source} does not exist")
    return path


def stage_copy(source: Path, staging: Path, top: str) -> Path:
    """Unpack (zip) or copy (folder) the dataset into `staging`; returns the folder holding `top`."""
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source} is not a zip file")
        with zipfile.ZipFile(source) as archive:
            for member in archive.infolist():
                # refuse absolute paths and .. so a hostile zip cannot write outside staging
                if member.filename.startswith("/") or ".." in Path(member.filename).parts:
                    raise ValueError(f"{source}: unsafe path in zip: {member.filename}")
            archive.extractall(staging)
    else:
        src = source / top if (source / top).is_dir() else source
        shutil.copytree(src, staging / top)
    if not (staging / top).is_dir():
        found = sorted(p.name for p in staging.iterdir())
        raise ValueError(f"{source}: expected a top-level folder {top}/, found {found}")
    return staging


def fetch_dataset(source: str, out_dir: Path, manifest: dict[str, str], timeout_s: float = 600) -> str:
    """Make `out_dir/<top>` a verified copy of the dataset. Returns what was done.

    The copy is staged in a temporary folder beside `out_dir` and renamed into place only when
    every file matches, so `out_dir/<top>` is either absent, the old copy, or a complete new one.
    """
    top = Path(next(iter(manifest))).parts[0]
    target = out_dir / top
    if target.exists():
        problems = verify_tree(out_dir, manifest)
        if not problems:
            return "present and verified"
        raise ManifestError(
            f"{target} exists but does not match the manifest:\n{describe(problems)}\n"
            f"Move it away (nothing is deleted automatically) and run again."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".fetch-") as tmp:
        tmp_path = Path(tmp)
        local = materialise_source(source, tmp_path, timeout_s)
        staging = tmp_path / "staging"
        staging.mkdir()
        stage_copy(local, staging, top)
        problems = verify_tree(staging, manifest)
        if problems:
            raise ManifestError(f"{source} does not match the manifest:\n{describe(problems)}")
        os.replace(staging / top, target)
    return "fetched and verified"
