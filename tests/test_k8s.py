"""serve/k8s: the kustomize base and every overlay render, pass the Kubernetes schemas, and state what the
server needs: probes on /readyz and /healthz, the image's non-root user, a read-only root with the
server's write paths mounted, resources, HPA, PDB and Service selectors, and the image's port.

Offline, as `make k8s-check`: `kubectl kustomize` renders, bin/k8s_validate.py validates with the
schemas kubernetes-validate ships. No cluster runs these manifests. Two integration tests use real
parts instead: the example overlay's init container command against a real MLflow store, serving what
it fetched with gunicorn; and the prometheus-adapter rule's series in a real gunicorn's /metrics.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from bin_helpers import ROOT, load_bin, run_script

from lib.config import load_config
from lib.tracking import RegisterConfig
from serve.settings import Settings

K8S = ROOT / "serve" / "k8s"
DIRS = [K8S / "base"] + sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
IDS = [str(d.relative_to(K8S)) for d in DIRS]
CONF = ROOT / "conf" / "k8s_validate.yaml"
KUBECTL = shutil.which("kubectl")
# Debian's own archive has no usable kubectl (bookworm's kubernetes-client is 1.20, whose kustomize v2
# cannot read these files); it comes from the Kubernetes apt repository, which not every machine has.
NO_KUBECTL = (
    "kubectl is missing (not in Debian's archive at a usable version: install kubectl >= 1.27 from "
    "the Kubernetes apt repository); make k8s-check fails without it"
)

validator = load_bin("k8s_validate")
CFG = load_config(validator.K8sValidateConfig, CONF)
# Where the server writes besides PROMETHEUS_MULTIPROC_DIR (serve/gunicorn.conf.py): Python's tempfile
# (registry downloads, the multiprocess dir when unset) and /dev/shm (gunicorn's worker_tmp_dir, the
# in-flight request ledger POLYPSEG_INFLIGHT_DIR).
SERVER_WRITES = ["/tmp", "/dev/shm"]


@functools.cache
def rendered(d: Path) -> tuple[dict, ...]:
    if KUBECTL is None:
        pytest.skip(NO_KUBECTL)
    done = subprocess.run([KUBECTL, "kustomize", str(d)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {d} failed (kubectl >= 1.27 needed):\n{done.stderr}"
    return tuple(validator.load_objects(done.stdout, str(d)))


def objects(d: Path, kind: str) -> list[dict]:
    return [copy.deepcopy(o) for o in rendered(d) if o["kind"] == kind]


def one(d: Path, kind: str) -> dict:
    found = objects(d, kind)
    assert len(found) == 1, f"{d}: expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(d: Path) -> dict:
    return one(d, "Deployment")["spec"]["template"]["spec"]


def api_container(d: Path) -> dict:
    return next(c for c in pod_spec(d)["containers"] if c["name"] == "api")


def all_containers(d: Path) -> list[dict]:
    spec = pod_spec(d)
    return spec.get("initContainers", []) + spec["containers"]


@functools.cache
def image_config(dockerfile: str) -> tuple[dict, str]:
    """(ENV of the final stage, USER) of serve/<dockerfile>, continuation lines joined."""
    text = (ROOT / "serve" / dockerfile).read_text().replace("\\\n", " ")
    final = re.split(r"^FROM .*$", text, flags=re.M)[-1]
    env, user = {}, ""
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
        elif line.startswith("USER "):
            user = line.split()[1]
    return env, user


# The images the manifests name (before an overlay's `images:` sets the registry) and their Dockerfiles.
DOCKERFILES = {"polypseg-serve": "Dockerfile", "polypseg-mlflow": "Dockerfile.mlflow"}


def dockerfile_of(image: str) -> str:
    name = image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    assert name in DOCKERFILES, f"image {image} is not built by this repository"
    return DOCKERFILES[name]


def manifest_env(d: Path, container: dict) -> dict:
    """What the manifest gives the container: envFrom ConfigMaps, then literal env values."""
    env = {}
    maps = {m["metadata"]["name"]: m.get("data", {}) for m in objects(d, "ConfigMap")}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def effective_env(d: Path, container: dict) -> dict:
    """The container's environment: its image's ENV, overridden by the manifest's."""
    return image_config(dockerfile_of(container["image"]))[0] | manifest_env(d, container)


def container_port(container: dict, port) -> int:
    """A probe's or Service's port (a name or a number) as the container's port number."""
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return ports[port] if isinstance(port, str) else port


