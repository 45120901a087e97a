""".env.sample lists every environment variable the code reads: a new setting cannot stay undocumented."""

from __future__ import annotations

import re
import subprocess

from bin_helpers import ROOT

# Reads in Python: os.environ.get("X"), os.environ["X"] (not an assignment), getenv("X"), env.get("X"),
# setdefault("X"), "X" in os.environ, and any "POLYPSEG_..." literal (settings helpers take the name).
PY_READS = [
    r"""environ\.get\(\s*["']([A-Z][A-Z0-9_]+)["']""",
    r"""environ\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\](?!\s*=[^=])""",
    r"""getenv\(\s*["']([A-Z][A-Z0-9_]+)["']""",
    r"""\benv\.get\(\s*["']([A-Z][A-Z0-9_]+)["']""",
    r"""setdefault\(\s*["']([A-Z][A-Z0-9_]+)["']""",
    r"""["']([A-Z][A-Z0-9_]+)["']\s+in\s+os\.environ""",
    r"""["'](POLYPSEG_[A-Z0-9_]+)["']""",
]
# Reads in shell and Make: ${X:-default}, ${X}, printenv X for the project's own prefixes and tools.
SH_READS = [r"\$\{((?:POLYPSEG|MLFLOW|METRICS)_[A-Z0-9_]+)", r"printenv ((?:POLYPSEG|MLFLOW)_[A-Z0-9_]+)"]


def tracked(*patterns: str) -> list:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.split() if (ROOT / p).is_file()]


def names_read() -> dict[str, str]:
    """{variable: first file reading it} over bin/, lib/, serve/, tests/ and the shell/Make files."""
    found: dict[str, str] = {}
    for path in tracked("bin/*.py", "lib/*.py", "serve/*.py", "tests/*.py", "tests/support/*.py"):
        text = path.read_text()
        for pattern in PY_READS:
            for name in re.findall(pattern, text):
                found.setdefault(name, str(path.relative_to(ROOT)))
    for path in tracked("*.sh", "bin/*.sh", "serve/*.sh", "Makefile", "*.mk", "serve/*.mk"):
        for pattern in SH_READS:
            for name in re.findall(pattern, path.read_text()):
                found.setdefault(name, str(path.relative_to(ROOT)))
    for path in tracked("serve/docker-compose.yml"):  # compose interpolates ${NAME:-default}
        for name in re.findall(r"\$\{([A-Z][A-Z0-9_]+)", path.read_text()):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def listed() -> set[str]:
    lines = (ROOT / ".env.sample").read_text().splitlines()
    return {m.group(1) for line in lines if (m := re.match(r"([A-Z][A-Z0-9_]+)=", line))}


def test_every_variable_the_code_reads_is_listed():
    # Process plumbing the code only passes through, not settings a user chooses.
    plumbing = {"PATH", "HOME", "PYTHONPATH", "PYTHONHASHSEED", "ORT_DISABLE_TELEMETRY", "CONTAINERS_CONF"}
    missing = {name: where for name, where in names_read().items() if name not in listed() | plumbing}
    assert missing == {}, f"read by the code, missing from .env.sample: {missing}"


def test_the_scan_finds_known_reads():
    # The scan itself can fail: settings helpers, os.environ.get and shell defaults are all seen.
    found = names_read()
    for name in ("POLYPSEG_MAX_QUEUE", "MLFLOW_TRACKING_URI", "KVASIR_SEG_SOURCE", "POLYPSEG_PULL_TIMEOUT"):
        assert name in found, name


def test_every_listed_variable_is_read_somewhere():
    # The list does not keep variables nothing reads any more.
    stale = listed() - set(names_read()) - {"DVC_NO_ANALYTICS", "MLFLOW_REGISTRY_URI"}
    assert stale == set(), f"listed in .env.sample but read nowhere: {sorted(stale)}"
