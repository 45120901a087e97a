# polypseg: make help lists the targets. Stage targets mirror dvc.yaml.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3.11
PORT    ?= 8000
UV_VERSION    := 0.13.9
LOCK_PLATFORM := --python-version 3.11 --python-platform x86_64-manylinux_2_28  # the CI runners' and the image's
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

STAGES := fetch_data validate_data make_splits preprocess train evaluate export quantize drift_reference register  # = dvc.yaml, in order
MODEL_URI ?=  # make serve MODEL_URI=models:/polyp-seg-unet@production serves the registered model instead

.PHONY: help setup system-deps lock data all ci ci-image ci-cold lint pre-commit format test test-fast smoke serve clean $(STAGES)

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

setup: $(VENV)/.installed system-deps ## create .venv and install the pinned requirements.lock (idempotent)

system-deps: ## Debian packages for the browser, container, diagram and monitoring tests, when missing
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		$(MAKE) --no-print-directory chromium container-tools graphviz prometheus; \
	else echo "setup: not root: install chromium, podman, buildah, runc, debootstrap, graphviz, prometheus yourself for those tests"; fi

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# The lock is the whole resolved closure with hashes: install exactly it (--no-deps), then check it is
	@# consistent. (pip's resolver mis-handles extras such as pandas[parquet] in hash-checking mode.)
	$(PY) -m pip install --quiet --require-hashes --no-deps --requirement requirements.lock
	$(PY) -m pip check
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	@test -d .dvc || (dvc init --quiet && git add .dvc >/dev/null 2>&1 || true)
	touch $@

lock: ## re-resolve requirements.in into requirements.lock with sha256 hashes (keeps existing pins; needs the index)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet uv==$(UV_VERSION)
	.lock-venv/bin/uv pip compile --quiet requirements.in --generate-hashes $(LOCK_PLATFORM) \
		--custom-compile-command "make lock" --output-file requirements.lock
	grep -E '^[A-Za-z0-9_.-]+==' requirements.lock | sed 's/ .*//' > .lock-venv/pins.txt
	.lock-venv/bin/uv pip compile --quiet serve/requirements-serve.in --generate-hashes $(LOCK_PLATFORM) \
		--constraint .lock-venv/pins.txt --custom-compile-command "make lock" --output-file serve/requirements-serve.txt
	.lock-venv/bin/uv pip compile --quiet serve/requirements-mlflow.in --generate-hashes $(LOCK_PLATFORM) \
		--constraint .lock-venv/pins.txt --custom-compile-command "make lock" --output-file serve/requirements-mlflow.txt
	rm -rf .lock-venv

fetch_data: setup ## stage: get Kvasir-SEG and verify every file
	dvc repro $@

validate_data: setup ## stage: schema checks -> reports/data_validation.json
	dvc repro $@

make_splits: setup ## stage: grouped 70/15/15 split -> data/splits/*.csv
	dvc repro $@

preprocess: setup ## stage: resize and cache at the training size -> data/processed
	dvc repro $@

train: setup ## stage: train the U-Net -> models/best.pt (MLflow experiment polyp-seg)
	dvc repro $@

.PHONY: bench-train-step
bench-train-step: setup ## ms per image of a training step: full vs frozen early stages vs torch.compile -> reports/bench/train_step.json
	$(PY) bin/bench_train_step.py --conf conf/bench_train_step.yaml

evaluate: setup ## stage: metrics, plots, overlays -> reports/eval/index.html
	dvc repro $@

drift_reference: setup ## stage: image + model-side features of the val images -> reports/drift/reference.csv
	dvc repro $@

.PHONY: drift-report
drift-report: setup ## drift report: shadow/ (or CURRENT=DIR -> reports/drift-<name>/) vs the val reference -> reports/drift/index.html, drift.json
	$(PY) bin/drift_report.py --conf conf/drift_report.yaml $(if $(CURRENT),--current $(CURRENT))

