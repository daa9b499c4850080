"""The webhook's logs: one line per event, JSON or text, with the pod (namespace, pod, uid) when there is one.

Call sites pass the object they are about as ``extra={"namespace": ..., "pod": ..., "uid": ...}``,
so every line about a review can be found by its uid.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

from tessera_common import logfmt

LOGGER_NAME = "tessera.webhook"


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup(fmt: str = "json", level: str = "info", stream: IO[str] | None = None) -> None:
    """Configure the webhook's logger (idempotent): ``fmt`` is ``json`` or ``text``."""
    log = logger()
    for old in list(log.handlers):
        log.removeHandler(old)
    log.addHandler(logfmt.handler(fmt, stream or sys.stderr))
    log.setLevel(level.upper())
    log.propagate = False
