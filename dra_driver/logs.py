"""The driver's logs: every logger to stderr, one line per event with the claim in every line."""

from __future__ import annotations

import logging
import sys

from tessera_common import logfmt


def setup(log_format: str = "json", level: int = logging.INFO) -> None:
    """Route every logger to stderr in the chosen format (``json`` or ``text``)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(logfmt.handler(log_format, sys.stderr))
    root.setLevel(level)
    # gRPC and kubernetes_asyncio are chatty at INFO; keep their warnings.
    for noisy in ("grpc", "kubernetes_asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
