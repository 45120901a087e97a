#!/usr/bin/env bash
# The API and a Prometheus scraping it, both on loopback (`make monitor`); Ctrl-C stops both.
#
# Usage: PORT=8000 PROM_PORT=9090 [SCRAPE_INTERVAL=5s] [POLYPSEG_MONITOR_DIR=dir] bin/monitor.sh
#
# Prometheus runs serve/monitoring/prometheus.yml, copied with the API's port and SCRAPE_INTERVAL in
# place of its defaults into POLYPSEG_MONITOR_DIR (default: a temporary directory, removed on exit)
# with the rules beside it, on a throw-away TSDB there. The API is gunicorn as `make serve` runs it,
# with the model the environment names (POLYPSEG_MODEL_PATH or POLYPSEG_MODEL_URI).
# tests/test_monitoring.py runs this script.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
PROMETHEUS=${PROMETHEUS:-prometheus}
PORT=${PORT:-8000}
PROM_PORT=${PROM_PORT:-9090}
SCRAPE_INTERVAL=${SCRAPE_INTERVAL:-5s}  # also the rule evaluation interval
START_TIMEOUT_S=${POLYPSEG_MONITOR_TIMEOUT_S:-90}  # seconds for both to answer

command -v "$PROMETHEUS" >/dev/null || { echo "monitor: $PROMETHEUS not found (make prometheus installs it)" >&2; exit 1; }
if [[ -n ${POLYPSEG_MONITOR_DIR:-} ]]; then
  work=$POLYPSEG_MONITOR_DIR keep=1
  mkdir -p "$work"
else
  work=$(mktemp -d -t polypseg-monitor-XXXXXX) keep=0
fi

# One source: the tracked config, with only the target and the intervals replaced; a config whose
# defaults no longer read as below would be run unchanged against the wrong port, so check.
config=$REPO/serve/monitoring/prometheus.yml
rm -rf "$work/rules" && cp -r "$REPO/serve/monitoring/rules" "$work/rules"
sed -e "s|\"127.0.0.1:8000\"|\"127.0.0.1:$PORT\"|" \
  -e "s|scrape_interval: 15s|scrape_interval: $SCRAPE_INTERVAL|" \
  -e "s|evaluation_interval: 15s|evaluation_interval: $SCRAPE_INTERVAL|" "$config" >"$work/prometheus.yml"
for want in "\"127.0.0.1:$PORT\"" "scrape_interval: $SCRAPE_INTERVAL" "evaluation_interval: $SCRAPE_INTERVAL"; do
  grep -qF "$want" "$work/prometheus.yml" || { echo "monitor: could not set $want in a copy of $config" >&2; exit 1; }
done

api=
prom=
stop() {
  trap - EXIT INT TERM
  [[ -n $api ]] && kill -TERM "$api" 2>/dev/null || true
  [[ -n $prom ]] && kill -TERM "$prom" 2>/dev/null || true
  wait 2>/dev/null
  ((keep)) || rm -rf "$work"
  echo "monitor: stopped" >&2
}
trap stop EXIT
trap 'exit 130' INT TERM

cd "$REPO"
POLYPSEG_BIND=127.0.0.1:$PORT PYTHONPATH=$REPO \
  "$PY" -m gunicorn -c serve/gunicorn.conf.py 'serve.app:get_app()' </dev/null &
api=$!
"$PROMETHEUS" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$work/prometheus.log" 2>&1 </dev/null &
prom=$!

# /healthz, not /readyz: with no model the API is still up, and Prometheus shows why (an alert).
t0=$SECONDS
until curl -fsS --max-time 2 "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 \
  && curl -fsS --max-time 2 "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1; do
  if ! kill -0 "$api" 2>/dev/null; then echo "monitor: the API exited during start-up" >&2; exit 1; fi
  if ! kill -0 "$prom" 2>/dev/null; then
    echo "monitor: Prometheus exited during start-up:" >&2
    tail -n 20 "$work/prometheus.log" >&2
    exit 1
  fi
  ((SECONDS - t0 < START_TIMEOUT_S)) || { echo "monitor: not up after $START_TIMEOUT_S s" >&2; exit 1; }
  sleep 0.2
done
echo "monitor: API http://127.0.0.1:$PORT/ (metrics at /metrics)," \
  "Prometheus http://127.0.0.1:$PROM_PORT/ (alerts at /alerts, targets at /targets)," \
  "scraping every $SCRAPE_INTERVAL; Prometheus log $work/prometheus.log; Ctrl-C stops both"

wait -n "$api" "$prom" || true
echo "monitor: $(kill -0 "$api" 2>/dev/null && echo Prometheus || echo the API) exited; stopping" >&2
exit 1
