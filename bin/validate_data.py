#!/usr/bin/env python3
"""Check every image/mask pair of the catalog (or of one folder) against the schema rules.

Usage: bin/validate_data.py --conf conf/validate_data.yaml [--data DIR] [--report PATH]

Critical failures exit non-zero. Files the sources' scan left out (unpaired, not an image, a stem
twice, no group) are listed under the `pairing` rule with their reason. --data DIR checks a folder
(images/ + masks/) or an nnU-Net v2 raw dataset without the catalog.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lib.cli import parser, script
from lib.config import load_config
from lib.io import read_json, write_json
from lib.schema import SchemaConfig, describe_image, describe_mask, run_rules, statistics
from lib.sources import Catalog, folder_catalog, read_catalog


@dataclass(frozen=True)
class ValidateConfig:
    catalog: str  # data/catalog.csv from bin/fetch_data.py
    sources_summary: str  # data/sources.json: the files each source's scan left out
    report: str  # JSON report path
    threads: int  # decoding threads
    schema: SchemaConfig  # rule thresholds (lib/schema.py)


def scan(catalog: Catalog, kind: str, describe, threads: int) -> list:
    """Records of the catalog's images or masks, named `<stem><suffix>` (unique across sources)."""
    paths = catalog.images if kind == "image" else catalog.masks
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(
            pool.map(lambda item: describe(item[0] + item[1].suffix, item[1].read_bytes()), paths.items())
        )


def other_report(data_dir: str) -> Path:
    return Path("reports") / f"data_validation-{Path(data_dir).resolve().name}.json"


@script("validate_data")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/validate_data.yaml")
    p.add_argument("--data", help="a folder (images/ + masks/) or nnU-Net v2 dataset instead of the catalog")
    p.add_argument(
        "--report", help="report path (default: report; with --data: reports/data_validation-<name>.json)"
    )
    args = p.parse_args(argv)
    cfg = load_config(ValidateConfig, args.conf, args.overrides)
    if args.data:
        catalog, skipped, _ = folder_catalog(args.data)
        left_out = [f"{s.path} ({s.reason})" for s in skipped]
    else:
        catalog = read_catalog(cfg.catalog)
        sources = read_json(cfg.sources_summary)["sources"]
        left_out = [f"{n}: {s['path']} ({s['reason']})" for n, src in sources.items() for s in src["skipped"]]
    images = scan(catalog, "image", describe_image, cfg.threads)
    masks = scan(catalog, "mask", describe_mask, cfg.threads)
    results = run_rules(images, masks, cfg.schema, left_out)
    failed = [r for r in results if r["status"] == "fail"]
    critical = [r for r in failed if r["severity"] == "critical"]
    # Another folder never overwrites the pipeline's record (a DVC output that make_splits depends on).
    report_path = args.report or (other_report(args.data) if args.data else cfg.report)
    write_json(
        report_path,
        {
            "data": str(args.data or cfg.catalog),
            "sources": catalog.sources(),
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
