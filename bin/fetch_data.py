#!/usr/bin/env python3
"""Fetch and hash every data source of conf/data.yaml, pair its files, and write the one catalog.

Usage: bin/fetch_data.py --conf conf/data.yaml   (KVASIR_SEG_SOURCE overrides Kvasir-SEG's URL/zip)

A `kvasir-seg` source is downloaded (or copied from its local zip), verified file by file against its
committed manifest and extracted atomically. A `folder` or `nnunet` source stays where it is: its
per-file sha256 manifest is written to <manifest_dir>/<name>.SHA256SUMS, so a changed, added or
removed file changes the manifest, `data_rev` and every stage after this one. The catalog (stem,
source, role, group, image, mask) is what every later stage reads; the summary lists, per source, the
files left out and why, and `data_rev`, the revision of all the data used.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from lib.cli import parser, script
from lib.config import load_config
from lib.fetch import ManifestError, fetch_dataset, read_manifest, resolve_source
from lib.io import write_json, write_text
from lib.sources import DataConfig, catalog_text, check_unique, data_rev, manifest_lines, scan_source

WATCHED = Path("data/own")  # the fetch_data stage's dependency in dvc.yaml


def watched_by_dvc(root: Path) -> bool:
    """True when DVC hashes `root` as part of data/own (a real folder there, no link on the way)."""
    here = Path.cwd()
    try:
        rel = (here / root).absolute().relative_to(here / WATCHED)
    except ValueError:
        return False
    parts = [here / WATCHED / Path(*rel.parts[: k + 1]) for k in range(len(rel.parts))]
    return not any(p.is_symlink() for p in [here / WATCHED, *parts])


def hash_source(name: str, source, cfg: DataConfig) -> tuple[str, str]:
    """Make the source present and verified; (manifest path, sha256 of the manifest's text)."""
    if source.kind == "kvasir-seg":
        if not source.manifest:
            raise ValueError(f"source {name}: a kvasir-seg source needs its manifest")
        manifest = read_manifest(source.manifest)
        where, why = resolve_source(source.url or "", source.local_copy, dict(os.environ))
        outcome = fetch_dataset(where, Path(source.path).parent, manifest, cfg.timeout_s)
        print(f"fetch_data: {name}: {len(manifest)} files {outcome} from {where} ({why}) -> {source.path}")
        text = Path(source.manifest).read_text()
        return source.manifest, hashlib.sha256(text.encode()).hexdigest()
    root = Path(source.path)
    if not root.is_dir():
        raise FileNotFoundError(f"source {name}: {root} is not a folder")
    if cfg.dvc_stage and not watched_by_dvc(root):
        print(
            f"fetch_data: note: {name}: {root} is not a folder under {WATCHED}/ (DVC does not follow "
            f"links either), so `dvc status` cannot see its changes: rerun `dvc repro -f fetch_data` after "
            f"changing it (its manifest then reruns what depends on it)",
            file=sys.stderr,
        )
    text = manifest_lines(root)
    path = Path(cfg.manifest_dir) / f"{name}.SHA256SUMS"
    write_text(path, text)
    print(f"fetch_data: {name}: {text.count(chr(10))} files hashed in {root} -> {path}", flush=True)
    return str(path), hashlib.sha256(text.encode()).hexdigest()


@script("fetch_data")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/data.yaml").parse_args(argv)
    cfg = load_config(DataConfig, args.conf, args.overrides)
    if not cfg.sources:
        print(f"fetch_data: {args.conf}: no sources", file=sys.stderr)
        return 2
    entries, summary, digests = [], {}, {}
    try:
        for name, source in cfg.sources.items():
            manifest, digests[name] = hash_source(name, source, cfg)
            found, skipped, grouping = scan_source(name, source)
            if not found:
                raise ValueError(f"source {name}: no image/mask pairs in {source.path}")
            entries += found
            summary[name] = {
                "kind": source.kind,
                "role": source.role,
                "path": source.path,
                "weight": source.weight,
                "n_pairs": len(found),
                "grouping": grouping,
                "manifest": manifest,
                "manifest_sha256": digests[name],
                "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
            }
            print(
                f"fetch_data: {name}: {len(found)} pairs, {len(skipped)} files left out, groups by {grouping}"
            )
            for s in skipped[:20]:
                print(f"    left out {s.path}: {s.reason}", file=sys.stderr)
        check_unique(entries)
    except (ManifestError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"fetch_data: {exc}", file=sys.stderr)
        return 1
    write_text(cfg.catalog, catalog_text(entries))
    revision = data_rev(digests)
    write_json(cfg.summary, {"data_rev": revision, "sources": summary})
    print(
        f"fetch_data: {len(entries)} pairs from {len(summary)} source(s), "
        f"data_rev {revision} -> {cfg.catalog}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
