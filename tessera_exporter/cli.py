"""``tessera exporter|top`` (also ``python -m tessera_exporter exporter|top``).

``exporter`` serves the cluster exporter's ``/metrics`` (plain HTTP; every flag ``--foo-bar`` also
reads ``TESSERA_FOO_BAR``, the flag wins). ``top`` prints the cluster's cards once, or redraws them
with ``--watch``; it finds the cluster as kubectl does (``--kubeconfig``, else ``$KUBECONFIG`` or
``~/.kube/config``, else the in-cluster service account) and takes ``--context``.

Exit status: 0 done, 2 bad usage or a cluster that cannot be reached (one line on stderr), 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from typing import Any

from aiohttp import web

from kubeapi import KubeClient, KubeError
from tessera_common import logfmt

from . import top
from .exporter import Exporter

EXIT_USAGE = 2
LOGGER = "tessera"


def _env_default(flag: str, default: Any) -> Any:
    return os.environ.get("TESSERA_" + flag.lstrip("-").replace("-", "_").upper(), default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera's cluster view: the exporter and top.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{exporter,top}")
    exporter = sub.add_parser(
        "exporter",
        help="serve the cluster exporter's /metrics",
        description="Watch ResourceSlices, ResourceClaims and Pods and serve /metrics, /healthz and /readyz "
        "over HTTP. Every flag --foo-bar also reads TESSERA_FOO_BAR (the flag wins).",
    )

    def opt(flag: str, default: Any = None, **kwargs: Any) -> None:
        exporter.add_argument(flag, default=_env_default(flag, default), **kwargs)

    opt("--host", "0.0.0.0", help="address to listen on (default %(default)s)")
    opt("--port", 9500, type=int, help="HTTP port of /metrics (default %(default)s)")
    opt("--kubeconfig", help="kubeconfig file (default: the in-cluster service account)")
    opt(
        "--watch-timeout-seconds",
        300,
        type=int,
        help="how long one watch request lasts before it is renewed (default %(default)s)",
    )
    opt("--log-format", "json", choices=["json", "text"], help="log format (default %(default)s)")
    opt("--log-level", "info", choices=["debug", "info", "warning", "error"], help="(default %(default)s)")

    top_cmd = sub.add_parser(
        "top",
        help="the cluster's cards: shares, memory and cores allocated, health, holders",
        description="Print every device Tessera's drivers publish with what allocated claims hold of it, the "
        "shares with their pods and containers, and the pods waiting to be scheduled with the scheduler's "
        "reason. Figures are what is allocated, from the API.",
    )
    top_cmd.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    top_cmd.add_argument("--context", help="kubeconfig context (default: its current context)")
    top_cmd.add_argument("--node", help="only this node's devices and shares")
    top_cmd.add_argument(
        "-w", "--watch", action="store_true", help="keep watching and redraw after every change (Ctrl-C ends)"
    )
    return parser


def setup_logs(log_format: str, level: str) -> None:
    log = logging.getLogger(LOGGER)
    for old in list(log.handlers):
        log.removeHandler(old)
    log.addHandler(logfmt.handler(log_format, sys.stderr))
    log.setLevel(level.upper())
    log.propagate = False


class UsageError(Exception):
    """Bad usage or configuration: one line on stderr, exit status 2."""


async def connect(kubeconfig: str | None, context: str | None = None, *, like_kubectl: bool = False) -> KubeClient:
    try:
        return await KubeClient.connect(kubeconfig, context=context, timeout=30.0, like_kubectl=like_kubectl)
    except Exception as exc:  # kubeconfig / in-cluster loading raise many kinds
        where = kubeconfig or ("the default kubeconfig" if like_kubectl else "the in-cluster service account")
        raise UsageError(f"cannot configure the Kubernetes client from {where}: {exc}") from None


async def run_top(args: argparse.Namespace) -> None:
    kube = await connect(args.kubeconfig, args.context, like_kubectl=True)
    try:
        await top.run(kube, follow=args.watch, node=args.node)
    finally:
        await kube.close()


async def serve(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> None:
    log = logging.getLogger("tessera.exporter")
    kube = await connect(args.kubeconfig)
    runner: web.AppRunner | None = None
    exporter = Exporter(kube, watch_timeout=args.watch_timeout_seconds)
    try:
        await exporter.start()
        runner = web.AppRunner(exporter.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port, reuse_address=True).start()
        log.info(f"serving http://{args.host}:{args.port}/metrics", extra={"api": kube.host})
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await exporter.stop()
        if runner is not None:
            await runner.cleanup()
        await kube.close()


def _fail(message: str) -> int:
    print(f"tessera: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "exporter":
            setup_logs(args.log_format, args.log_level)
            gc.freeze()
            asyncio.run(serve(args))
            return 0
        setup_logs("text", "warning")
        asyncio.run(run_top(args))
        return 0
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        return _fail(str(exc))
    except KubeError as exc:
        return _fail(f"{exc}; check the kubeconfig and that the cluster serves resource.k8s.io/v1")
