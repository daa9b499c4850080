"""``python -m e2e.cluster [demo|up]``: the narrated demo (default), or a cluster to play with.

python -m e2e.cluster                      # the demo
python -m e2e.cluster up -f pods.yaml      # start, apply and narrate the pods, serve until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import yaml

from .demo import run_demo
from .harness import Harness, HarnessError, NodeSpec
from .narrate import Narrator, submit_and_show


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m e2e.cluster", description="Tessera's local cluster harness.")
    p.add_argument("command", nargs="?", default="demo", choices=["demo", "up"])
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (up)")
    p.add_argument("--devices", default="2xH200", help="simulated cards per node, e.g. 4xH200 or 2xH100,1xA100")
    p.add_argument("-f", "--filename", action="append", default=[], help="YAML to apply (up); pods are narrated")
    p.add_argument("--keep", action="store_true", help="keep the state directory")
    p.add_argument("--log-level", default="WARNING", help="harness log level (default WARNING)")
    return p


async def _up(args: argparse.Namespace, narrator: Narrator) -> int:
    nodes = [NodeSpec(f"node-{i + 1}", args.devices) for i in range(args.nodes)]
    async with Harness(nodes) as harness:
        narrator.say(f"cluster up: export KUBECONFIG={harness.kubeconfig}  (logs in {harness.state}/logs)")
        for path in args.filename:
            text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
            for doc in yaml.safe_load_all(text):
                if not isinstance(doc, dict):
                    continue
                if doc.get("kind") == "Pod":
                    narrator.title(f"pod {doc['metadata'].get('name')}")
                    await submit_and_show(harness, narrator, doc, wait="running")
                else:
                    await harness.apply(doc)
                    narrator.say(f"applied {doc.get('kind')} {doc.get('metadata', {}).get('name')}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        narrator.say("serving; Ctrl-C stops the cluster")
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    narrator = Narrator()
    try:
        if args.command == "up":
            return asyncio.run(_up(args, narrator))
        return asyncio.run(run_demo(narrator, devices=args.devices, keep=args.keep))
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
