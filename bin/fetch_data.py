#!/usr/bin/env python3
"""Fetch Kvasir-SEG from a URL, zip or folder, verify every file, extract atomically into data/raw.

Usage: bin/fetch_data.py --conf conf/fetch_data.yaml   (KVASIR_SEG_SOURCE overrides the source)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.cli import parser, script
from lib.config import load_config
from lib.fetch import ManifestError, fetch_dataset, read_manifest, resolve_source


@dataclass(frozen=True)
class FetchConfig:
    source: str  # URL, local zip or extracted folder
    manifest: str  # sha256sum file, paths relative to out_dir
    out_dir: str  # where the dataset folder is created
    local_copy: str | None  # a zip used automatically when it exists; null = none
    timeout_s: float  # download timeout in seconds


@script("fetch_data")
def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], "conf/fetch_data.yaml").parse_args(argv)
    cfg = load_config(FetchConfig, args.conf, args.overrides)
    manifest = read_manifest(cfg.manifest)
    source, why = resolve_source(cfg.source, cfg.local_copy, dict(os.environ))
    try:
        outcome = fetch_dataset(source, Path(cfg.out_dir), manifest, cfg.timeout_s)
    except (ManifestError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"fetch_data: {exc}", file=sys.stderr)
        return 1
    print(f"fetch_data: {len(manifest)} files {outcome} from {source} ({why}) -> {cfg.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
