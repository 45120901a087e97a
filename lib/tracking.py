"""Provenance (git SHA, DVC data revision) and MLflow set-up shared by the stages."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

EXPERIMENT = "polyp-seg"
REGISTERED_MODEL = "polyp-seg-unet"
DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"  # embedded store when MLFLOW_TRACKING_URI is unset
DEFAULT_ARTIFACT_DIR = "mlartifacts"


def git_state(root: str | Path = ".") -> tuple[str, bool]:
    """(commit SHA or "unknown", dirty flag) of the working tree."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def data_revision(lock_path: str | Path = "dvc.lock", out: str = "data/raw/Kvasir-SEG") -> str:
    """The DVC content hash of the raw dataset recorded in dvc.lock, or "unknown"."""
    try:
        lock = yaml.safe_load(Path(lock_path).read_text())
    except (OSError, yaml.YAMLError):
        return "unknown"
    for stage in (lock or {}).get("stages", {}).values():
        for item in stage.get("outs", []):
            if item.get("path") == out:
                return str(item.get("md5", "unknown"))
    return "unknown"


def set_tracking():
    """Point MLflow at $MLFLOW_TRACKING_URI or the embedded SQLite store; returns the module."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    # The registry follows the tracking URI unless MLFLOW_REGISTRY_URI says otherwise. (Not set here:
    # mlflow.set_registry_uri exports the variable, which would leak into every child process.)
    mlflow.set_tracking_uri(uri)
    return mlflow


def setup_mlflow(experiment: str = EXPERIMENT):
    """`set_tracking`, then create (if needed) and select `experiment`; returns the module."""
    mlflow = set_tracking()
    if mlflow.get_experiment_by_name(experiment) is None:
        # A server decides where artifacts go; the embedded store keeps them in ./mlartifacts.
        location = (
            None if "MLFLOW_TRACKING_URI" in os.environ else Path(DEFAULT_ARTIFACT_DIR).resolve().as_uri()
        )
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return mlflow
