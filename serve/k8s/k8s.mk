# Kubernetes manifest checks, included by the Makefile. Offline: no cluster, no API server.
# kubectl is not in Debian's own archive at a usable version (bookworm's kubernetes-client is 1.20, whose
# kustomize v2 cannot read these kustomizations): it comes from the Kubernetes apt repository.
K8S_DIRS := serve/k8s/base $(patsubst %/kustomization.yaml,%,$(sort $(wildcard serve/k8s/overlays/*/kustomization.yaml)))
K8S_KUBECTL_HINT := kubectl >= 1.27 (kustomize v5; tested with 1.32) is needed: install it from the Kubernetes \
	project's apt repository ('Install kubectl on Linux' in the Kubernetes docs) or Google Cloud SDK's kubectl package

.PHONY: k8s-check kubectl
kubectl: ## install kubectl from an apt source that has it (Google Cloud SDK's or the Kubernetes project's) when missing
	@command -v kubectl >/dev/null || { [ "$$(id -u)" = 0 ] && apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]' \
		&& { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubectl; }; } \
		|| { echo "k8s-check: kubectl is missing. $(K8S_KUBECTL_HINT)" >&2; exit 1; }

k8s-check: setup kubectl ## kubectl kustomize renders serve/k8s base and overlays; kubernetes-validate accepts every object
	@set -e; for dir in $(K8S_DIRS); do \
		echo "k8s-check: kubectl kustomize $$dir"; \
		rendered=$$(kubectl kustomize "$$dir") \
			|| { echo "k8s-check: $$dir does not render (above). An older kubectl fails here too: $(K8S_KUBECTL_HINT)" >&2; exit 1; }; \
		printf '%s\n' "$$rendered" | $(PY) bin/k8s_validate.py --conf conf/k8s_validate.yaml -; \
	done
