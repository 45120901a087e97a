"""MLflow model logging, registration, aliases and the audit trail of promotions.

Conventions (see docs/packaging.md):
- a run that holds exported models carries tags `pyfunc_model_uri` and `onnx_model_uri`
  (`models:/<model_id>`), `onnx_sha256` and `model_json_sha256` (the operating point served with it),
  and the PyTorch checkpoint the ONNX came from as the artifact CHECKPOINT_ARTIFACT (fine-tuning starts
  from it: lib/init_weights.py);
- registered versions carry provenance tags (run_id, git_sha, data_rev, val_dice, onnx_sha256,
  model_json_sha256), the
  run's evaluation metrics at registration (EVALUATION_TAGS, when bin/evaluate.py logged them) and
  one `audit.NNN` tag per transition (a JSON line: event, by, at, details);
- aliases `staging` and `production`; the registered model's tag `production_history` lists the
  versions that held `production`, oldest first, so a rollback knows where to go.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from lib.init_weights import CHECKPOINT_ARTIFACT  # logged beside the exported models (its one definition)

PYFUNC_TAG, ONNX_TAG, SHA_TAG = "pyfunc_model_uri", "onnx_model_uri", "onnx_sha256"
# model.json's sha256: the same weights with another operating point (threshold, component filter, min
# area) serve other masks, so they are another version.
JSON_SHA_TAG = "model_json_sha256"
HISTORY_TAG = "production_history"
STAGING, PRODUCTION = "staging", "production"
# bin/evaluate.py's run metrics copied onto a new version: it keeps the numbers it was registered with
# even if its run is evaluated again, and lib/trend.py reads them when the run is gone.
EVALUATION_TAGS = ("test_dice_mean", "test_iou_mean", "val_dice_mean")
# The pyfunc runs wherever these are installed; pinned to what produced it, no slow inference step.
PYFUNC_REQUIREMENTS = ("mlflow", "onnxruntime", "numpy", "pandas", "opencv-python-headless")

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars garble logs and CI output


class RegistryError(RuntimeError):
    """A registry operation that cannot go ahead (nothing staged, no approval, no history...)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pinned(*dists: str) -> list[str]:
    return [f"{d}=={importlib.metadata.version(d)}" for d in dists]


def client():
    """An MlflowClient for $MLFLOW_TRACKING_URI (else the embedded store), also made mlflow's default."""
    from lib.tracking import set_tracking

    return set_tracking().MlflowClient()


def run_for_checkpoint(mlflow, experiment: str, meta: dict) -> tuple[str, bool]:
    """(run id, created): the checkpoint's training run when this store has it, else a new run.

    A checkpoint trained against another store (e.g. smoke training logged locally, export against
    a server) gets a stand-in run in `experiment` that records the checkpoint's metadata, with
    `best_val_dice` so that bin/register.py can rank it.
    """
    from mlflow.exceptions import MlflowException

    c = mlflow.MlflowClient()
    try:
        run = c.get_run(meta["run_id"])
        if run.info.lifecycle_stage == "active":
            return run.info.run_id, False
    except MlflowException:
        pass
    exp = mlflow.get_experiment_by_name(experiment)
    tags = {
        "git_sha": meta["git_sha"],
        "git_dirty": str(meta.get("git_dirty")),
        "data_rev": meta["data_rev"],
        "model_version": meta["model_version"],
        "source_run_id": meta["run_id"],
        "mlflow.runName": f"export-{meta['model_version']}",
    }
    run = c.create_run(exp.experiment_id, tags=tags)
    if meta.get("val_dice") is not None:
        c.log_metric(run.info.run_id, "best_val_dice", float(meta["val_dice"]))
    c.log_param(run.info.run_id, "source_run_id", meta["run_id"])
    c.set_terminated(run.info.run_id)
    return run.info.run_id, True


def log_exported_models(
    mlflow,
    run_id: str,
    onnx_path: Path,
    json_path: Path,
    example_jpeg: bytes,
    example_input,
    checkpoint: Path | None = None,
) -> dict:
    """Log the ONNX flavour and the pyfunc wrapper (signatures, input examples) into `run_id`.

    `example_input`: `(1, 3, S, S) float32`, the prepared example image for the ONNX flavour.
    `checkpoint`: the PyTorch checkpoint the ONNX was exported from, logged as CHECKPOINT_ARTIFACT
    (bin/export.py always passes it; None, for a stand-in ONNX model without one, logs none).
    Returns the model URIs; they are also set as run tags.
    """
    import onnx

    from lib import pyfunc_model
    from lib.io import sha256_file
    from lib.model_contract import read_model_json
    from lib.pyfunc_model import example_frame, onnx_signature, pyfunc_signature

    meta = read_model_json(json_path)  # the one reader of the model contract
    lib_dir = str(Path(__file__).resolve().parent)
    # start_run refuses a run outside the active experiment (the training run may be in another one).
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
    with mlflow.start_run(run_id=run_id):
        onnx_info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="onnx",
            signature=onnx_signature(meta.input_size, meta.input_name, meta.output_name),
            input_example={meta.input_name: example_input},
            pip_requirements=pinned("onnx", "onnxruntime", "numpy"),
            save_as_external_data=False,
            onnx_execution_providers=["CPUExecutionProvider"],
        )
        pyfunc_info = mlflow.pyfunc.log_model(
            name="pyfunc",
            python_model=pyfunc_model.__file__,  # model from code: nothing pickled
            artifacts={"model_onnx": str(onnx_path), "model_json": str(json_path)},
            code_paths=[lib_dir],
            signature=pyfunc_signature(meta.threshold),
            input_example=example_frame(example_jpeg),
            pip_requirements=pinned(*PYFUNC_REQUIREMENTS),
            metadata={"model_version": meta.model_version, "onnx_sha256": meta.sha256},
        )
        uris = {
            ONNX_TAG: onnx_info.model_uri,
            PYFUNC_TAG: pyfunc_info.model_uri,
            SHA_TAG: meta.sha256,
            JSON_SHA_TAG: sha256_file(json_path),
        }
        mlflow.set_tags(uris)
        mlflow.log_artifact(str(json_path), artifact_path="export")
        if checkpoint is not None:
            log_checkpoint(mlflow, Path(checkpoint))
    return {"run_id": run_id, **uris}


