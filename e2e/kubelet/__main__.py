"""``python -m e2e.kubelet --kubeconfig PATH --node-name NODE ...``: one harness node."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from kubeapi import KubeClient

from .kubelet import Kubelet


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m e2e.kubelet", description="Harness kubelet (test harness only).")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--root", required=True, help="state directory (pod dirs and logs)")
    p.add_argument("--registry-dir", required=True, help="plugin registry directory to watch")
    p.add_argument("--cdi-dir", required=True)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment every container gets (the node's driver libraries, for example)",
    )
    p.add_argument(
        "--env-alias",
        action="append",
        default=[],
        metavar="SOURCE=TARGET",
        help="copy a container's env SOURCE to TARGET after the CDI edits (a vendor's visible-devices "
        "variable to the one the fake CUDA driver reads)",
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="node label")
    p.add_argument("--log-level", default="INFO")
    return p


async def _run(args: argparse.Namespace) -> int:
    kube = await KubeClient.connect(args.kubeconfig)
    kubelet = Kubelet(
        kube,
        args.node_name,
        root=args.root,
        registry_dir=args.registry_dir,
        cdi_dir=args.cdi_dir,
        container_env=dict(e.split("=", 1) for e in args.env),
        env_aliases=dict(e.split("=", 1) for e in args.env_alias),
        labels=dict(label.split("=", 1) for label in args.label),
    )
    await kubelet.start()
    print(f"kubelet {args.node_name} ready (logs on 127.0.0.1:{kubelet.port})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await kubelet.stop()
    await kube.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
