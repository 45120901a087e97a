#!/usr/bin/env python3
"""Audit the pinned requirements for known vulnerabilities with pip-audit; "not audited" is never success.

Usage: bin/audit.py [--requirements FILE ...] [--out reports/audit.json]

pip-audit asks PyPI's vulnerability data about each pinned package. Without a connection it skips every
package ("could not be audited") yet still prints "No known vulnerabilities found"; this script reads
its JSON instead and exits 0 only when every package was audited and none is vulnerable, 1 when one is
vulnerable, 3 when any package could not be audited (the result is then "not audited").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from lib.io import write_json

VULNERABLE, NOT_AUDITED = 1, 3


def verdict(report: dict) -> tuple[int, str, dict]:
    """(exit status, one-line summary, counts) of a `pip-audit -f json` report."""
    deps = report.get("dependencies") or []
    skipped = [d for d in deps if d.get("skip_reason")]
    vulnerable = [d for d in deps if d.get("vulns")]
    counts = {"packages": len(deps), "skipped": len(skipped), "vulnerable": len(vulnerable)}
    if vulnerable:
        names = ", ".join(
            f"{d['name']} {d['version']} ({', '.join(v['id'] for v in d['vulns'])})" for d in vulnerable
        )
        return VULNERABLE, f"VULNERABLE: {names}", counts
    if not deps or skipped:
        why = skipped[0]["skip_reason"] if skipped else "no packages in the report"
        return (
            NOT_AUDITED,
            f"NOT AUDITED: {len(skipped)} of {len(deps)} packages skipped (e.g. {why})",
            counts,
        )
    return 0, f"audited {len(deps)} packages: no known vulnerabilities", counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requirements", action="append", default=[], help="hashed requirements file(s)")
    p.add_argument("--out", default="reports/audit.json")
    args = p.parse_args(argv)
    files = args.requirements or ["requirements.lock", "serve/requirements-serve.txt"]
    status, results = 0, {}
    for req in files:
        # --no-deps --disable-pip: the file pins and hashes everything; nothing is installed to resolve it.
        cmd = [sys.executable, "-m", "pip_audit", "--no-deps", "--disable-pip", "-r", req, "-f", "json"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        try:
            report = json.loads(run.stdout)
        except json.JSONDecodeError:
            report = {}
        code, line, counts = verdict(report)
        if not report:
            line = (
                f"NOT AUDITED: pip-audit gave no report (exit {run.returncode}): {run.stderr.strip()[-300:]}"
            )
        print(f"audit: {req}: {line}")
        results[req] = {"status": code, "summary": line, **counts}
        status = max(status, code)
    write_json(args.out, {"passed": status == 0, "files": results})
    return status


if __name__ == "__main__":
    sys.exit(main())
