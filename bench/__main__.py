"""Run every benchmark module in turn; each writes .bench/<name>.md, quoted in docs/benchmarks.md.

``python -m bench [--runs N] [--only a,b] [ARGS...]``: with ``--runs N`` every module runs N times
(module after module, then again), each run's reports are kept under ``.bench/runs/<i>/`` and
``.bench/ranges/<name>.md`` gives every figure as its range over the runs (:mod:`bench.ranges`), the
form docs/benchmarks.md quotes. Other arguments go to every module.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .ranges import merge

MODULES = ["webhook", "driver", "node_metrics", "watchdog", "isolation", "exporter", "placement"]
OUT = ".bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="runs of every module (ranges when more than one)")
    parser.add_argument("--only", default="", help="comma-separated modules (default: all)")
    args, rest = parser.parse_known_args()
    modules = [m for m in MODULES if not args.only or m in args.only.split(",")]
    failed: dict[str, list[int]] = {}
    for run in range(1, args.runs + 1):
        for name in modules:
            if importlib.util.find_spec(f"bench.{name}") is None:
                print(f"== bench.{name}: not present", flush=True)
                continue
            print(f"== bench.{name}" + (f" (run {run} of {args.runs})" if args.runs > 1 else ""), flush=True)
            if subprocess.call([sys.executable, "-m", f"bench.{name}", *rest]):
                failed.setdefault(name, []).append(run)
            report = os.path.join(OUT, f"{name}.md")
            if args.runs > 1 and os.path.exists(report):
                os.makedirs(os.path.join(OUT, "runs", str(run)), exist_ok=True)
                shutil.copyfile(report, os.path.join(OUT, "runs", str(run), f"{name}.md"))
    if args.runs > 1:
        os.makedirs(os.path.join(OUT, "ranges"), exist_ok=True)
        for name in modules:
            paths = [os.path.join(OUT, "runs", str(r), f"{name}.md") for r in range(1, args.runs + 1)]
            reports = [Path(p).read_text(encoding="utf-8") for p in paths if os.path.exists(p)]
            if reports:
                with open(os.path.join(OUT, "ranges", f"{name}.md"), "w", encoding="utf-8") as f:
                    f.write(merge(reports))
        print(f"ranges over {args.runs} runs: {OUT}/ranges/<name>.md", flush=True)
    if failed:
        print("benchmarks that missed a target or failed (module: runs): "
              + ", ".join(f"{name}: {runs}" for name, runs in failed.items()), file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
