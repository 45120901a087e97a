"""Structured logs: one JSON object per line on stderr.

Request lines carry their fields in `extra={"fields": {...}}`; the formatter merges them into the
object, so a log shipper can index request_id, status, model_version and timings directly.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send the `polypseg` loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("polypseg")
    logger.setLevel(level)
    if not any(getattr(h, "_polypseg", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._polypseg = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
