# Release engineering: the steps of .github/workflows/{pull-request,main,release}.yml, each runnable
# here. Included by the top-level Makefile (which defines PY and VENV). NOT FOR CLINICAL USE.

BASE      ?= origin/main  # dvc-diff: the revision to compare with (the PR's base branch)
SUMMARY   ?= reports/dvc-diff/summary.md  # dvc-diff: Markdown out ($GITHUB_STEP_SUMMARY in a workflow)
REGISTRY  ?=  # image-push: e.g. ghcr.io/owner/polypseg
VERSION   ?= $(shell git describe --tags --always --dirty)
GHCR_USER ?=  # image-push: registry login name; the token comes from $GHCR_TOKEN
SHA       ?=  # main-run-artifact: the commit whose main-workflow run holds the registry state
SBOM      := reports/sbom/serve-image.cdx.json

.PHONY: smoke-export dvc-diff audit sbom image-push registry-state main-run-artifact release-assets

smoke-export: setup ## PR check: export + PyTorch/ONNX parity (5 samples) of the smoke model, tracked on a throw-away MLflow server; no registry writes
	@test -f models/smoke/best.pt || { echo "smoke-export: models/smoke/best.pt is missing; run make smoke"; exit 1; }
	dir=$$(mktemp -d -t polypseg-mlflow-XXXXXX) && \
	PY=$(PY) MLFLOW=$(VENV)/bin/mlflow bin/mlflow_server.sh run $$dir -- \
		$(PY) bin/export.py --conf conf/smoke/export.yaml; rc=$$?; rm -rf $$dir; exit $$rc

dvc-diff: setup ## dvc params/metrics diff vs BASE as Markdown -> SUMMARY; dvc plots diff as an offline page -> reports/dvc-diff/plots
	mkdir -p reports/dvc-diff $(dir $(SUMMARY))
	{ echo "### Metrics: workspace vs $(BASE)"; dvc metrics diff --md --all $(BASE); echo; \
	  echo "### Params: workspace vs $(BASE)"; dvc params diff --md $(BASE); echo; \
	  echo "Plots: the dvc-plots-diff artifact (reports/dvc-diff/plots/index.html)."; } >> $(SUMMARY)
	$(PY) bin/plots_page.py --diff $(BASE) --out reports/dvc-diff/plots --no-browser
	@echo "dvc-diff: $(SUMMARY), reports/dvc-diff/plots/index.html"

audit: setup ## pip-audit of requirements.lock and the image's requirements; exit 3 "NOT AUDITED" when it could not ask PyPI
	$(PY) bin/audit.py --out reports/audit.json

sbom: ## CycloneDX SBOM of the serving image's Python environment (pip freeze inside the image) -> reports/sbom/
	POLYPSEG_IMAGE=$(SERVE_IMAGE) SBOM=$(SBOM) PY=$(PY) serve/image.sh sbom

image-push: image ## push the serving image as REGISTRY:VERSION and REGISTRY:sha-<commit> (login: GHCR_USER, $$GHCR_TOKEN)
	@test -n "$(REGISTRY)" || { echo "image-push: set REGISTRY=ghcr.io/<owner>/<name>"; exit 1; }
	POLYPSEG_IMAGE=$(SERVE_IMAGE) REGISTRY=$(REGISTRY) GHCR_USER=$(GHCR_USER) PY=$(PY) \
		TAGS="$(VERSION) sha-$$(git rev-parse --short=12 HEAD)" serve/image.sh push

registry-state: setup ## the registered model's versions, aliases, runs and tags as JSON -> reports/registry-state.json
	$(PY) bin/registry_state.py --conf conf/register.yaml

main-run-artifact: ## download the main workflow's artifact for commit SHA into DIR (needs gh and GH_TOKEN)
	@test -n "$(SHA)" -a -n "$(DIR)" || { echo "main-run-artifact: set SHA=<commit> DIR=<folder>"; exit 1; }
	run=$$(gh run list --workflow main.yml --commit "$(SHA)" --status success --limit 1 --json databaseId --jq '.[0].databaseId'); \
	test -n "$$run" || { echo "main-run-artifact: no successful main run for $(SHA)"; exit 1; }; \
	gh run download "$$run" --name "pipeline-$(SHA)" --dir "$(DIR)"

release-assets: ## GitHub release VERSION with the evaluation report, model card and SBOM attached (needs gh)
	tar -czf reports/evaluation-report-$(VERSION).tar.gz -C reports eval
	gh release create "$(VERSION)" --verify-tag --title "polypseg $(VERSION)" \
		--notes "Research baseline, NOT FOR CLINICAL USE. Gates: reports/gates.json of the main run." \
		reports/evaluation-report-$(VERSION).tar.gz docs/model_card.md $(SBOM)

.PHONY: diagram graphviz
diagram: graphviz ## render docs/architecture.dot (the system diagram's source) to docs/architecture.svg
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg

graphviz: ## install Debian graphviz (dot) for the diagram and its test when it is missing (apt-get)
	@command -v dot >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz; }

.PHONY: plots
plots: setup chromium ## dvc plots show as an offline page, checked in headless Chromium -> reports/plots/{index.html,plots.png}
	$(PY) bin/plots_page.py --out reports/plots
