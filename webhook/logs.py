"""Structured logs: one line per event, JSON or text, with the pod (namespace, pod, uid) when there is one.

Call sites pass the object they are about as ``extra={"namespace": ..., "pod": ..., "uid": ...}``;
both formats print those fields, so every line about a review can be found by its uid.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

LOGGER_NAME = "tessera.webhook"
_FIELDS = ("namespace", "pod", "uid", "template", "outcome", "vendors", "duration_ms", "attempt", "error")


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in _FIELDS if getattr(record, k, None) not in (None, "")}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{stamp} {record.levelname:<7} {record.getMessage()}" + (f" [{extra}]" if extra else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    """Configure the webhook's logger (idempotent): ``fmt`` is ``json`` or ``text``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    log = logger()
    for old in list(log.handlers):
        log.removeHandler(old)
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False
