"""libvgpu overhead on the fake driver: the same program, run with and without the library.

Measures, per call, reached the way cudart reaches the driver (cuGetProcAddress_v2):
kernel launch with no SM limit, a cuMemAlloc/cuMemFree pair under a memory limit, and one
cuGetProcAddress resolution. libvgpu takes its limit from a limits file, as in a Tessera container
(named by ``TESSERA_LIMITS_FILE`` here; the fixed path only changes where it is read, once). Runs
alternate plain and hooked so both see the same machine load; the figure per metric is the median
over the runs. Targets (docs/benchmarks.md): <= 50 ns added per launch,
<= 500 ns per alloc/free pair.

    python -m bench.isolation [--runs N] [--iterations N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from e2e.fakegpu import BUILD, fake_driver_env, host_env
from isolation import limits as limits_file

from .common import write_report

ROOT = Path(__file__).resolve().parents[1]
BENCH = BUILD / "tests" / "vgpu-bench"
METRICS = {
    "launch_ns": ("kernel launch (no SM limit)", 50.0),
    "alloc_free_ns": ("cuMemAlloc + cuMemFree pair", 500.0),
    "get_proc_address_ns": ("cuGetProcAddress resolution", None),
}


def run_once(env: dict[str, str], iterations: int) -> dict[str, float]:
    out = subprocess.run([str(BENCH), str(iterations)], env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"vgpu-bench failed ({out.returncode}): {out.stderr}")
    parsed: dict[str, float] = json.loads(out.stdout)
    return parsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--iterations", type=int, default=20000)
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(ROOT / "isolation"), "all"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        gpus = "GPU-3e7a0c1d-5b2f-4c8e-9a61-0d4f2b7c9e10=80GiB/132sm/NVIDIA H100"
        base = host_env() | fake_driver_env(f"{tmp}/fake.state", gpus)
        limits = limits_file.Limits(
            region=f"{tmp}/bench.cache",
            devices=(limits_file.DeviceLimits("GPU-3e7a0c1d-5b2f-4c8e-9a61-0d4f2b7c9e10", 40 << 30, 0),),
        )
        Path(tmp, "bench.limits").write_text(limits.render())
        Path(tmp, "bench.cache").touch()  # the driver creates the region empty
        hooked = base | {"LD_PRELOAD": str(BUILD / "libvgpu.so"), "TESSERA_LIMITS_FILE": f"{tmp}/bench.limits"}
        plain_runs: list[dict[str, float]] = []
        hooked_runs: list[dict[str, float]] = []
        for _ in range(args.runs):
            plain_runs.append(run_once(base, args.iterations))
            hooked_runs.append(run_once(hooked, args.iterations))
    rows = []
    failed = []
    for key, (label, target) in METRICS.items():
        p = statistics.median(r[key] for r in plain_runs)
        h = statistics.median(r[key] for r in hooked_runs)
        added = h - p
        verdict = "" if target is None else ("met" if added <= target else "MISSED")
        if verdict == "MISSED":
            failed.append(label)
        rows.append((label, p, h, added, h / p, target, verdict))
    lines = [
        "# libvgpu on the fake driver",
        "",
        f"`python -m bench.isolation --runs {args.runs} --iterations {args.iterations}`: {args.runs} runs each,",
        "alternating without / with libvgpu; per-call medians over 31 batches per run, then the median over runs.",
        "",
        "| call | without (ns) | with (ns) | added (ns) | ratio | target added |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, p, h, added, ratio, target, verdict in rows:
        tgt = "-" if target is None else f"<= {target:.0f} ns: {verdict}"
        lines.append(f"| {label} | {p:.1f} | {h:.1f} | {added:+.1f} | {ratio:.2f} | {tgt} |")
    text = "\n".join(lines) + "\n"
    return write_report("isolation", text, ok=not failed, missed=f"targets missed: {failed}")


if __name__ == "__main__":
    sys.exit(main())
