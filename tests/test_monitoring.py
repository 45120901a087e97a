"""Monitoring: a real Prometheus scraping a real gunicorn (bin/monitor.sh, what `make monitor` runs),
the alert rules' unit tests (promtool), the Grafana dashboard's queries against that Prometheus, and
the drift baseline in the rules against reports/drift/reference.csv.
"""

from __future__ import annotations

import csv
import functools
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from serve.metrics import DURATION_BUCKETS_S, SHARE_BUCKETS
from tests.support import harness
from tests.support.harness import free_port, sample_image_bytes
from tests.support.tinymodel import TINY_VERSION, write_tiny_model

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "serve" / "monitoring"
RULES = MONITORING / "rules" / "polypseg.yml"
RULE_TESTS = MONITORING / "tests" / "polypseg_test.yml"
DASHBOARD = MONITORING / "grafana" / "polypseg.json"
REFERENCE = REPO / "reports" / "drift" / "reference.csv"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
MISSING = "{} is not installed (make prometheus, part of make setup, installs it)"
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason=MISSING.format("prometheus"))


def real_prometheus(test):
    """Starts real processes (excluded from make test-fast); skipped only without the binary."""
    return pytest.mark.integration(needs_prometheus(test))


needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=MISSING.format("promtool"))
SCRAPE_S = 1.0  # the test Prometheus' scrape and rule evaluation interval
# What the dashboard's Grafana variables stand for here: a 1 s scrape makes Grafana's $__rate_interval 4 s,
# too short for a rate over a burst of test requests, so a minute is used.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$job": "polypseg"}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules() if "alert" in rule}


# ---------------------------------------------------------------------------------------------
# The rules on their own: promtool, one source for the buckets, the runbook, the baseline


@needs_promtool
def test_promtool_checks_the_config_and_the_rules_and_their_unit_tests_pass():
    for args in (
        ["check", "config", str(MONITORING / "prometheus.yml")],
        ["check", "rules", str(RULES)],
        ["test", "rules", str(RULE_TESTS)],
    ):
        result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_every_alert_has_a_firing_unit_test_and_a_runbook_entry():
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alert_names() - tested == set(), "alerts without a unit test where they fire"
    runbook = (MONITORING / "README.md").read_text()
    headings = set(re.findall(r"^### (\w+)$", runbook, re.M))
    assert alert_names() - headings == set(), "alerts without a `### Name` section in the runbook"
    for rule in rules():
        if "alert" in rule:
            assert rule["annotations"]["runbook"].endswith("#" + rule["alert"].lower())


def test_rules_select_bucket_edges_the_server_has():
    """A `le` in the rules that the server does not emit would select nothing, silently."""
    edges = {floatToGoString(b) for b in (*DURATION_BUCKETS_S, *SHARE_BUCKETS)} | {"+Inf"}
    text = RULES.read_text()
    used = set(re.findall(r'le=~?"([^"]+)"', text)) | set(re.findall(r'le: "([^"]+)"', text))
    used = {edge for pattern in used for edge in pattern.split("|")}
    assert used and used <= edges, used - edges
    assert "0.15" in {floatToGoString(b) for b in DURATION_BUCKETS_S}  # the SLO is read at a bucket edge


def reference_in_rules() -> tuple[float, dict[str, float]]:
    """(median, {le: CDF}) of the validation baseline as written in the rules."""
    median, cdf = None, {}
    for rule in rules():
        value = re.fullmatch(r"vector\(([0-9.]+)\)", str(rule.get("expr", "")).strip())
        if rule.get("record") == "polypseg:reference_predicted_polyp_share:median":
            median = float(value[1])
        elif rule.get("record") == "polypseg:reference_predicted_polyp_share_detected:cdf":
            cdf[rule["labels"]["le"]] = float(value[1])
    assert median is not None and cdf, f"no reference recording rules in {RULES}"
    return median, cdf


@pytest.mark.skipif(
    not REFERENCE.is_file(), reason="needs reports/drift/reference.csv (the drift reference stage, make all)"
)
def test_drift_baseline_in_the_rules_matches_reference_csv():
    with REFERENCE.open() as f:
        shares = np.array([float(row["predicted_polyp_share"]) for row in csv.DictReader(f)])
    assert shares.size, f"{REFERENCE} has no rows"
    median, cdf = reference_in_rules()
    detected = shares[shares > 0.01]  # as the rules: shares above the 0.01 edge (min_area_fraction)
    want = {"median": float(np.median(shares))}
    want |= {le: float((detected <= float(le)).mean()) for le in cdf}
    have = {"median": median, **cdf}
    wrong = {k: (have[k], round(want[k], 4)) for k in want if abs(have[k] - want[k]) > 1e-3}
    assert not wrong, (
        f"the validation baseline in {RULES.relative_to(REPO)} disagrees with {REFERENCE.relative_to(REPO)} "
        f"({shares.size} rows, {detected.size} above 0.01) as {{name: (rules, reference.csv)}}: {wrong}; "
        "after a new model, put the reference.csv values (4 decimals) into the rules"
    )