def quantity(value: str) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores or bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", str(value)).groups()
    return float(number) * units[unit]


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_every_rendered_object_passes_the_schemas(d):
    problems = {
        validator.object_name(o): validator.validate_object(o, CFG.kubernetes_versions, CFG.strict)
        for o in rendered(d)
    }
    assert {name: p for name, p in problems.items() if p} == {}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= {
        o["kind"] for o in rendered(d)
    }


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_probes_use_readyz_and_healthz_on_the_served_port(d):
    api = api_container(d)
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = api["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    # A worker with a local model accepts requests only after loading it or after boot_wait_s.
    assert startup["periodSeconds"] * startup["failureThreshold"] > 2 * Settings().boot_wait_s
    bind_port = int(effective_env(d, api)["POLYPSEG_BIND"].rsplit(":", 1)[1])
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container_port(api, api[probe]["httpGet"]["port"]) == bind_port


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_container_port_is_the_gunicorn_bind_of_the_image(d):
    api = api_container(d)
    bind = effective_env(d, api)["POLYPSEG_BIND"]
    assert bind == image_config("Dockerfile")[0]["POLYPSEG_BIND"] == "0.0.0.0:8000"
    assert [p["containerPort"] for p in api["ports"]] == [int(bind.rsplit(":", 1)[1])]
    annotations = one(d, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(api["ports"][0]["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_pods_run_as_the_images_non_root_user_with_nothing_to_escalate(d):
    spec = pod_spec(d)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    account = one(d, "ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    for c in all_containers(d):
        uid = (c["securityContext"].get("runAsUser") or spec["securityContext"]["runAsUser"], c["name"])
        assert uid == (int(image_config(dockerfile_of(c["image"]))[1].split(":")[0]), c["name"])
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, c["name"]


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_every_path_the_server_writes_is_a_writable_volume(d):
    spec, api = pod_spec(d), api_container(d)
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = [m["mountPath"] for m in api["volumeMounts"] if not m.get("readOnly")]
    assert all("emptyDir" in volumes[m["name"]] for m in api["volumeMounts"])
    env = effective_env(d, api)
    for path in SERVER_WRITES + [env["PROMETHEUS_MULTIPROC_DIR"]]:
        assert any(path == m or path.startswith(m + "/") for m in writable), f"{path} is read-only"


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_the_served_model_is_baked_in_or_written_by_an_init_container(d):
    spec, api = pod_spec(d), api_container(d)
    model = effective_env(d, api)["POLYPSEG_MODEL_PATH"]
    mount = next((m for m in api.get("volumeMounts", []) if model.startswith(m["mountPath"] + "/")), None)
    if mount is None:  # the baked model: serve/Dockerfile copies models/ to /app/models/
        assert model == image_config("Dockerfile")[0]["POLYPSEG_MODEL_PATH"] == "/app/models/model.onnx"
        return
    assert mount.get("readOnly") is True  # the API only reads what the init container wrote
    writers = [
        c
        for c in spec.get("initContainers", [])
        for m in c.get("volumeMounts", [])
        if m["name"] == mount["name"] and not m.get("readOnly")
    ]
    assert len(writers) == 1, f"{model}: no init container writes volume {mount['name']}"


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_every_container_has_requests_and_limits_and_the_api_fits_its_workers(d):
    for c in all_containers(d):
        res = c["resources"]
        for kind in ("cpu", "memory"):
            assert quantity(res["requests"][kind]) <= quantity(res["limits"][kind]), (c["name"], kind)
    api = api_container(d)
    env = effective_env(d, api)
    # serve/gunicorn.conf.py: workers x onnxruntime threads should not exceed the cores the server gets.
    busy = int(env["POLYPSEG_WORKERS"]) * int(env["POLYPSEG_ORT_THREADS"])
    assert (
        busy <= quantity(api["resources"]["requests"]["cpu"]) <= quantity(api["resources"]["limits"]["cpu"])
    )


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_hpa_scales_the_deployment_and_pdb_lets_one_pod_go_at_a_time(d):
    deployment, hpa, pdb = (
        one(d, "Deployment"),
        one(d, "HorizontalPodAutoscaler"),
        one(d, "PodDisruptionBudget"),
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]  # the HPA owns the count; apply would reset it
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    assert 2 <= low <= high
    cpu = [m["resource"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert [r["name"] for r in cpu] == ["cpu"] and cpu[0]["target"]["type"] == "Utilization"
    # One eviction is always allowed, and one pod always stays at the HPA's minimum.
    assert pdb["spec"]["maxUnavailable"] == 1 and low - pdb["spec"]["maxUnavailable"] >= 1


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_pdb_and_service_select_exactly_the_deployments_pods(d):
    deployment = one(d, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert one(d, "PodDisruptionBudget")["spec"]["selector"] == {"matchLabels": selector}
    service = one(d, "Service")
    assert service["spec"]["selector"] == selector
    api = api_container(d)
    assert [container_port(api, p["targetPort"]) for p in service["spec"]["ports"]] == [
        api["ports"][0]["containerPort"]
    ]


@pytest.mark.parametrize("d", DIRS, ids=IDS)
def test_every_referenced_configmap_and_required_secret_is_rendered(d):
    maps = {m["metadata"]["name"] for m in objects(d, "ConfigMap")}
    secrets = {s["metadata"]["name"] for s in objects(d, "Secret")}
    for c in all_containers(d):
        for source in c.get("envFrom", []):
            assert source["configMapRef"]["name"] in maps, c["name"]
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                assert ref["name"] in secrets, f"{c['name']}: Secret {ref['name']} is not rendered"


def test_example_overlay_fetches_the_registered_model_by_name():
    d = K8S / "overlays" / "example"
    fetch = next(c for c in pod_spec(d)["initContainers"] if c["name"] == "fetch-model")
    env = effective_env(d, fetch)
    name = load_config(RegisterConfig, ROOT / "conf" / "register.yaml").model_name
    assert re.fullmatch(rf"models:/{re.escape(name)}(@\w+|/\d+)", env["POLYPSEG_MODEL_URI"])
    assert env["MLFLOW_TRACKING_URI"].startswith("http")
    assert "--artifact-uri=$(POLYPSEG_MODEL_URI)" in fetch["command"]
    assert (
        objects(d, "Namespace")[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    )


def test_custom_metric_hpa_scales_on_the_metric_the_adapter_rule_names():
    d = K8S / "overlays" / "custom-metric"
    rules = yaml.safe_load((d / "prometheus-adapter-rules.yaml").read_text())["rules"]
    metrics = one(d, "HorizontalPodAutoscaler")["spec"]["metrics"]
    pods = [m["pods"] for m in metrics if m["type"] == "Pods"]
    assert len(pods) == 1 and pods[0]["target"]["type"] == "AverageValue"
    rule = next(r for r in rules if r["name"]["as"] == pods[0]["metric"]["name"])
    assert rule["seriesQuery"].startswith("polypseg_requests_total{")
    assert re.fullmatch(rule["name"]["matches"], "polypseg_requests_total")
    assert "rate(<<.Series>>{<<.LabelMatchers>>" in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert not any(
        m["type"] == "Pods" for m in one(K8S / "base", "HorizontalPodAutoscaler")["spec"]["metrics"]
    )


def broken_copies(deployment: dict) -> dict[str, dict]:
    """Deliberately invalid variants of a valid rendered Deployment."""
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    misspelt = copy.deepcopy(deployment)
    ctx = misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    ctx["readOnlyRootFilesytem"] = ctx.pop("readOnlyRootFilesystem")
    unknown_kind = copy.deepcopy(deployment)
    unknown_kind["apiVersion"] = "apps/v1beta9"
    return {"containerPort": wrong_type, "readOnlyRootFilesytem": misspelt, "apps/v1beta9": unknown_kind}


def test_validation_refuses_broken_copies_of_a_rendered_deployment():
    deployment = one(K8S / "base", "Deployment")
    assert validator.validate_object(deployment, CFG.kubernetes_versions, CFG.strict) == []
    for clue, broken in broken_copies(deployment).items():
        problems = validator.validate_object(broken, CFG.kubernetes_versions, CFG.strict)
        assert len(problems) == len(CFG.kubernetes_versions) and all(clue in p for p in problems), problems


def test_the_script_exits_1_on_a_broken_manifest_and_2_on_empty_input(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all(rendered(K8S / "base")))
    done = run_script("k8s_validate.py", "--conf", str(CONF), str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(done.stdout.splitlines()) == len(rendered(K8S / "base")) + 1  # one line per object, summary

    broken = tmp_path / "broken.yaml"
    deployment = one(K8S / "base", "Deployment")
    broken.write_text(
        yaml.safe_dump_all([*rendered(K8S / "base"), broken_copies(deployment)["containerPort"]])
    )
    done = run_script("k8s_validate.py", "--conf", str(CONF), str(broken))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL Deployment/polypseg-api" in done.stdout and ", 1 failed," in done.stdout

    (tmp_path / "empty.yaml").write_text("")
    done = run_script("k8s_validate.py", "--conf", str(CONF), str(tmp_path / "empty.yaml"))
    assert done.returncode == 2 and "no objects" in done.stderr


def expand(arg: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion in a container's command (unknown names stay as written)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), arg)


@pytest.mark.integration
def test_example_overlay_init_command_fetches_a_model_the_api_then_serves(tmp_path, monkeypatch):
    """The registry-at-start wiring without a cluster: the init container's command, as rendered, run
    against a real MLflow store holding a registered pyfunc model, then gunicorn with the API
    container's POLYPSEG_MODEL_PATH; the overlay's mount path is mapped to a folder under tmp_path."""
    from lib.model_contract import read_model_json
    from lib.preprocess import prepare_input
    from lib.pyfunc_model import small_jpeg
    from lib.registry import client, log_exported_models, register_run, run_for_checkpoint
    from lib.tracking import setup_mlflow
    from tests.support.harness import Gunicorn, http_get
    from tests.support.tinymodel import write_tiny_model

    name = load_config(RegisterConfig, ROOT / "conf" / "register.yaml").model_name
    store = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    client().create_experiment("polyp-seg", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow = setup_mlflow("polyp-seg")
    version = "k8s0000-00000000"
    onnx_path = write_tiny_model(tmp_path / "export", size=64, version=version)
    meta = {"git_sha": "k8s0000", "data_rev": "rev0", "model_version": version, "run_id": "e" * 32}
    run_id, _ = run_for_checkpoint(mlflow, "polyp-seg", meta)
    rgb = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    contract = read_model_json(onnx_path.with_name("model.json"))
    x, _ = prepare_input(rgb, contract.input_size, contract.mean, contract.std)
    log_exported_models(mlflow, run_id, onnx_path, onnx_path.with_name("model.json"), small_jpeg(rgb), x)
    c = client()
    registered, _ = register_run(c, name, c.get_run(run_id), by="test_k8s")
    c.set_registered_model_alias(name, "production", registered.version)

    d = K8S / "overlays" / "example"
    fetch = next(c for c in pod_spec(d)["initContainers"] if c["name"] == "fetch-model")
    env = manifest_env(d, fetch) | {"MLFLOW_TRACKING_URI": store}  # the cluster's server -> this store
    assert env["POLYPSEG_MODEL_URI"] == f"models:/{name}@production"
    volume_root = tmp_path / "volume"
    mount = next(m["mountPath"] for m in fetch["volumeMounts"] if m["name"] == "models")
    command = [expand(a, env).replace(mount, str(volume_root)) for a in fetch["command"]]
    assert command[0] == "mlflow"  # the same pinned MLflow as serve/requirements-mlflow.txt
    command[0] = str(Path(sys.executable).with_name("mlflow"))
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    model_path = effective_env(d, api_container(d))["POLYPSEG_MODEL_PATH"].replace(mount, str(volume_root))
    fetched = sorted(str(p.relative_to(volume_root)) for p in volume_root.rglob("model.*"))
    assert Path(model_path).is_file(), f"the API would serve {model_path}; the download holds {fetched}"
    with Gunicorn(model_path, workers=1) as server:  # waits for /readyz
        status, body = http_get(server.port, "/version")
        assert status == 200 and json.loads(body)["model"]["artifact_version"] == version


@pytest.mark.integration
def test_adapter_rule_reads_a_series_the_server_exports(tmp_path):
    """The custom-metric rule's series and its route filter, against a real gunicorn's /metrics."""
    import urllib.request

    from lib.pyfunc_model import small_jpeg
    from tests.support.harness import Gunicorn, http_get
    from tests.support.tinymodel import write_tiny_model

    rule = yaml.safe_load((K8S / "overlays" / "custom-metric" / "prometheus-adapter-rules.yaml").read_text())
    rule = rule["rules"][0]
    series = rule["seriesQuery"].split("{", 1)[0]
    route = re.search(r'route="([^"]+)"', rule["metricsQuery"])[1]
    rgb = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    with Gunicorn(write_tiny_model(tmp_path / "model"), workers=1) as server:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}{route}",
            data=small_jpeg(rgb),
            headers={"Content-Type": "image/jpeg"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        status, body = http_get(server.port, "/metrics")
    samples = [line for line in body.decode().splitlines() if line.startswith(series + "{")]
    assert status == 200 and any(f'route="{route}"' in s and s.endswith(" 1.0") for s in samples), samples
