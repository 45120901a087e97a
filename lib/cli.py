"""The command line every bin/ script shares: --conf, --set overrides; bad input exits 2 with the reason."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from lib.config import ConfigError

# Bad input every script can meet: a malformed config, a missing folder or file. Exit status 2 and one line
# naming the script and the reason, never a traceback.
INPUT_ERRORS: tuple[type[Exception], ...] = (ConfigError, FileNotFoundError)


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


def script(name: str, errors: tuple[type[Exception], ...] = ()) -> Callable:
    """Wrap a script's `main(argv) -> int`: INPUT_ERRORS (and `errors`) become `name: reason`, exit 2."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except INPUT_ERRORS + errors as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                return 2

        return run

    return wrap