# ---------------------------------------------------------------------------------------------
# A real Prometheus scraping a real gunicorn, started as `make monitor` starts them


class Stack:
    def __init__(self, proc: subprocess.Popen, api_port: int, prom_port: int, log: Path):
        self.proc, self.api_port, self.prom_port, self.log = proc, api_port, prom_port, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self, path: str, query: dict) -> dict:
        url = f"http://127.0.0.1:{self.prom_port}{path}?{urllib.parse.urlencode(query, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:  # 400/422: Prometheus says why in the body
            return json.loads(err.read() or b"{}") | {"http_status": err.code}

    def query(self, expr: str) -> list[dict]:
        answer = self.api("/api/v1/query", {"query": expr})
        assert answer.get("status") == "success", f"{expr}: {answer}"
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: more than one series: {result}"
        return float(result[0]["value"][1]) if result else None

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in self.query(expr)}

    def wait_for(self, expr: str, expected: float, timeout: float = 20.0, settle: bool = True) -> None:
        """Poll until a scrape after the requests has landed; `settle`: then require the value to stay put."""
        deadline = time.monotonic() + timeout
        while (got := self.value(expr)) != expected:
            assert time.monotonic() < deadline, f"{expr} = {got} after {timeout} s, expected {expected}"
            time.sleep(SCRAPE_S / 4)
        if settle:
            time.sleep(2.5 * SCRAPE_S)  # two more scrapes: nothing counted twice or late
            assert self.value(expr) == expected, expr


