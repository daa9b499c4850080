"""Structured logs: one line per event, as JSON or ``key=value`` text, with its context in every line.

Call sites pass the object a line is about through ``extra``, e.g.
``log.info("prepared", extra={"claim": "ns/name", "uid": uid})`` or
``log.info("converted", extra={"namespace": ns, "pod": name, "uid": uid})``; every extra key is emitted.
"""

from __future__ import annotations

import json
import logging
import time
from typing import IO, Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` context of a record (every attribute the standard record does not have)."""
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD and not k.startswith("_") and v is not None and v != ""
    }


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        parts = [ts, record.levelname[0], record.name + ":", record.getMessage()]
        for key, value in fields(record).items():
            text = str(value)
            parts.append(f"{key}={json.dumps(text) if (' ' in text or not text) else text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def handler(log_format: str, stream: IO[str]) -> logging.Handler:
    """A stream handler in ``log_format`` (``json`` or ``text``)."""
    out = logging.StreamHandler(stream)
    out.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    return out
