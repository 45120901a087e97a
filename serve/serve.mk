# Serving targets, included by the top-level Makefile (which defines PY and VENV).
# NOT FOR CLINICAL USE.

SERVE_IMAGE ?= localhost/polypseg-serve:latest
BENCH_ARGS  ?=  # e.g. --set standin=true (tiny stand-in model) --set requests=100
SERVE_TESTS := tests/test_rle.py tests/test_image.py tests/test_image_bombs.py tests/test_serve_app.py tests/test_serve_fuzz.py \
	tests/test_serve_hardening.py tests/test_serve_predictor.py tests/test_serve_settings.py tests/test_serve_batch.py

.PHONY: test-serve test-serve-gunicorn test-browser chromium container-tools image-base image \
	image-test image-cold image-clean bench-serve bench-fuzz bench-batch-requests

test-serve: ## serving fast tests: RLE, image checks, API, fuzz (seconds)
	PYTHONPATH=$(CURDIR) $(PY) -m pytest -q $(SERVE_TESTS)

test-serve-gunicorn: ## real gunicorn: workers, metrics, registry load and outages, slow clients, killed worker
	PYTHONPATH=$(CURDIR) $(PY) -m pytest -q tests/test_serve_gunicorn.py tests/test_serve_resilience.py

test-browser: chromium ## demo page in headless chromium -> reports/browser/demo.png
	PYTHONPATH=$(CURDIR) $(PY) -m pytest -q tests/test_browser.py

chromium: ## install Debian chromium for the browser test when it is missing (apt-get)
	@test -x /usr/bin/chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

container-tools: ## install podman, buildah, runc, debootstrap and podman-compose when missing (apt-get)
	@command -v podman >/dev/null && command -v debootstrap >/dev/null && command -v podman-compose >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah runc debootstrap podman-compose; }

image-base: container-tools ## build the local base image localhost/debian-py311:bookworm (no registry needed)
	serve/image.sh base

image: container-tools ## build the serving image with podman (BASE_IMAGE=..., POLYPSEG_STANDIN_MODEL=1 without a model)
	POLYPSEG_IMAGE=$(SERVE_IMAGE) PY=$(PY) serve/image.sh build

image-cold: ## image + image-test in an empty throw-away podman storage: proves a never-built machine works
	@dir=$$(mktemp -d /var/tmp/polypseg-podman-cold.XXXXXX); start=$$(date +%s); \
	echo "image-cold: empty podman storage $$dir"; \
	POLYPSEG_PODMAN_DIR=$$dir $(MAKE) --no-print-directory image image-test; rc=$$?; \
	echo "image-cold: exit $$rc after $$(( $$(date +%s) - start )) s (base, build and test)"; \
	rm -rf $$dir; exit $$rc

image-clean: ## delete the project's podman storage (.cache/podman): the next build starts cold
	rm -rf .cache/podman

image-test: ## run the image, wait for /readyz, POST a real image, check it [METRICS_SNAPSHOT=file: save /metrics]
	POLYPSEG_IMAGE=$(SERVE_IMAGE) PY=$(PY) METRICS_SNAPSHOT=$(METRICS_SNAPSHOT) serve/image.sh test

bench-serve: ## load test (1/4/16 clients, 2 sizes) + slow-client and overload scenarios -> reports/bench/serve.json
	PYTHONPATH=$(CURDIR) $(PY) bin/bench_serve.py --conf conf/bench_serve.yaml $(BENCH_ARGS)

bench-batch-requests: ## the same images one per request vs in batches of 4 and 8 to a real gunicorn -> reports/bench/batch_requests.json
	PYTHONPATH=$(CURDIR) $(PY) bin/bench_batch_requests.py --conf conf/bench_batch_requests.yaml

bench-fuzz: ## 10,000 fuzzed /predict requests to a real gunicorn (mutations + bomb families), 0 5xx -> reports/bench/fuzz.json
	POLYPSEG_FUZZ_HTTP=1 POLYPSEG_FUZZ_CASES=10000 POLYPSEG_FUZZ_REPORT=reports/bench/fuzz.json PYTHONPATH=$(CURDIR) \
		$(PY) -m pytest -q tests/test_serve_fuzz.py

.PHONY: image-mlflow compose-test
image-mlflow: container-tools ## build the compose file's MLflow server image (pinned serve/requirements-mlflow.txt) with podman
	POLYPSEG_IMAGE=$(SERVE_IMAGE) PY=$(PY) serve/image.sh mlflow

compose-test: image-mlflow ## after make image: serve/docker-compose.yml (API + MLflow) up with podman-compose, predict, check MLflow, remove
	POLYPSEG_IMAGE=$(SERVE_IMAGE) PY=$(PY) serve/image.sh compose-test