smoke: data ## train and evaluate on 16 images in a few minutes (conf/smoke/)
	$(PY) bin/train.py --conf conf/smoke/train.yaml
	$(PY) bin/evaluate.py --conf conf/smoke/evaluate.yaml

data: setup ## fetch, validate, split and preprocess the data (dvc repro preprocess)
	dvc repro preprocess

.PHONY: finetune
finetune: data ## fine-tune on your folder DATA=DIR NAME=NAME [BASE=models:/M@alias] [REGISTER=1 [FORCE=1]] -> models/finetune/NAME, reports/finetune/NAME
	@test -n "$(DATA)" -a -n "$(NAME)" || { echo "finetune: give DATA=DIR NAME=NAME (docs/own_data.md)"; exit 2; }
	$(PY) bin/finetune.py --conf conf/finetune.yaml --set 'data="$(DATA)"' --set 'name="$(NAME)"' \
		$(if $(BASE),--set 'base="$(BASE)"') $(if $(REGISTER),--set register=true) $(if $(FORCE),--set force=true)

.PHONY: shifted-source
shifted-source: fetch_data ## own-data demo: train split under a colour/size/format shift [LAYOUT=folder|folder-nested|nnunet] [OUT=DIR] [FORCE=1] -> data/own/kvasir-shifted
	$(PY) bin/shift_source.py --conf conf/shift_source.yaml $(if $(LAYOUT),--set layout=$(LAYOUT)) \
		$(if $(OUT),--set out_dir=$(OUT)) $(if $(FORCE),--force)

all: setup ## run the whole pipeline (dvc repro)
	dvc repro

.PHONY: quality-trend
quality-trend: setup ## test Dice/IoU over the registered versions, regressions flagged -> reports/trend/index.html
	$(PY) bin/quality_trend.py --conf conf/quality_trend.yaml

lint: pre-commit promtool k8s-check ## pre-commit hooks (ruff, YAML/JSON, actionlint, hadolint), bash -n, promtool, k8s manifests
	for f in serve/image.sh bin/monitor.sh; do bash -n $$f || exit 1; done

pre-commit: setup ## run every .pre-commit-config.yaml hook on all files, offline from .venv
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

format: setup ## apply ruff fixes and formatting
	ruff check --fix .
	ruff format .

test-fast: setup ## unit tests only (seconds)
	$(PY) -m pytest -q -m "not integration"

test: setup ## the whole test suite, integration tests included
	$(PY) -m pytest -q

serve: setup ## gunicorn on 127.0.0.1:$(PORT): models/model.onnx, or MODEL_URI=models:/NAME@ALIAS (staging fallback)
	POLYPSEG_BIND=127.0.0.1:$(PORT) POLYPSEG_MODEL_URI=$(MODEL_URI) POLYPSEG_ALLOW_STAGING=1 \
		MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns.db} PYTHONPATH=$(CURDIR) \
		$(VENV)/bin/gunicorn -c serve/gunicorn.conf.py 'serve.app:get_app()'

ci: lint data smoke smoke-registry test ci-image ## what CI runs: lint, data, smoke train/eval/export/register, all tests, container

# The container's /metrics after the smoke requests is kept as reports/metrics-snapshot.prom (and its names checked).
ci-image: ## build the serving image with the smoke model, test it, and bring up the compose file (part of make ci)
	POLYPSEG_MODEL_DIR=$(CURDIR)/models/smoke $(MAKE) --no-print-directory image image-test compose-test \
		METRICS_SNAPSHOT=reports/metrics-snapshot.prom

ci-cold: ## ci-image with an empty podman storage and no base image (what a never-used machine does)
	POLYPSEG_MODEL_DIR=$(CURDIR)/models/smoke $(MAKE) --no-print-directory image-cold

include serve/serve.mk packaging.mk release.mk scale.mk serve/monitoring/monitoring.mk serve/k8s/k8s.mk

clean: ## remove generated outputs (keeps .venv, data/raw and committed splits)
	rm -rf data/processed reports models mlartifacts mlruns.db .pytest_cache .ruff_cache
