"""DRA driver benchmarks (DESIGN §7): prepare latency, concurrent prepares, slice publish time.

Runs the real driver in-process against the API server stand-in, on the local disk (every fsync is
real), and writes ``.bench/driver.md``. ``python -m bench.driver [--iterations N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from dra_driver.claims import ClaimRef
from dra_driver.cli import settings_from_args
from dra_driver.daemon import Driver
from dra_driver.proto import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.slices import SLICES_PATH
from e2e.apiserver import APIServer

DRIVER = "nvidia.tessera.dev"
NODE = "bench-node"
TARGET_PREPARE_P99_MS = 10.0
TARGET_SLICES_MS = 100.0


def claim(name: str, devices: int) -> dict[str, Any]:
    results = [
        {
            "request": "gpu",
            "driver": DRIVER,
            "pool": NODE,
            "device": f"gpu-{i}",
            "shareID": str(uuid.uuid4()),
            "consumedCapacity": {"memory": "10Gi", "cores": "30", "shares": "1"},
        }
        for i in range(devices)
    ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpu",
                        "exactly": {
                            "deviceClassName": DRIVER,
                            "count": devices,
                            "capacity": {"requests": {"memory": "10Gi", "cores": "30"}},
                        },
                    }
                ]
            }
        },
        "status": {"allocation": {"devices": {"results": results, "config": []}}},
    }


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def timed(n: int, body: Callable[[int], Awaitable[None]]) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        await body(i)
        out.append(time.perf_counter() - start)
    return out


async def run(iterations: int) -> tuple[list[str], bool]:
    root = tempfile.mkdtemp(prefix="tb", dir="/tmp")
    lines: list[str] = []
    ok = True
    try:
        async with APIServer.running() as api:
            api.store.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
            kubeconfig = api.write_kubeconfig(f"{root}/kubeconfig")
            s = settings_from_args(
                [
                    "--backend", "mock", "--mock-devices", "8xH200", "--node-name", NODE, "--kubeconfig", kubeconfig,
                    "--plugin-dir", f"{root}/plugins/{DRIVER}", "--registry-dir", f"{root}/registry",
                    "--cdi-dir", f"{root}/cdi", "--host-lib-dir", f"{root}/lib",
                    "--metrics-port", "0", "--healthz-port", "0",
                ],
                environ={},
            )  # fmt: skip
            driver = Driver(s)
            start = time.perf_counter()
            await driver.start()
            assert driver.publisher is not None and driver.preparer is not None
            await driver.publisher.published.wait()
            first_publish = time.perf_counter() - start
            preparer = driver.preparer
            publisher = driver.publisher
            channel = grpc.aio.insecure_channel(f"unix://{s.dra_socket}")
            stub = dra_v1_pb2_grpc.DRAPluginStub(channel)

            rows: list[tuple[str, list[float], float | None]] = []
            for devices in (1, 8):
                objs = [claim(f"d{devices}-{i}", devices) for i in range(iterations)]

                async def direct(i: int, objs: list[dict[str, Any]] = objs) -> None:
                    meta = objs[i]["metadata"]
                    ref = ClaimRef(meta["namespace"], meta["name"], meta["uid"])
                    await preparer.prepare_claim(objs[i], ref)

                samples = await timed(iterations, direct)
                await preparer.unprepare(
                    [ClaimRef("default", o["metadata"]["name"], o["metadata"]["uid"]) for o in objs]
                )
                rows.append((f"prepare, {devices} device(s), API read excluded", samples, TARGET_PREPARE_P99_MS))

                grpc_objs = [claim(f"g{devices}-{i}", devices) for i in range(iterations)]
                for o in grpc_objs:
                    api.store.put(o)

                async def over_grpc(i: int, objs: list[dict[str, Any]] = grpc_objs) -> None:
                    meta = objs[i]["metadata"]
                    req = dra_v1_pb2.NodePrepareResourcesRequest(
                        claims=[dra_v1_pb2.Claim(namespace="default", name=meta["name"], uid=meta["uid"])]
                    )
                    answer = await stub.NodePrepareResources(req)
                    if answer.claims[meta["uid"]].error:
                        raise RuntimeError(answer.claims[meta["uid"]].error)

                samples = await timed(iterations, over_grpc)
                await preparer.unprepare(
                    [ClaimRef("default", o["metadata"]["name"], o["metadata"]["uid"]) for o in grpc_objs]
                )
                rows.append((f"prepare, {devices} device(s), over gRPC incl. API read", samples, None))

            # 100 concurrent prepares, one kubelet call each.
            many = [claim(f"c-{i}", 1) for i in range(100)]
            for i, o in enumerate(many):
                o["status"]["allocation"]["devices"]["results"][0]["device"] = f"gpu-{i % 8}"
                api.store.put(o)

            async def one(o: dict[str, Any]) -> str:
                meta = o["metadata"]
                req = dra_v1_pb2.NodePrepareResourcesRequest(
                    claims=[dra_v1_pb2.Claim(namespace="default", name=meta["name"], uid=meta["uid"])]
                )
                answer = await stub.NodePrepareResources(req)
                return str(answer.claims[meta["uid"]].error)

            start = time.perf_counter()
            errors = [e for e in await asyncio.gather(*(one(o) for o in many)) if e]
            concurrent_wall = time.perf_counter() - start
            await preparer.unprepare([ClaimRef("default", o["metadata"]["name"], o["metadata"]["uid"]) for o in many])

            # Slice publish for 8 devices: after a wipe (kubelet start) the pool is published again.
            # The publisher's own watch would race the measurement: it is stopped and driven by hand.
            await publisher.stop()

            async def republish(_: int) -> None:
                for item in (await driver.client.list(SLICES_PATH))["items"]:  # type: ignore[union-attr]
                    api.store.delete("resourceslices", None, item["metadata"]["name"])
                result = await publisher.reconcile()
                assert result.created == 1

            publish = await timed(max(20, iterations // 10), republish)
            await channel.close()
            await driver.stop()

        lines.append("| measurement | n | p50 (ms) | p99 (ms) | target |")
        lines.append("|---|---|---|---|---|")
        for name, samples, target in rows:
            p99 = percentile(samples, 99)
            verdict = ""
            if target is not None:
                met = p99 * 1000 <= target
                ok &= met
                verdict = f"p99 <= {target:g} ms: {'met' if met else 'MISSED'}"
            lines.append(f"| {name} | {len(samples)} | {ms(statistics.median(samples))} | {ms(p99)} | {verdict} |")
        p99 = percentile(publish, 99)
        met = p99 * 1000 <= TARGET_SLICES_MS
        ok &= met
        lines.append(
            f"| ResourceSlice publish, 8 devices, after a wipe (list + create) | {len(publish)} | "
            f"{ms(statistics.median(publish))} | {ms(p99)} | <= {TARGET_SLICES_MS:g} ms: {'met' if met else 'MISSED'} |"
        )
        lines.append(
            f"| first publish at start-up (node lookup, dry-run probe, list, create) | 1 | {ms(first_publish)} | | |"
        )
        zero = not errors
        ok &= zero
        lines.append(
            f"| 100 concurrent prepares (one kubelet call each, 8 shared devices) | 100 | wall "
            f"{ms(concurrent_wall)} | | errors: {len(errors)} ({'met' if zero else 'MISSED'}) |"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return lines, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=300, help="prepares per latency measurement")
    args = parser.parse_args()
    lines, ok = asyncio.run(run(args.iterations))
    header = [
        "# DRA driver benchmark",
        "",
        f"Command: `python -m bench.driver --iterations {args.iterations}` (also run by `make bench`).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; files on "
        "the local disk (real fsync). Prepare = plan + claim directory + CDI spec (atomic write, fsync) + "
        "two checkpoint commits (fsync); the gRPC rows add the kubelet call over the Unix socket and the "
        "ResourceClaim GET from the API server stand-in over loopback HTTP.",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    os.makedirs(".bench", exist_ok=True)
    with open(".bench/driver.md", "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    if not ok:
        print("driver benchmark: a target was missed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
