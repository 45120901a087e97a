"""Provenance (git SHA, DVC data revision), MLflow set-up and logging, and the registered model's name."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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


def data_revision(summary: str | Path = "data/sources.json") -> str:
    """`data_rev` of the data the catalog holds (every source, bin/fetch_data.py), or "unknown"."""
    try:
        return str(json.loads(Path(summary).read_text())["data_rev"])
    except (OSError, ValueError, KeyError, TypeError):
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


def result_metrics(results: dict) -> list:
    """MLflow Metrics `<section>_<flattened key>` of every float in `results` (a report's sections)."""
    from mlflow.entities import Metric

    from lib.config import flatten

    now = int(time.time() * 1000)
    return [
        Metric(f"{section}_{k}", v, now, 0)
        for section, m in results.items()
        for k, v in flatten(m).items()
        if isinstance(v, float) and ".params." not in k  # corruption settings are not results
    ]


def log_to_run(run_id: str, results: dict, out_dir: str, log_images: bool = True) -> str:
    """Add evaluation metrics and reports to the (finished) training run.

    The pipeline's own evaluation (Kvasir-SEG, public) logs its whole report; `log_images=False`
    leaves out what `is_image_artifact` names."""
    client = set_tracking().MlflowClient()
    try:
        client.get_run(run_id)
    except Exception as exc:  # a checkpoint from another tracking store: report, don't fail
        return f"not logged to MLflow (run {run_id} not found: {type(exc).__name__})"
    client.log_batch(run_id, metrics=result_metrics(results))
    log_tables_only(run_id, out_dir, log_images)
    return f"logged to MLflow run {run_id}"


# What counts as an image of the data, for every upload to MLflow: pictures, videos, pixel arrays and
# HTML pages (a report page embeds its pictures), and anything under an overlays/ folder. A user's own
# data (evaluate --data, drift_report --current, the shadow window) logs only the rest (metrics, JSON,
# CSV, YAML) unless asked (log_images: true or --log-images): no picture of it leaves the machine unasked.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".svg", ".html", ".htm"}
    | {".mp4", ".avi", ".mov", ".mkv", ".npy", ".npz"}
)
IMAGE_FOLDERS = frozenset({"overlays"})


def is_image_artifact(path: str | Path) -> bool:
    """True for a file that shows the data (IMAGE_SUFFIXES, or inside an IMAGE_FOLDERS folder)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES or any(p in IMAGE_FOLDERS for p in path.parts[:-1])


def log_tables_only(
    run_id: str,
    out_dir: str | Path,
    log_images: bool,
    artifact_path: str | None = None,
    files: list[Path] | None = None,
) -> tuple[list[str], list[str]]:
    """Log the files of `out_dir` (or only `files`, paths inside it) to `run_id` under `artifact_path`
    (default: the folder's name), keeping their layout; images (`is_image_artifact`) only when
    `log_images`. Returns (logged, withheld), paths relative to `out_dir`."""
    root = Path(out_dir)
    chosen = sorted(root.rglob("*")) if files is None else [Path(f) for f in files]
    relative = [f.relative_to(root) for f in chosen if f.is_file()]
    logged = [r for r in relative if log_images or not is_image_artifact(r)]
    client = set_tracking().MlflowClient()
    base = root.name if artifact_path is None else artifact_path
    if files is None and len(logged) == len(relative):  # nothing withheld: the folder in one call
        client.log_artifacts(run_id, str(root), artifact_path=base or None)
        return [r.as_posix() for r in logged], []
    for rel in logged:
        folder = "/".join(p for p in (base, rel.parent.as_posix()) if p and p != ".")
        client.log_artifact(run_id, str(root / rel), artifact_path=folder or None)
    return [r.as_posix() for r in logged], [r.as_posix() for r in relative if r not in logged]


# Runs on a user's own data go to this experiment of their own, not to the model's (whose runs are the
# training runs that register.py ranks and the smoke test counts): on a tracking server an experiment is
# the unit of permissions and deletion, so runs on private data can be restricted or removed together.
OWN_DATA_EXPERIMENT = "polyp-seg-own-data"
DATA_SOURCE_TAG = "data_source"  # the evaluated folder's name; marks a run as one on a user's own data


def own_data_run(kind: str, source: str | Path, model_version: str, tags: dict | None = None) -> str:
    """Create a run named `<kind> <folder name>` in OWN_DATA_EXPERIMENT, tagged with the model version
    and `data_source`; returns its id. Finish it with `finish_own_data_run`."""
    mlflow = setup_mlflow(OWN_DATA_EXPERIMENT)
    name = Path(source).resolve().name
    run = mlflow.MlflowClient().create_run(
        mlflow.get_experiment_by_name(OWN_DATA_EXPERIMENT).experiment_id,
        run_name=f"{kind} {name}",
        tags={"model_version": model_version, DATA_SOURCE_TAG: name, **(tags or {})},
    )
    return run.info.run_id


def finish_own_data_run(
    run_id: str, results: dict, out_dir: str | Path, log_images: bool, files: list[Path] | None = None
) -> str:
    """Log `results`' metrics and `out_dir`'s tables (images only when `log_images`) to an
    `own_data_run` and end it; returns the summary line's note."""
    client = set_tracking().MlflowClient()
    try:
        client.log_batch(run_id, metrics=result_metrics(results))
        _, withheld = log_tables_only(run_id, out_dir, log_images, artifact_path="", files=files)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    left = f", {len(withheld)} image file(s) not logged (--log-images logs them)" if withheld else ""
    return f"logged to MLflow run {run_id} of experiment {OWN_DATA_EXPERIMENT}{left}"


@dataclass(frozen=True)
class RegisterConfig:
    """conf/register.yaml: bin/register.py registers `model_name`; bin/gates.py and bin/promote.py read
    the name from here too, so the registered model is named in one place."""

    report: str  # reports/register.json
    catalog: str  # data/catalog.csv: original images; one is predicted through the registry URI as a check
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