def log_checkpoint(mlflow, checkpoint: Path) -> None:
    """Log `checkpoint` into the active run as CHECKPOINT_ARTIFACT, whatever the file is called."""
    import shutil
    import tempfile

    folder, name = CHECKPOINT_ARTIFACT.rsplit("/", 1)
    if checkpoint.name == name:
        mlflow.log_artifact(str(checkpoint), artifact_path=folder)
        return
    with tempfile.TemporaryDirectory() as tmp:  # log_artifact keeps the file's name: stage it under ours
        staged = Path(tmp) / name
        shutil.copyfile(checkpoint, staged)
        mlflow.log_artifact(str(staged), artifact_path=folder)


def exported_run(mlflow, export_report: str | Path, metric: str = "best_val_dice"):
    """The run bin/export.py logged the workspace's ONNX and pyfunc models into (its `mlflow_report`).

    This is the model the pipeline evaluated, quantized and benchmarked, so the gates measure the version
    they will promote; a better-scoring run left in the experiment by an earlier, reverted experiment is
    not picked up behind the user's back.
    """
    from mlflow.exceptions import MlflowException

    path = Path(export_report)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read the export report {path}: {exc}") from exc
    if not isinstance(record, dict) or not record.get("logged") or not record.get("run_id"):
        raise RegistryError(f"{path} records no MLflow run (bin/export.py ran with log_to_mlflow: false?)")
    try:
        run = mlflow.get_run(record["run_id"])
    except MlflowException as exc:
        raise RegistryError(
            f"run {record['run_id']} of {path} is not in {mlflow.get_tracking_uri()}: {exc}"
        ) from exc
    if not run.data.tags.get(PYFUNC_TAG) or metric not in run.data.metrics:
        raise RegistryError(f"run {run.info.run_id} of {path} has no logged pyfunc model or metric {metric}")
    return run


def best_run(mlflow, experiment: str, metric: str = "best_val_dice"):
    """The run of `experiment` with the highest `metric` among runs that hold a logged pyfunc model."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise RegistryError(f"experiment {experiment!r} does not exist in {mlflow.get_tracking_uri()}")
    runs = mlflow.MlflowClient().search_runs(
        [exp.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=[f"metrics.{metric} DESC"],
    )
    usable = [r for r in runs if r.data.tags.get(PYFUNC_TAG) and metric in r.data.metrics]
    if not usable:
        raise RegistryError(
            f"no finished run in {experiment!r} has a logged pyfunc model and metric {metric}"
        )
    return usable[0]


def register_run(c, name: str, run, by: str) -> tuple[object, bool]:
    """(model version, reused): register the run's pyfunc model, or reuse the version made from it.

    A version is reused when it came from the same run and either the same logged model or an
    ONNX file and a model.json with the same SHA-256s (a re-export of identical weights at the same
    operating point). A new operating point for the same weights is a new version.
    """
    from mlflow.exceptions import MlflowException

    uri, sha, json_sha = (
        run.data.tags[PYFUNC_TAG],
        run.data.tags.get(SHA_TAG, ""),
        run.data.tags.get(JSON_SHA_TAG, ""),
    )
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(
            name, description="Kvasir-SEG polyp U-Net (ONNX pyfunc). NOT FOR CLINICAL USE."
        )
    for mv in c.search_model_versions(f"name='{name}' and run_id='{run.info.run_id}'"):
        same_files = sha and json_sha and (mv.tags.get(SHA_TAG), mv.tags.get(JSON_SHA_TAG)) == (sha, json_sha)
        if mv.source == uri or same_files:
            return mv, True
    tags = {
        k: run.data.tags.get(k, "") for k in ("git_sha", "data_rev", "model_version", SHA_TAG, JSON_SHA_TAG)
    }
    tags.update(run_id=run.info.run_id, val_dice=str(run.data.metrics.get("best_val_dice", "")))
    tags.update({k: str(run.data.metrics[k]) for k in EVALUATION_TAGS if k in run.data.metrics})
    model_id = uri.removeprefix("models:/")
    mv = c.create_model_version(name, uri, run_id=run.info.run_id, tags=tags, model_id=model_id)
    record_event(c, name, mv.version, "registered", by, {"run_id": run.info.run_id, "source": uri})
    return c.get_model_version(name, mv.version), False


def record_event(c, name: str, version: str, event: str, by: str, details: dict | None = None) -> dict:
    """Add `audit.NNN` (JSON) and `<event>_by` / `<event>_at` tags to a model version."""
    entry = {"event": event, "by": by, "at": now(), **(details or {})}
    tags = c.get_model_version(name, version).tags
    seq = sum(1 for k in tags if k.startswith("audit."))
    c.set_model_version_tag(name, version, f"audit.{seq:03d}", json.dumps(entry, sort_keys=True)[:4900])
    c.set_model_version_tag(name, version, f"{event}_by", by)
    c.set_model_version_tag(name, version, f"{event}_at", entry["at"])
    return entry


def alias_version(c, name: str, alias: str) -> str | None:
    """The version number holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def registry_state(c, name: str) -> dict:
    """Every version of `name` with its aliases, source run and tags (what a release job inherits)."""
    model = c.get_registered_model(name)
    versions = []
    for found in sorted(c.search_model_versions(f"name='{name}'"), key=lambda mv: int(mv.version)):
        mv = c.get_model_version(name, found.version)  # search results leave aliases out
        versions.append(
            {
                "version": str(mv.version),
                "aliases": list(mv.aliases),
                "run_id": mv.run_id,
                "tags": dict(mv.tags),
            }
        )
    return {"name": name, "tags": dict(model.tags), "versions": versions}


