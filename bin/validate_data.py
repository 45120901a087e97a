#!/usr/bin/env python3
"""Check an images/ + masks/ folder against the schema rules; critical failures exit non-zero.

Usage: bin/validate_data.py --conf conf/validate_data.yaml [--data DIR] [--report PATH]
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lib.cli import parser, script
from lib.config import load_config
from lib.io import find_pair_dirs, list_images, write_json
from lib.schema import SchemaConfig, describe_image, describe_mask, run_rules, statistics


@dataclass(frozen=True)
class ValidateConfig:
    data_dir: str  # folder holding images/ and masks/
    report: str  # JSON report path
    threads: int  # decoding threads
    schema: SchemaConfig  # rule thresholds (lib/schema.py)


def scan(folder: Path, describe, threads: int) -> list:
    files = list_images(folder)
    # Files with other suffixes are listed too, so the pairing rule can name them.
    others = [p for p in sorted(folder.iterdir()) if p.is_file() and p.stem not in files]
    paths = list(files.values()) + others
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda p: describe(p.name, p.read_bytes()), paths))


def other_report(data_dir: str) -> Path:
    return Path("reports") / f"data_validation-{Path(data_dir).resolve().name}.json"


@script("validate_data")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/validate_data.yaml")
    p.add_argument("--data", help="folder holding images/ and masks/ (overrides data_dir)")
    p.add_argument(
        "--report", help="report path (default: report; with --data: reports/data_validation-<name>.json)"
    )
    args = p.parse_args(argv)
    cfg = load_config(ValidateConfig, args.conf, args.overrides)
    images_dir, masks_dir = find_pair_dirs(args.data or cfg.data_dir)
    images = scan(images_dir, describe_image, cfg.threads)
    masks = scan(masks_dir, describe_mask, cfg.threads)
    results = run_rules(images, masks, cfg.schema)
    failed = [r for r in results if r["status"] == "fail"]
    critical = [r for r in failed if r["severity"] == "critical"]
    # Another folder never overwrites the pipeline's record (a DVC output that make_splits depends on).
    report_path = args.report or (other_report(args.data) if args.data else cfg.report)
    write_json(
        report_path,
        {
            "data_dir": str(args.data or cfg.data_dir),
            "passed": not critical,
            "rules": results,
            "statistics": statistics(images, masks),
        },
    )
    for r in failed:
        print(f"validate_data: {r['severity'].upper()} {r['rule']}: {r['count']} file(s)", file=sys.stderr)
        for item in r["offending"][:20]:
            print(f"    {item}", file=sys.stderr)
    status = "FAILED" if critical else "passed"
    print(
        f"validate_data: {status}: {len(images)} images, {len(masks)} masks, {len(results)} rules, "
        f"{len(critical)} critical and {len(failed) - len(critical)} warning failures -> {report_path}"
    )
    return 1 if critical else 0


if __name__ == "__main__":
    sys.exit(main())
