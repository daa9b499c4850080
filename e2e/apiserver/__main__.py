"""``python -m e2e.apiserver --port PORT [--kubeconfig-out PATH]``: serve until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .server import APIServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.apiserver", description="In-memory kube-apiserver stand-in (test harness only)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = any free port; it is printed)")
    parser.add_argument("--kubeconfig-out", metavar="PATH", help="write a kubeconfig for this server here")
    parser.add_argument("--log-level", default="INFO")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    api = APIServer(args.host, args.port)
    await api.start()
    if args.kubeconfig_out:
        api.write_kubeconfig(args.kubeconfig_out)
    print(f"serving {api.url}" + (f" (kubeconfig {args.kubeconfig_out})" if args.kubeconfig_out else ""), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await api.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return asyncio.run(_serve(args))
    except OSError as exc:
        print(f"e2e.apiserver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
