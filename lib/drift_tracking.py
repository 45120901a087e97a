"""The drift report's MLflow side: the run of the model version that served the current images, whether
that version is the model the features were computed with, and attaching the report to that run (the
shadow window) or to a run of its own (a given folder, --current DIR: `own_run`). Pictures, the HTML
report included, go only when asked (lib.tracking.is_image_artifact; log_images / --log-images).

The look-up never raises (a missing store, version or run is a reason in its result) and bin/drift_report.py
records a failed attachment in drift.json: the report stands without MLflow. lib/drift.py never touches
the store.
"""

from __future__ import annotations

import re
from pathlib import Path

from lib.drift import DriftModel
from lib.tracking import DATA_SOURCE_TAG, is_image_artifact, own_data_run, set_tracking

REGISTRY_VERSION = re.compile(r"^(?P<name>[^/]+)/(?P<version>\d+)$")  # served from the registry: NAME/N


def model_run(version: str, model: DriftModel) -> dict:
    """The MLflow run of `version`: {run_id, found, sha256 (registry versions), reason}; never raises.

    `NAME/N` (served from the registry): that version's run and its `onnx_sha256` tag. Otherwise a
    local model_version `<git sha>-<run id prefix>`: model.json's run_id when it is this model's
    version and the store has it, else a run tagged `model_version=<version>` (the training run first).
    """
    run_id = None
    try:
        mlflow = set_tracking()
        client = mlflow.MlflowClient()
        match = REGISTRY_VERSION.match(version)
        if match:
            mv = client.get_model_version(match["name"], match["version"])
            run_id = mv.run_id
            client.get_run(run_id)
            return {
                "run_id": run_id,
                "found": True,
                "sha256": (mv.tags or {}).get("onnx_sha256"),
                "reason": "",
            }
        if version == model.meta.model_version and model.meta.run_id:
            try:
                client.get_run(model.meta.run_id)
                return {"run_id": model.meta.run_id, "found": True, "sha256": model.sha256, "reason": ""}
            except Exception:  # a model trained against another store: look for a tagged run below
                run_id = model.meta.run_id
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, f"tags.model_version = '{version}'") if experiments else []
        runs = [r for r in runs if DATA_SOURCE_TAG not in r.data.tags]  # not a run on someone's own data
        if runs:
            prefix = version.rsplit("-", 1)[-1]  # the training run's id starts with the version's suffix
            best = sorted(runs, key=lambda r: not r.info.run_id.startswith(prefix))[0]
            return {"run_id": best.info.run_id, "found": True, "sha256": None, "reason": ""}
        where = f"run {run_id} (model.json) is not in" if run_id else "no run of it in"
        store = mlflow.get_tracking_uri()
        reason = f"{where} the tracking store {store}, and no run there is tagged model_version={version}"
        return {"run_id": run_id, "found": False, "sha256": None, "reason": reason}
    except Exception as err:  # a missing registry version or run, an unreachable server: reported, not fatal
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return {"run_id": run_id, "found": False, "sha256": None, "reason": reason[:300]}


def model_mismatch(version: str, run: dict, model: DriftModel) -> str | None:
    """A warning when the served model (`version`) is known not to be the one the features used."""
    if REGISTRY_VERSION.match(version):
        if run.get("sha256") and run["sha256"] != model.sha256:
            return (
                f"the predictions came from {version} (onnx sha256 {run['sha256'][:12]}), but the model-side "
                f"features were computed with {model.path} ({model.meta.model_version}, "
                f"{model.sha256[:12]}): "
                "they describe that model's view of the current images, not what was served"
            )
        if not run.get("sha256"):
            return (
                f"could not check that {version} is {model.path}: {run.get('reason') or 'no onnx_sha256 tag'}"
            )
        return None
    if version != model.meta.model_version:
        return (
            f"the predictions came from {version}, but the model-side features were computed with "
            f"{model.path} ({model.meta.model_version}): they describe that model's view, not what was served"
        )
    return None


def log_to_model_run(run_id: str, files: list[Path], artifact_path: str, log_images: bool = True) -> None:
    """Attach the report files to the model version's MLflow run under `artifact_path`; the HTML report
    (an image file, lib.tracking.is_image_artifact) only when `log_images`."""
    client = set_tracking().MlflowClient()
    for path in files:
        if log_images or not is_image_artifact(path):
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def own_run(source: str | Path, version: str, model_run_info: dict) -> dict:
    """A report on a given folder: a new run `drift <folder name>` (lib.tracking.own_data_run), never the
    model version's run, which is kept as `model_run_id`. {run_id, found, model_run_id, reason}; never
    raises."""
    model_run_id = model_run_info.get("run_id")
    try:
        tags = {"model_run_id": str(model_run_id)} if model_run_id else {}
        run_id = own_data_run("drift", source, version, tags)
        return {"run_id": run_id, "found": True, "model_run_id": model_run_id, "reason": ""}
    except Exception as err:  # an unreachable server: reported, not fatal
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return {"run_id": None, "found": False, "model_run_id": model_run_id, "reason": reason[:300]}
