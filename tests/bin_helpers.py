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
