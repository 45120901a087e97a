"""Run a bin/ script the way a user does, in a subprocess from the repository root."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, env: dict | None = None, timeout: float = 600):
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def load_bin(name: str):
    """Import bin/<name>.py as a module, for tests that call its functions directly."""
    spec = importlib.util.spec_from_file_location(f"bin_{name}", ROOT / "bin" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def write_catalog(folder: Path, out_dir: Path, source: str = "kvasir") -> tuple[Path, Path]:
    """A catalog and source summary for one images/ + masks/ folder (bare stems, a public Kvasir-SEG
    source), as bin/fetch_data.py writes them: for tests that point a stage at a handful of files."""
    import json

    from lib.sources import catalog_text, folder_catalog

    catalog, _, grouping = folder_catalog(folder, source)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "catalog.csv").write_text(catalog_text(list(catalog.entries.values())))
    summary = {"kind": "kvasir-seg", "role": "train", "weight": 1.0, "grouping": grouping, "skipped": []}
    (out_dir / "sources.json").write_text(json.dumps({"data_rev": "test", "sources": {source: summary}}))
    return out_dir / "catalog.csv", out_dir / "sources.json"