def api_counts(port: int) -> dict[str, float]:
    """/predict requests by status in the API's own /metrics: what Prometheus should report."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        families = list(text_string_to_metric_families(conn.getresponse().read().decode()))
    finally:
        conn.close()
    counts: dict[str, float] = {}
    for sample in (s for family in families for s in family.samples):
        if sample.name == "polypseg_requests_total" and sample.labels["route"] == "/predict":
            counts[sample.labels["status"]] = counts.get(sample.labels["status"], 0) + sample.value
    return counts


post_predict = functools.partial(harness.post_predict, timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if PROMETHEUS is None:
        pytest.skip(MISSING.format("prometheus"))
    tmp = tmp_path_factory.mktemp("monitor")
    api_port, prom_port = free_port(), free_port()
    stores = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "POLYPSEG_MODEL_URI")
    env = {k: v for k, v in os.environ.items() if k not in stores} | {
        "PY": sys.executable,
        "PORT": str(api_port),
        "PROM_PORT": str(prom_port),
        "SCRAPE_INTERVAL": f"{SCRAPE_S:.0f}s",
        "POLYPSEG_MONITOR_DIR": str(tmp / "work"),
        "POLYPSEG_MODEL_PATH": str(write_tiny_model(tmp / "model", size=64)),
        "POLYPSEG_WORKERS": "2",  # counts and gauges are aggregated over both workers' files
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "multiproc"),
    }
    log = tmp / "monitor.log"
    with log.open("wb") as out:
        # A session of its own: the test's "Ctrl-C" reaches the script, gunicorn and Prometheus, as a
        # terminal's reaches its foreground process group.
        proc = subprocess.Popen(
            [str(REPO / "bin" / "monitor.sh")],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(proc, api_port, prom_port, log)
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C stops both" not in stack.output():
            assert proc.poll() is None, (
                f"bin/monitor.sh exited with {proc.returncode}:\n{stack.output()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"bin/monitor.sh not up after 60 s:\n{stack.output()[-3000:]}"
            time.sleep(0.2)
        yield stack
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@real_prometheus
def test_monitor_prints_both_urls(stack):
    line = next(line for line in stack.output().splitlines() if "Ctrl-C stops both" in line)
    assert f"http://127.0.0.1:{stack.api_port}/" in line and f"http://127.0.0.1:{stack.prom_port}/" in line


@real_prometheus
def test_prometheus_reports_the_requests_and_errors_sent(stack):
    stack.wait_for('up{job="polypseg"}', 1, settle=False)
    total = 'sum(polypseg_requests_total{route="/predict"}) or vector(0)'
    sent = api_counts(stack.api_port)  # what other tests sent before, once Prometheus has it too
    stack.wait_for(total, sum(sent.values()), settle=False)
    image = sample_image_bytes()
    sent = {"200": 0, "400": 0, "415": 0} | sent
    # Two batches with a scrape between them, so every series has an earlier sample and rate() > 0.
    for good, not_image, not_supported in ((6, 2, 0), (6, 1, 2)):
        statuses = [post_predict(stack.api_port, image) for _ in range(good)]
        statuses += [post_predict(stack.api_port, b"not an image at all") for _ in range(not_image)]
        statuses += [post_predict(stack.api_port, image, "text/plain") for _ in range(not_supported)]
        assert statuses == [200] * good + [400] * not_image + [415] * not_supported
        sent["200"] += good
        sent["400"] += not_image
        sent["415"] += not_supported
        stack.wait_for(total, sum(sent.values()))

    assert stack.by('sum by (status) (polypseg_requests_total{route="/predict"})', "status") == sent
    errors = {k: v for k, v in sent.items() if int(k) >= 400}
    assert stack.by('sum by (status) (polypseg_errors_total{route="/predict"})', "status") == errors
    assert stack.value('sum(polypseg_request_duration_seconds_count{route="/predict"})') == sum(sent.values())
    assert stack.value("sum(polypseg_inference_duration_seconds_count)") == sent["200"]
    assert stack.value("sum(polypseg_predicted_polyp_share_count)") == sent["200"]
    request_rate = stack.value('sum(rate(polypseg_requests_total{route="/predict"}[1m]))')
    error_rate = stack.value('sum(rate(polypseg_errors_total{route="/predict"}[1m]))')
    assert request_rate > error_rate > 0


@real_prometheus
def test_prometheus_sees_the_model_and_the_in_flight_gauge(stack):
    assert stack.value('max(polypseg_model_loaded{job="polypseg"})') == 1
    info = stack.query('polypseg_model_info{job="polypseg"} == 1')
    assert [r["metric"]["model_version"] for r in info] == [TINY_VERSION]
    assert stack.value('sum(polypseg_in_flight_requests{job="polypseg"})') == 1  # the scrape itself


@real_prometheus
def test_prometheus_loads_every_rule_and_a_healthy_api_raises_no_alert(stack):
    assert post_predict(stack.api_port, sample_image_bytes()) == 200  # traffic: NoTraffic stays quiet
    stack.wait_for('sum(polypseg_requests_total{route="/predict"}) > bool 0', 1, settle=False)
    deadline = time.monotonic() + 15
    while True:  # "unknown" until a rule's first evaluation
        loaded = [r for g in stack.api("/api/v1/rules", {})["data"]["groups"] for r in g["rules"]]
        unhealthy = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
        if not unhealthy or time.monotonic() > deadline:
            break
        time.sleep(SCRAPE_S)
    assert not unhealthy
    assert {r["name"] for r in loaded if r["type"] == "alerting"} == alert_names()
    time.sleep(2 * SCRAPE_S)
    assert stack.api("/api/v1/alerts", {})["data"]["alerts"] == []  # neither pending nor firing


def dashboard_targets(panels: list[dict]) -> list[tuple[str, dict]]:
    found = []
    for panel in panels:
        found += [(panel["title"], target) for target in panel.get("targets", [])]
        found += dashboard_targets(panel.get("panels", []))  # panels inside collapsed rows
    return found


def substitute(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def test_dashboard_is_an_importable_grafana_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] and dashboard["title"]
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    targets = dashboard_targets(dashboard["panels"])
    for title, target in targets:
        assert target["datasource"]["uid"] == "${DS_PROMETHEUS}" and target["refId"], title
    exprs = " ".join(target["expr"] for _, target in targets)
    for metric in (  # the panels: rate, errors, latency, in flight, model, predicted share
        "polypseg_requests_total",
        "polypseg_request_duration_seconds_bucket",
        "polypseg_in_flight_requests",
        "polypseg_model_info",
        "polypseg_model_loaded",
        "polypseg_predicted_polyp_share_bucket",
        "polypseg:reference_predicted_polyp_share:median",
    ):
        assert metric in exprs, metric


@real_prometheus
def test_every_dashboard_query_runs_on_the_real_prometheus(stack):
    assert post_predict(stack.api_port, sample_image_bytes()) == 200  # data for every panel
    stack.wait_for("sum(polypseg_predicted_polyp_share_count) > bool 0", 1, settle=False)
    dashboard = json.loads(DASHBOARD.read_text())
    pending = {
        f"{title} [{t['refId']}]": substitute(t["expr"])
        for title, t in dashboard_targets(dashboard["panels"])
    }
    deadline = time.monotonic() + 15
    while pending and time.monotonic() < deadline:  # recording rules appear after their first evaluation
        pending = {name: expr for name, expr in pending.items() if not stack.query(expr)}
        time.sleep(SCRAPE_S / 2)
    assert not pending, f"dashboard queries with no data: {pending}"
    for variable in dashboard["templating"]["list"]:
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"]).groups()
        answer = stack.api(f"/api/v1/label/{label}/values", {"match[]": metric})
        assert GRAFANA_VARIABLES["$" + variable["name"]] in answer["data"], answer


@real_prometheus
def test_ctrl_c_stops_the_api_and_prometheus(stack):  # last in the file: it ends the module's stack
    os.killpg(stack.proc.pid, signal.SIGINT)  # what Ctrl-C in `make monitor`'s terminal sends
    assert stack.proc.wait(timeout=30) == 130
    for port in (stack.api_port, stack.prom_port):
        with pytest.raises(OSError):
            http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # nothing left in the group: no orphaned worker
        os.killpg(stack.proc.pid, 0)
