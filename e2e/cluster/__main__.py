"""``python -m e2e.cluster [demo|up]``: the narrated demo (default), or a cluster to play with.

python -m e2e.cluster                      # the demo (NVIDIA)
python -m e2e.cluster demo --vendor ascend # one pod of another vendor, narrated
python -m e2e.cluster up -f pods.yaml      # start, apply and narrate the pods, serve until Ctrl-C
python -m e2e.cluster up --node nvidia:2xH200 --node ascend:2x910B3 --node hygon   # a mixed cluster
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .apply import apply_files
from .demo import run_demo
from .harness import Harness, HarnessError, NodeSpec, parse_node_spec
from .narrate import Narrator
from .vendor_demo import DEMO_VENDORS, run_vendor_demo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m e2e.cluster", description="Tessera's local cluster harness.")
    p.add_argument("command", nargs="?", default="demo", choices=["demo", "up"])
    p.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="number of NVIDIA nodes node-1..N with --devices each (up; default 1 unless --node is given)",
    )
    p.add_argument(
        "--devices",
        default=None,
        help="simulated cards per NVIDIA node, e.g. 4xH200 or 2xH100,1xA100 (default 2xH200); with demo "
        "--vendor, that vendor's devices (default: the chart's vendors.<vendor>.mockDevices)",
    )
    p.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="[NAME=]VENDOR[:DEVICES]",
        help="a node of a vendor with simulated devices (up; repeatable), e.g. ascend:2x910B3 or "
        "hygon (the chart's mockDevices); named <vendor>-<n> unless NAME= is given",
    )
    p.add_argument(
        "--vendor",
        default="nvidia",
        choices=sorted(DEMO_VENDORS),
        help="demo: the vendor to show (default nvidia: the full demo; others: one of their pods)",
    )
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        help="YAML to apply (up; repeatable): each object is reported, each pod followed until it runs, "
        "finishes or is reported unschedulable; nothing in it stops the cluster",
    )
    p.add_argument("--keep", action="store_true", help="keep the state directory")
    p.add_argument("--log-level", default="WARNING", help="harness log level (default WARNING)")
    return p


async def _up(args: argparse.Namespace, narrator: Narrator) -> int:
    """Start the cluster, apply and narrate ``-f`` files, serve until SIGINT or SIGTERM.

    A signal at any point, start-up included, stops every child (webhook, drivers, containers) and
    removes the state directory: before serving it cancels this task (the harness cleans up on the
    way out), while serving it ends the wait. Nothing in the files stops the cluster
    (:mod:`.apply`). Exit 0 when stopped while serving, 128 + the signal when stopped before."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stop = asyncio.Event()
    received: list[int] = []
    serving = False

    def on_signal(sig: int) -> None:
        if received:
            narrator.say(f"{signal.Signals(sig).name}: already stopping the cluster")
            return
        received.append(sig)
        narrator.say(f"{signal.Signals(sig).name}: stopping the cluster")
        if serving:
            stop.set()
        else:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        harness = Harness(node_specs(args), keep_state=args.keep, progress=narrator.say)
        narrator.say(f"starting a local cluster in {harness.state}")
        async with harness:
            narrator.say(f"cluster up: export KUBECONFIG={harness.kubeconfig}  (logs in {harness.state}/logs)")
            applied = await apply_files(harness, narrator, args.filename)
            try:
                serving = True
                narrator.say("serving; Ctrl-C stops the cluster")
                await stop.wait()
            finally:
                await applied.close()
    except asyncio.CancelledError:
        if not received:
            raise
        return 128 + received[0]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    narrator.say("cluster stopped")
    return 0


def node_specs(args: argparse.Namespace) -> list[NodeSpec]:
    """``--nodes``/``--devices`` (NVIDIA nodes ``node-<i>``) then every ``--node``."""
    count = args.nodes if args.nodes is not None else (0 if args.node else 1)
    nodes = [NodeSpec(f"node-{i + 1}", args.devices or "2xH200") for i in range(count)]
    for text in args.node:
        nodes.append(parse_node_spec(text, [n.name for n in nodes]))
    if not nodes:
        raise HarnessError("no nodes: give --nodes N or --node VENDOR[:DEVICES]")
    return nodes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    narrator = Narrator()
    try:
        if args.command == "up":
            return asyncio.run(_up(args, narrator))
        if args.node or args.nodes is not None:
            raise HarnessError("--node and --nodes are for `up`; the demo takes --vendor and --devices")
        if args.vendor != "nvidia":
            return asyncio.run(run_vendor_demo(narrator, args.vendor, devices=args.devices or "", keep=args.keep))
        return asyncio.run(run_demo(narrator, devices=args.devices or "2xH200", keep=args.keep))
    except HarnessError as exc:
        print(f"e2e.cluster: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
