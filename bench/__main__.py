"""Run every benchmark module in turn; each writes .bench/<name>.md, quoted in docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

MODULES = ["webhook", "driver", "node_metrics", "watchdog", "isolation", "exporter"]


def main() -> int:
    failed = []
    for name in MODULES:
        if importlib.util.find_spec(f"bench.{name}") is None:
            print(f"== bench.{name}: not present", flush=True)
            continue
        print(f"== bench.{name}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}", *sys.argv[1:]])
        if rc:
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