def set_staging(c, name: str, version: str, by: str) -> None:
    previous = alias_version(c, name, STAGING)
    c.set_registered_model_alias(name, STAGING, version)
    if previous != version:
        record_event(c, name, version, "staged", by, {"replaced": previous})


def model_card(model_uri: str) -> dict:
    """Whether the model at `model_uri` has a signature and a saved input example."""
    import mlflow

    info = mlflow.models.get_model_info(model_uri)
    return {
        "model_uri": model_uri,
        "has_signature": info.signature is not None,
        "has_input_example": bool(info.saved_input_example_info),
    }


def verify_model(model_uri: str, image_bytes: bytes) -> dict:
    """Load `model_uri` as a pyfunc, predict one image, and report its model card."""
    import mlflow

    from lib.pyfunc_model import OUTPUT_COLUMNS, example_frame

    out = mlflow.pyfunc.load_model(model_uri).predict(example_frame(image_bytes))
    if list(out.columns) != OUTPUT_COLUMNS or len(out) != 1:
        raise RegistryError(
            f"{model_uri}: unexpected prediction columns {list(out.columns)} / rows {len(out)}"
        )
    row = out.iloc[0]
    prediction = {
        "width": int(row.width),
        "height": int(row.height),
        "polyp_fraction": float(row.polyp_fraction),
        "polyp_detected": bool(row.polyp_detected),
    }
    return {**model_card(model_uri), "prediction": prediction}


def _history(c, name: str) -> list[str]:
    raw = c.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


def promote(c, name: str, by: str, gates: dict) -> dict:
    """Move `production` to the `staging` version; tag both ends; returns what happened.

    Call only after the gates passed and a person approved (bin/promote.py enforces both).
    """
    staged = alias_version(c, name, STAGING)
    if staged is None:
        raise RegistryError(f"{name} has no @{STAGING} version to promote")
    current = alias_version(c, name, PRODUCTION)
    if current == staged:
        raise RegistryError(f"{name} v{staged} already holds @{PRODUCTION}")
    c.set_registered_model_alias(name, PRODUCTION, staged)  # an alias names one version: the old one loses it
    record_event(c, name, staged, "promoted", by, {"replaced": current, "gates": gates})
    if current is not None:
        record_event(c, name, current, "archived", by, {"replaced_by": staged})
    history = _history(c, name)
    if current is not None and (not history or history[-1] != current):
        history.append(current)
    c.set_registered_model_tag(name, HISTORY_TAG, ",".join([*history, staged]))
    return {"event": "promoted", "version": staged, "previous": current, "by": by}


def rollback(c, name: str, by: str, reason: str = "") -> dict:
    """Give `production` back to the version that held it before the current one."""
    current = alias_version(c, name, PRODUCTION)
    history = _history(c, name)
    if current is None or len(history) < 2 or history[-1] != current:
        raise RegistryError(f"{name}: no earlier production version to roll back to (history {history})")
    previous = history[-2]
    c.set_registered_model_alias(name, PRODUCTION, previous)
    record_event(c, name, current, "rolled_back", by, {"restored": previous, "reason": reason})
    record_event(c, name, previous, "restored", by, {"replaced": current, "reason": reason})
    c.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[:-1]))
    return {"event": "rolled_back", "version": previous, "previous": current, "by": by}
