"""The command line every bin/ script shares: --conf plus --set overrides."""

from __future__ import annotations

import argparse


def parser(description: str, default_conf: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--conf", default=default_conf, help=f"YAML config (default: {default_conf})")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set epochs=3 (repeatable)",
    )
    return p
