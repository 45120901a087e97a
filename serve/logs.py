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


def capture_native_stderr() -> None:
    """Turn what C libraries print on stderr (libpng/libjpeg warnings) into JSON log lines.

    Called in each gunicorn worker after the fork. File descriptor 2 becomes a pipe that a thread
    reads line by line and logs as `polypseg.native` warnings; Python's own writers (sys.stderr and
    every logging handler that wrote to fd 2) move to a duplicate of the original stderr, so the two
    never interleave within a line.
    """
    import os
    import threading

    original = os.dup(2)
    stream = os.fdopen(original, "w", buffering=1, encoding="utf-8", errors="replace")
    old_streams = {id(sys.stderr), id(sys.__stderr__)}
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for handler in lg.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in old_streams:
                handler.setStream(stream)
    sys.stderr = stream

    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    native = logging.getLogger("polypseg.native")

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                text = raw.decode("utf-8", "replace").strip()
                if not text:
                    continue
                if text.startswith("{"):  # a JSON line some writer still sent to fd 2: pass it on as is
                    stream.write(text + "\n")
                    continue
                native.warning(text[:2000], extra={"fields": {"source": "native stderr"}})

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()
