#!/usr/bin/env bash
# Build, smoke-test and base-image helpers for the serving container, with podman.
#   serve/image.sh base    build localhost/debian-py311:bookworm with debootstrap (no registry needed)
#   serve/image.sh build   build $POLYPSEG_IMAGE from serve/Dockerfile
#   serve/image.sh pick-base  print the base a build would use (building the local one if needed)
#   serve/image.sh test    run it, wait for /readyz, POST a real image from the host, check, remove it
# Environment: POLYPSEG_IMAGE (default localhost/polypseg-serve:latest); BASE_IMAGE overrides the
# base (default: the official python:3.11-slim when present or pullable, else the local debootstrap
# image, built first when missing); POLYPSEG_STANDIN_MODEL=1 bakes a tiny stand-in model when
# models/model.onnx does not exist yet; POLYPSEG_MODEL_DIR picks another folder holding model.onnx +
# model.json; POLYPSEG_PODMAN_DIR is the podman storage (default .cache/podman in the repository:
# the project's own, so nothing left on a machine by earlier runs can stand in for a build);
# POLYPSEG_PODMAN_SANDBOX=0 uses your own podman configuration instead of the sandbox-safe one below.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
[[ "$PY" = /* ]] || PY="$PWD/$PY"  # make passes a path relative to the repo root
IMAGE=${POLYPSEG_IMAGE:-localhost/polypseg-serve:latest}
LOCAL_BASE=localhost/debian-py311:bookworm
OFFICIAL_BASE=docker.io/library/python:3.11-slim  # the Dockerfile's default, fully qualified
PULL_TIMEOUT=${POLYPSEG_PULL_TIMEOUT:-120}  # seconds to try pulling the official base
PODMAN_DIR=${POLYPSEG_PODMAN_DIR:-$REPO/.cache/podman}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

# Sandboxes without systemd or overlayfs need runc, cgroupfs, file events and the vfs driver.
if [[ "${POLYPSEG_PODMAN_SANDBOX:-1}" == 1 && -z "${CONTAINERS_CONF:-}" ]]; then
    mkdir -p "$PODMAN_DIR/storage" "$PODMAN_DIR/run"
    cat > "$PODMAN_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    cat > "$PODMAN_DIR/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_DIR/run"
CONF
    export CONTAINERS_CONF="$PODMAN_DIR/containers.conf" CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
fi

build_base() {
    command -v debootstrap >/dev/null || { echo "image: debootstrap missing (apt-get install -y debootstrap)" >&2; exit 1; }
    local rootfs log start=$SECONDS
    rootfs=$(mktemp -d /var/tmp/polypseg-rootfs.XXXXXX)
    log="$rootfs.log"
    chmod 755 "$rootfs"  # mktemp makes it 0700; as the image's / it would lock out the non-root user
    if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
        http://deb.debian.org/debian >"$log" 2>&1; then
        tail -20 "$log" >&2
        echo "image: debootstrap failed (full log: $log)" >&2
        rm -rf "$rootfs"
        exit 1
    fi
    tar -C "$rootfs" -c . | podman import - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs" "$log"
    echo "image: base $LOCAL_BASE built in $((SECONDS - start)) s"
}

# Prints the base image to build from on stdout; progress goes to stderr. Order: BASE_IMAGE; an
# official or local base already in the storage (reused, never rebuilt); the official base if it
# can be pulled; else the local debootstrap base, built now.
pick_base() {
    local err
    if [[ -n "${BASE_IMAGE:-}" ]]; then echo "$BASE_IMAGE"; return; fi
    if podman image exists "$OFFICIAL_BASE"; then echo "$OFFICIAL_BASE"; return; fi
    if podman image exists "$LOCAL_BASE"; then echo "$LOCAL_BASE"; return; fi
    if err=$(timeout "$PULL_TIMEOUT" podman pull --quiet "$OFFICIAL_BASE" 2>&1 >/dev/null); then
        echo "$OFFICIAL_BASE"; return
    fi
    echo "image: $OFFICIAL_BASE cannot be pulled (${err##*$'\n'}); building the local base $LOCAL_BASE with debootstrap first" >&2
    build_base >&2
    echo "$LOCAL_BASE"
}

build() {
    local base
    # Global, and an EXIT trap: set -e leaves without running RETURN traps, and locals are gone by EXIT.
    CTX=$(mktemp -d /var/tmp/polypseg-context.XXXXXX)
    trap 'rm -rf "$CTX"' EXIT
    local ctx=$CTX
    # A minimal context: the repo root also holds the venv and data, which the image never needs.
    tar -C "$REPO" --exclude=__pycache__ -c lib serve | tar -C "$ctx" -x
    mkdir -p "$ctx/models"
    local src="${POLYPSEG_MODEL_DIR:-$REPO/models}"  # CI bakes the smoke export: models/smoke
    if [[ -f "$src/model.onnx" && -f "$src/model.json" ]]; then
        cp "$src"/model.onnx* "$src/model.json" "$ctx/models/"
    elif [[ "${POLYPSEG_STANDIN_MODEL:-0}" == 1 ]]; then
        echo "image: WARNING models/model.onnx missing; baking the tiny STAND-IN model (not a real model)" >&2
        PYTHONPATH="$REPO" "$PY" -m tests.support.tinymodel "$ctx/models" --size 256
    else
        echo "image: models/model.onnx and models/model.json are missing (run the export stage," \
             "or set POLYPSEG_STANDIN_MODEL=1 for a smoke build)" >&2
        exit 1
    fi
    base=$(pick_base)
    local secret=()
    [[ -s "$CA_BUNDLE" ]] && secret=(--secret "id=pip_cert,src=$CA_BUNDLE")
    echo "image: building $IMAGE from base $base"
    podman build --format docker --build-arg "BASE_IMAGE=$base" "${secret[@]}" \
        -f "$ctx/serve/Dockerfile" -t "$IMAGE" "$ctx" </dev/null
    if [[ "$PODMAN_DIR/containers.conf" == "${CONTAINERS_CONF:-}" ]]; then
        podman image prune -f >/dev/null  # our own storage: drop the replaced image and the build stage
    fi
    podman image inspect --format 'image: {{.Id}} {{.Size}} bytes, user {{.Config.User}}' "$IMAGE"
}

MLFLOW_IMAGE=${POLYPSEG_MLFLOW_IMAGE:-localhost/polypseg-mlflow:latest}

build_mlflow() {
    local base ctx secret=()
    ctx=$(mktemp -d /var/tmp/polypseg-mlflow-context.XXXXXX)
    CTX=$ctx
    trap 'rm -rf "$CTX"' EXIT
    mkdir -p "$ctx/serve" && cp "$REPO/serve/Dockerfile.mlflow" "$REPO/serve/requirements-mlflow.txt" "$ctx/serve/"
    base=$(pick_base)
    [[ -s "$CA_BUNDLE" ]] && secret=(--secret "id=pip_cert,src=$CA_BUNDLE")
    echo "image: building $MLFLOW_IMAGE from base $base"
    podman build --format docker --build-arg "BASE_IMAGE=$base" "${secret[@]}" \
        -f "$ctx/serve/Dockerfile.mlflow" -t "$MLFLOW_IMAGE" "$ctx" </dev/null
}

# serve/docker-compose.yml brought up for real (podman-compose): both services healthy, a prediction
# through the API, the MLflow server answering; then everything removed, volumes included.
compose_test() {
    local api_port mlflow_port status=0
    podman image exists "$IMAGE" || { echo "compose: $IMAGE is missing: make image first" >&2; return 1; }
    api_port=$(PYTHONPATH="$REPO" "$PY" -c 'from tests.support.harness import free_port; print(free_port())')
    mlflow_port=$(PYTHONPATH="$REPO" "$PY" -c 'from tests.support.harness import free_port; print(free_port())')
    export API_PORT=$api_port MLFLOW_PORT=$mlflow_port POLYPSEG_IMAGE=$IMAGE POLYPSEG_MLFLOW_IMAGE=$MLFLOW_IMAGE
    # Global, for the EXIT trap (see build).
    COMPOSE=(podman-compose --project-name "polypseg-compose-$$" -f "$REPO/serve/docker-compose.yml")
    trap '"${COMPOSE[@]}" down -v >/dev/null 2>&1 || true' EXIT
    "${COMPOSE[@]}" up -d --no-build >/dev/null
    PYTHONPATH="$REPO" "$PY" -m tests.support.harness smoke --port "$api_port" --timeout 180 || status=1
    local t0=$SECONDS
    while [[ $status == 0 ]] && ! curl -fsS --max-time 2 "http://127.0.0.1:$mlflow_port/health" >/dev/null 2>&1; do
        if ((SECONDS - t0 > 180)); then echo "compose: MLflow /health not OK after 180 s" >&2; status=1; fi
        sleep 1
    done
    local search="http://127.0.0.1:$mlflow_port/api/2.0/mlflow/experiments/search?max_results=1"
    if [[ $status == 0 ]] && ! curl -fsS --max-time 10 "$search" >/dev/null; then
        echo "compose: the MLflow REST API did not answer" >&2; status=1
    fi
    if [[ $status != 0 ]]; then "${COMPOSE[@]}" logs >&2 2>&1 | tail -60 >&2 || true; return 1; fi
    echo "compose: API :$api_port answered /predict, MLflow :$mlflow_port healthy; removing (down -v)"
}

# CycloneDX SBOM of the image's Python environment: `pip freeze --all` inside the image, so it lists
# exactly what the image ships (not the development venv).
sbom() {
    local out=${SBOM:?set SBOM=path/to/sbom.cdx.json} freeze
    podman image exists "$IMAGE" || { echo "sbom: $IMAGE is missing: make image first" >&2; return 1; }
    mkdir -p "$(dirname "$out")"
    freeze="$(dirname "$out")/image-freeze.txt"
    podman run --rm --entrypoint /opt/venv/bin/pip "$IMAGE" freeze --all >"$freeze" </dev/null
    "$REPO/.venv/bin/cyclonedx-py" requirements --output-reproducible --of JSON -o "$out" "$freeze"
    echo "sbom: $(grep -c . "$freeze") Python packages of $IMAGE -> $out"
}

# Tag the image REGISTRY:tag for each of TAGS and push (log in first with GHCR_USER and $GHCR_TOKEN).
push() {
    local registry=${REGISTRY:?set REGISTRY=ghcr.io/owner/name} tag
    podman image exists "$IMAGE" || { echo "push: $IMAGE is missing: make image first" >&2; return 1; }
    if [[ -n "${GHCR_USER:-}" ]]; then
        printenv GHCR_TOKEN | podman login "${registry%%/*}" -u "$GHCR_USER" --password-stdin
    fi
    for tag in ${TAGS:?set TAGS}; do
        podman tag "$IMAGE" "$registry:$tag"
        podman push "$registry:$tag"
        echo "push: $registry:$tag"
    done
}

smoke() {
    local name port
    NAME="polypseg-image-test-$$"  # global for the EXIT trap (see build)
    name=$NAME
    port=$(PYTHONPATH="$REPO" "$PY" -c 'from tests.support.harness import free_port; print(free_port())')
    trap 'podman rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
    podman run -d --name "$name" -p "127.0.0.1:$port:8000" "$IMAGE" </dev/null >/dev/null
    if ! PYTHONPATH="$REPO" "$PY" -m tests.support.harness smoke --port "$port" --timeout 120; then
        podman logs --tail 40 "$name" >&2 || true
        return 1
    fi
    [[ "$(podman exec "$name" id -u)" != 0 ]] || { echo "image: runs as root" >&2; return 1; }
    podman exec "$name" python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'mlflow') if u.find_spec(m)]; sys.exit(f'image ships {bad}' if bad else 0)"
    if podman exec "$name" sh -c 'test -e /run/secrets/pip_cert || env | grep -q PIP_CERT'; then
        echo "image: the build CA bundle leaked into the image" >&2; return 1
    fi
    podman healthcheck run "$name" >/dev/null || { echo "image: HEALTHCHECK (GET /readyz) failed" >&2; return 1; }
    if [[ -n "${METRICS_SNAPSHOT:-}" ]]; then  # what Prometheus would scrape after the smoke requests
        mkdir -p "$(dirname "$METRICS_SNAPSHOT")"
        curl -fsS --max-time 10 "http://127.0.0.1:$port/metrics" >"$METRICS_SNAPSHOT" \
            || { echo "image: GET /metrics failed" >&2; return 1; }
        for metric in 'polypseg_requests_total{[^}]*route="/predict"' 'polypseg_request_duration_seconds_bucket{' \
            'polypseg_model_info{' 'polypseg_model_loaded 1' 'polypseg_predicted_polyp_share_count{'; do
            grep -q "^$metric" "$METRICS_SNAPSHOT" \
                || { echo "image: no $metric in $METRICS_SNAPSHOT" >&2; return 1; }
        done
        echo "image: /metrics snapshot -> $METRICS_SNAPSHOT"
    fi
    echo "image: $IMAGE passed (healthy, user $(podman exec "$name" id -u), no torch/mlflow, no build CA)"
}

case "${1:-}" in
    base) build_base ;;
    pick-base) pick_base ;;
    build) build ;;
    test) smoke ;;
    mlflow) build_mlflow ;;
    compose-test) compose_test ;;
    sbom) sbom ;;
    push) push ;;
    *) echo "usage: $0 base|build|test|mlflow|compose-test|sbom|push" >&2; exit 2 ;;
esac
