"""DRA driver benchmarks (targets in docs/benchmarks.md): prepare latency, concurrent prepares, slice publish time.

The real driver runs in this process; the API server stand-in runs in its own process (as a real API
server would), with its Python schema validation off (that validation is the stand-in's cost, not
the driver's). Files go to the local disk, so every fsync is real. Writes ``.bench/driver.md``.
``python -m bench.driver [--iterations N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import grpc

from dra_driver.claims import ClaimRef
from dra_driver.cli import settings_from_args
from dra_driver.daemon import Driver
from dra_driver.proto import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.slices import SLICES_PATH
from kubeapi import KubeClient
from tessera_common import files as fsutil

from .common import api_server, machine, ms, percentile, write_report
from .common import store_claim as store

DRIVER = "nvidia.tessera.dev"
NODE = "bench-node"
TARGET_PREPARE_P99_MS = 10.0
TARGET_SLICES_MS = 100.0


def claim(name: str, devices: int, first: int = 0) -> dict[str, Any]:
    results = [
        {
            "request": "gpu",
            "driver": DRIVER,
            "pool": NODE,
            "device": f"gpu-{(first + i) % 8}",
            "shareID": str(uuid.uuid4()),
            "consumedCapacity": {"memory": "10Gi", "cores": "30", "shares": "1"},
        }
        for i in range(devices)
    ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpu",
                        "exactly": {
                            "deviceClassName": DRIVER,
                            "allocationMode": "ExactCount",
                            "count": devices,
                            "capacity": {"requests": {"memory": "10Gi", "cores": "30"}},
                        },
                    }
                ]
            }
        },
        "status": {"allocation": {"devices": {"results": results, "config": []}}},
    }


def grpc_claims(obj: dict[str, Any]) -> list[Any]:
    meta = obj["metadata"]
    return [dra_v1_pb2.Claim(namespace="default", name=meta["name"], uid=meta["uid"])]


async def measure(root: str, kubeconfig: str, iterations: int) -> tuple[list[str], bool]:
    client = await KubeClient.connect(kubeconfig)
    await client.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    s = settings_from_args(
        [
            "--backend", "mock", "--mock-devices", "8xH200", "--node-name", NODE, "--kubeconfig", kubeconfig,
            "--plugin-dir", f"{root}/plugins/{DRIVER}", "--registry-dir", f"{root}/registry",
            "--cdi-dir", f"{root}/cdi", "--host-lib-dir", f"{root}/lib", "--metrics-port", "0", "--healthz-port", "0",
        ],
        environ={},
    )  # fmt: skip
    driver = Driver(s)
    start = time.perf_counter()
    await driver.start()
    assert driver.publisher is not None and driver.preparer is not None
    await driver.publisher.published.wait()
    first_publish = time.perf_counter() - start
    preparer, publisher = driver.preparer, driver.publisher
    channel = grpc.aio.insecure_channel(f"unix://{s.dra_socket}")
    stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
    rows: list[tuple[str, list[float], float | None]] = []
    # The disk's floor: one durable atomic write (file fsync, rename, directory fsync), as the
    # PrepareCompleted record does, measured the same way right before the prepares.
    floor = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        await asyncio.to_thread(fsutil.write_atomic, f"{root}/floor.json", b"x" * 4096, durable=True)
        floor.append(time.perf_counter() - t0)
    rows.append(("durable atomic write of 4 KiB alone (the disk's floor, for reference)", floor, None))
    async def settle() -> None:
        # Each phase measures its own prepares: the claim status writes (background, after every
        # prepare and unprepare over gRPC) of the phase before are drained first.
        if driver.status_writer is not None:
            await driver.status_writer.flush(timeout=30.0)

    for devices in (1, 8):
        await settle()
        direct = []
        for i in range(iterations):
            obj = claim(f"d{devices}-{i}", devices, first=i)
            obj["metadata"]["uid"] = str(uuid.uuid4())
            ref = ClaimRef("default", obj["metadata"]["name"], obj["metadata"]["uid"])
            t0 = time.perf_counter()
            await preparer.prepare_claim(obj, ref)
            direct.append(time.perf_counter() - t0)
            await preparer.unprepare([ref])
        rows.append((f"prepare, {devices} device(s), API read excluded", direct, TARGET_PREPARE_P99_MS))
        await settle()
        full = []
        for i in range(iterations):
            obj = await store(client, claim(f"g{devices}-{i}", devices, first=i))
            claims = grpc_claims(obj)
            t0 = time.perf_counter()
            answer = await stub.NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(claims=claims))
            full.append(time.perf_counter() - t0)
            if answer.claims[claims[0].uid].error:
                raise RuntimeError(answer.claims[claims[0].uid].error)
            await stub.NodeUnprepareResources(dra_v1_pb2.NodeUnprepareResourcesRequest(claims=claims))
        rows.append((f"prepare, {devices} device(s), kubelet call over gRPC incl. API read", full, None))

    # 100 concurrent prepares, one kubelet call each, on 8 shared devices.
    await settle()
    many = [await store(client, claim(f"c-{i}", 1, first=i)) for i in range(100)]

    async def one(obj: dict[str, Any]) -> str:
        claims = grpc_claims(obj)
        answer = await stub.NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(claims=claims))
        return str(answer.claims[claims[0].uid].error)

    t0 = time.perf_counter()
    errors = [e for e in await asyncio.gather(*(one(o) for o in many)) if e]
    concurrent_wall = time.perf_counter() - t0
    await stub.NodeUnprepareResources(
        dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[c for o in many for c in grpc_claims(o)])
    )

    # Slice publish after a wipe (kubelet start): the publisher's watch is stopped so that it does
    # not race the measurement, and each reconcile is driven by hand.
    await publisher.stop()
    publish = []
    for _ in range(max(20, iterations // 10)):
        for item in (await client.list(SLICES_PATH))["items"]:
            await client.delete(f"{SLICES_PATH}/{item['metadata']['name']}")
        t0 = time.perf_counter()
        result = await publisher.reconcile()
        publish.append(time.perf_counter() - t0)
        assert result.created == 1
    await channel.close(None)
    await driver.stop()
    await client.close()

    ok = True
    lines = ["| measurement | n | p50 (ms) | p99 (ms) | target |", "|---|---|---|---|---|"]
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
        f"| driver start until the pool is published (discovery, sockets, node lookup, dry-run probe, list, "
        f"create) | 1 | {ms(first_publish)} | | |"
    )
    zero = not errors
    ok &= zero
    lines.append(
        f"| 100 concurrent prepares (one kubelet call each, 8 shared devices), wall time | 100 | "
        f"{ms(concurrent_wall)} | | errors: {len(errors)} ({'met' if zero else 'MISSED'}) |"
    )
    return lines, ok


def run(iterations: int) -> tuple[list[str], bool]:
    with api_server("tb") as root:
        return asyncio.run(measure(root, f"{root}/kubeconfig", iterations))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=300, help="prepares per latency measurement")
    args = parser.parse_args()
    lines, ok = run(args.iterations)
    header = [
        "# DRA driver benchmark",
        "",
        f"Command: `python -m bench.driver --iterations {args.iterations}` (also run by `make bench`).",
        f"{machine()}; files on the local disk (real fsync).",
        "",
        "Prepare = plan + PrepareStarted record + claim directory + CDI spec (atomic write) + PrepareCompleted "
        "record (fsync of file and directory); each claim is unprepared before the next one (steady state). "
        "The gRPC rows add the kubelet call over the Unix socket and the ResourceClaim GET from the API server "
        "stand-in (its own process, loopback HTTP, schema validation off). Slice publish = LIST + POST of the "
        "8-device slice after the node's slices were deleted. The driver runs as deployed (occupancy watch, "
        "claim status writes in the background); before each phase the status writes of the previous one are "
        "drained.",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    return write_report("driver", text, ok=ok, missed="driver benchmark: a target was missed")


if __name__ == "__main__":
    sys.exit(main())
