"""bin/audit.py: pip-audit's "No known vulnerabilities found" after skipping packages is not a pass."""

from __future__ import annotations

from bin_helpers import load_bin

audit = load_bin("audit")


def test_skipped_packages_mean_not_audited():
    # What pip-audit prints without a connection: every package skipped, and still "no vulnerabilities".
    report = {
        "dependencies": [
            {"name": "falcon", "skip_reason": "Dependency not found on PyPI and could not be audited"},
            {"name": "numpy", "version": "2.4.6", "vulns": []},
        ],
        "fixes": [],
    }
    status, line, counts = audit.verdict(report)
    assert status == audit.NOT_AUDITED and line.startswith("NOT AUDITED: 1 of 2")
    assert counts == {"packages": 2, "skipped": 1, "vulnerable": 0}


def test_empty_report_is_not_a_pass():
    assert audit.verdict({})[0] == audit.NOT_AUDITED
    assert audit.verdict({"dependencies": []})[0] == audit.NOT_AUDITED


def test_vulnerable_package_fails_and_is_named():
    report = {
        "dependencies": [
            {"name": "requests", "version": "2.19.0", "vulns": [{"id": "PYSEC-2018-28", "fix_versions": []}]},
            {"name": "numpy", "version": "2.4.6", "vulns": []},
        ]
    }
    status, line, _ = audit.verdict(report)
    assert status == audit.VULNERABLE and "requests 2.19.0 (PYSEC-2018-28)" in line


def test_every_package_audited_and_clean_passes():
    report = {"dependencies": [{"name": "numpy", "version": "2.4.6", "vulns": []}]}
    assert audit.verdict(report)[0] == 0
