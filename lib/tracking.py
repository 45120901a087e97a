"""Provenance (git SHA, DVC data revision), MLflow set-up and logging, and the registered model's name."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

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


def setup_mlflow(experiment: str):
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


def log_to_run(run_id: str, results: dict, out_dir: str) -> str:
    """Add evaluation metrics and reports to the (finished) training run."""
    from mlflow.entities import Metric

    from lib.config import flatten

    client = set_tracking().MlflowClient()
    try:
        client.get_run(run_id)
    except Exception as exc:  # a checkpoint from another tracking store: report, don't fail
        return f"not logged to MLflow (run {run_id} not found: {type(exc).__name__})"
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{section}_{k}", v, now, 0)
        for section, m in results.items()
        for k, v in flatten(m).items()
        if isinstance(v, float) and ".params." not in k  # corruption settings are not results
    ]
    client.log_batch(run_id, metrics=metrics)
    client.log_artifacts(run_id, out_dir, artifact_path=Path(out_dir).name)
    return f"logged to MLflow run {run_id}"


@dataclass(frozen=True)
class RegisterConfig:
    """conf/register.yaml: bin/register.py registers `model_name`; bin/gates.py and bin/promote.py read
    the name from here too, so the registered model is named in one place."""

    report: str  # reports/register.json
    images_dir: str  # original images; one is predicted through the registry URI as a check
    sample_split: str  # CSV of stems; its first stem is the check image
    experiment: str  # MLflow experiment searched for runs
    model_name: str  # registered model name
    alias: str  # alias given to the new (or reused) version
    metric: str  # run metric that ranks candidates, higher is better
    # bin/export.py's mlflow_report: register the run that logged the workspace's exported model (what
    # evaluate, quantize and the gates measured); "" = the best run of `experiment` by `metric` instead.
    export_report: str


def registered_model_name(register_conf: str | Path) -> str:
    """`model_name` of a register config (e.g. conf/register.yaml); raises lib.config.ConfigError."""
    from lib.config import load_config

    return load_config(RegisterConfig, register_conf).model_name


def register_conf_for(conf: str | Path, given: str | None = None) -> Path:
    """The register config that names the model a gates config inspects: `given`, else the
    register.yaml beside `conf` (conf/gates.yaml -> conf/register.yaml)."""
    return Path(given) if given else Path(conf).with_name("register.yaml")
