"""``python -m e2e.controllers --kubeconfig PATH``: the claim controller and the scheduler."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from . import run_controllers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.controllers", description="ResourceClaim controller and DRA scheduler (test harness only)."
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_controllers(args.kubeconfig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
