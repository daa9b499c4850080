"""``python -m dra_driver``: see ``--help``."""

from __future__ import annotations

import asyncio
import sys

from . import logs
from .cli import ConfigError, settings_from_args
from .daemon import run


def main() -> int:
    try:
        settings = settings_from_args()
    except ConfigError as exc:
        print(f"dra_driver: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_format)
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
