#!/usr/bin/env bash
# An ephemeral MLflow tracking server (SQLite + local artifacts under DIR) for CI and smoke runs.
#
# Usage: bin/mlflow_server.sh start DIR          # prints the URL; writes DIR/{server.pid,url,server.log}
#        bin/mlflow_server.sh stop DIR           # stops the server started in DIR
#        bin/mlflow_server.sh run DIR -- CMD...  # start, run CMD with MLFLOW_TRACKING_URI set, always stop
#
# The server listens on 127.0.0.1 on a free port and answers /health after about 13 s (polled, not
# slept). It runs in its own process group so that stop ends it and its workers, and nothing else.
set -euo pipefail

MLFLOW=${MLFLOW:-.venv/bin/mlflow}
PY=${PY:-.venv/bin/python}
START_TIMEOUT_S=${MLFLOW_SERVER_TIMEOUT:-300}  # seconds to wait for /health (13 s idle; minutes on a busy host)

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local dir=$1 port url pid
  mkdir -p "$dir/artifacts"
  if [[ -f $dir/server.pid ]] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
    echo "mlflow_server: already running in $dir" >&2
    cat "$dir/url"
    return 0
  fi
  port=$(free_port)
  url="http://127.0.0.1:$port"
  # Job execution (GenAI jobs) would start seven more Python processes that nothing here uses.
  MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$MLFLOW" server \
    --backend-store-uri "sqlite:///$dir/mlflow.db" --default-artifact-root "$dir/artifacts" \
    --host 127.0.0.1 --port "$port" --workers 1 >"$dir/server.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/server.pid"
  local t0=$SECONDS
  while ((SECONDS - t0 < START_TIMEOUT_S)); do
    if curl -fsS --max-time 2 "$url/health" >/dev/null 2>&1; then
      echo "$url" >"$dir/url"
      echo "mlflow_server: $url up after $((SECONDS - t0)) s (store $dir)" >&2
      echo "$url"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "mlflow_server: server exited during start-up; last log lines:" >&2
      tail -n 20 "$dir/server.log" >&2
      rm -f "$dir/server.pid"
      return 1
    fi
    sleep 0.5
  done
  echo "mlflow_server: no /health answer within ${START_TIMEOUT_S} s; stopping it" >&2
  stop "$dir"
  return 1
}

stop() {
  local dir=$1 pid
  [[ -f $dir/server.pid ]] || { echo "mlflow_server: nothing running in $dir" >&2; return 0; }
  pid=$(cat "$dir/server.pid")
  # setsid made the server a process-group leader: signal the group (server + its workers).
  kill -TERM -- "-$pid" 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/server.pid" "$dir/url"
  echo "mlflow_server: stopped (pid $pid)" >&2
}

run() {
  local dir=$1
  shift
  [[ ${1:-} == "--" ]] && shift
  [[ $# -gt 0 ]] || { echo "mlflow_server: run needs a command after --" >&2; return 2; }
  local url
  url=$(start "$dir")
  trap 'stop "$dir"' EXIT INT TERM
  MLFLOW_TRACKING_URI=$url MLFLOW_DISABLE_TELEMETRY=true "$@"
}

case ${1:-} in
  start | stop | run)
    [[ $# -ge 2 ]] || { sed -n '4,6p' "$0" >&2; exit 2; }
    cmd=$1
    dir=$(realpath -m "$2")
    shift 2
    "$cmd" "$dir" "$@"
    ;;
  *)
    sed -n '2,6p' "$0" >&2
    exit 2
    ;;
esac
