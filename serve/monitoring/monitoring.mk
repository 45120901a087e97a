# Monitoring targets (Prometheus config, rules and their tests; make monitor), included by the Makefile.
MONITORING      := serve/monitoring
# make monitor: Prometheus' port on 127.0.0.1, and its scrape and rule evaluation interval (prometheus.yml
# keeps 15s for deployments).
PROM_PORT       ?= 9090
SCRAPE_INTERVAL ?= 5s

.PHONY: prometheus promtool monitor test-monitoring
prometheus: ## install Debian prometheus (prometheus, promtool) when missing (apt-get)
	@command -v promtool >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; }

promtool: prometheus ## promtool check config, check rules, test rules (serve/monitoring/)
	promtool check config $(MONITORING)/prometheus.yml
	promtool check rules $(MONITORING)/rules/*.yml
	promtool test rules $(MONITORING)/tests/*.yml

monitor: setup prometheus ## API on PORT (as make serve) + Prometheus on PROM_PORT (9090) scraping it, loopback; Ctrl-C stops both
	PORT=$(PORT) PROM_PORT=$(PROM_PORT) SCRAPE_INTERVAL=$(SCRAPE_INTERVAL) PY=$(PY) \
		POLYPSEG_MODEL_URI=$(MODEL_URI) POLYPSEG_ALLOW_STAGING=1 \
		MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns.db} bin/monitor.sh

test-monitoring: prometheus ## real Prometheus scraping a real gunicorn: counts, rules, dashboard queries, baseline
	PYTHONPATH=$(CURDIR) $(PY) -m pytest -q tests/test_monitoring.py
