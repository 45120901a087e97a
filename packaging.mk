# Packaging targets: ONNX export, MLflow registry, release gates, promotion, CPU benchmark.
# Included by the top-level Makefile (which defines PY and VENV). NOT FOR CLINICAL USE.

APPROVER         ?=  # who approves a promotion or a rollback: make promote APPROVER=alice
ROLLBACK_REASON  ?=
PACKAGING_TESTS  := tests/test_export.py tests/test_registry.py tests/test_gates.py tests/test_quantize.py \
                    tests/test_bench_latency.py

.PHONY: export quantize register gates promote rollback bench smoke-registry mlflow-ephemeral test-packaging

export: setup ## stage: models/best.pt -> models/model.onnx + model.json, parity, MLflow ONNX + pyfunc models
	dvc repro export

quantize: setup ## stage: models/model.onnx -> models/int8 (INT8 model + model.json), Dice fp32 vs INT8 on val
	dvc repro quantize

register: setup ## stage: the exported model's run -> polyp-seg-unet version @staging (reports/register.json)
	dvc repro register

gates: setup reports/bench/latency.json ## release gates: test Dice, ONNX parity, signature + example, CPU p50 (exit 1 + table on failure)
	$(PY) bin/gates.py --conf conf/gates.yaml --out reports/gates.json

# The gates read the latency of the models they judge: measure again when a model is newer than the report.
reports/bench/latency.json: models/model.onnx models/int8/model.onnx conf/bench_latency.yaml
	$(MAKE) --no-print-directory bench

models/int8/model.onnx: models/model.onnx conf/quantize.yaml
	dvc repro quantize

promote: setup ## @staging -> @production after gates, needs APPROVER=name
	@test -n "$(APPROVER)" || { echo "promote: set APPROVER=<your name> (explicit approval)"; exit 1; }
	$(PY) bin/promote.py --conf conf/gates.yaml --approve --by "$(APPROVER)"

rollback: setup ## give @production back to the previous version, needs APPROVER=name [ROLLBACK_REASON=...]
	@test -n "$(APPROVER)" || { echo "rollback: set APPROVER=<your name>"; exit 1; }
	$(PY) bin/promote.py --conf conf/gates.yaml --rollback --by "$(APPROVER)" --reason "$(ROLLBACK_REASON)"

bench: setup quantize ## CPU latency: onnxruntime (fp32, INT8 from quantize) vs PyTorch eager -> reports/bench/latency.json
	PYTHONPATH=$(CURDIR) $(PY) bin/bench_latency.py --conf conf/bench_latency.yaml  # tests.support: the real gunicorn harness

mlflow-ephemeral: ## start a throw-away MLflow server in DIR (default /tmp/polypseg-mlflow); stop: bin/mlflow_server.sh stop DIR
	PY=$(PY) MLFLOW=$(VENV)/bin/mlflow bin/mlflow_server.sh start $(or $(DIR),/tmp/polypseg-mlflow)

smoke-registry: setup ## export + parity + register models/smoke/best.pt against an ephemeral MLflow server
	@test -f models/smoke/best.pt || { echo "smoke-registry: models/smoke/best.pt is missing; run make smoke"; exit 1; }
	dir=$$(mktemp -d -t polypseg-mlflow-XXXXXX) && \
	PY=$(PY) MLFLOW=$(VENV)/bin/mlflow bin/mlflow_server.sh run $$dir -- sh -c '\
		$(PY) bin/export.py --conf conf/smoke/export.yaml && \
		$(PY) bin/register.py --conf conf/smoke/register.yaml --by smoke-registry'; \
	rc=$$?; rm -rf $$dir; exit $$rc

test-packaging: setup ## export, registry, gates, quantize and bench tests (real onnxruntime and SQLite MLflow)
	$(PY) -m pytest -q $(PACKAGING_TESTS)
