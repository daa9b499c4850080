"""The user's path with the real ``kubectl``: apply the seed pods as written (validated by the
server's OpenAPI, no ``--validate=false``), wait for them, read the tables ``kubectl get`` prints, the
claims the scheduler allocated, logs (also followed) and a command run in a container with its
devices (``kubectl exec``), and server-side apply with its conflicts.

On the harness this module starts a cluster with nodes for every vendor and enough NVIDIA cards for
every seed pod (two nodes of ``4xH200,2xA100``: ``gpu-policy-pod`` asks node spread, so the shares
may take an H200 on each node, and ``gpu-pod2`` still needs two whole H200 on one); with
``TESSERA_E2E_KUBECONFIG`` it uses that cluster and only the Kubernetes API (the kind cluster of
``e2e/kind`` has two H200 per node: there ``gpu-pod2`` can stay pending when the spread seed pod
lands on the other node first). Skipped, with the reason,
where no ``kubectl`` is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import random
import re
import shutil
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from e2e.cluster import NodeSpec
from kubeapi import KubeError
from vendors import node_vendor

from .helpers import IMAGE, Cluster, open_cluster

pytestmark = pytest.mark.asyncio(loop_scope="session")

SEED_FILE = Path(__file__).resolve().parents[2] / "examples" / "seed-pods.yaml"
SEEDS: dict[str, dict[str, Any]] = {
    d["metadata"]["name"]: d for d in yaml.safe_load_all(SEED_FILE.read_text(encoding="utf-8")) if d
}
OTHER_VENDORS = ("ascend", "cambricon", "hygon", "iluvatar")
HARNESS_NODES = [
    # Four H200 each: whatever node the seeds' shares land on (gpu-policy-pod asks node spread), two whole
    # non-A100 cards stay free on one node for gpu-pod2 (the shares take at most four cards in all).
    NodeSpec("node-1", "4xH200,2xA100"),
    NodeSpec("node-2", "4xH200,2xA100"),
    *(NodeSpec(f"{v}-1", vendor=v) for v in OTHER_VENDORS),
]
SEED_VENDOR = {"ascend-pod": "ascend", "iluvatar-pod": "iluvatar", "mlu-pod": "cambricon"}
"""Seed pods of vendors other than NVIDIA (the rest are NVIDIA's or Volcano's)."""
WAITS_FOR_ITS_SCHEDULER = "volcano-gpu-pod12"
"""Names schedulerName: volcano, which neither cluster runs: it stays Pending, as on a real cluster."""
KUBECTL = shutil.which("kubectl")


async def kubectl(
    cluster: Cluster, *args: str, stdin: bytes | None = None, timeout: float = 120.0
) -> tuple[int, str, str]:
    """Run kubectl against the cluster: (exit code, stdout, stderr)."""
    assert KUBECTL is not None
    env = {**os.environ, "KUBECONFIG": cluster.control.kubeconfig}
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"kubectl {' '.join(args)} did not finish in {timeout:g}s") from None
    return int(proc.returncode or 0), out.decode(), err.decode()


async def ok(cluster: Cluster, *args: str, stdin: bytes | None = None, timeout: float = 120.0) -> str:
    code, out, err = await kubectl(cluster, *args, stdin=stdin, timeout=timeout)
    assert code == 0, f"kubectl {' '.join(args)} exited with {code}: {err or out}"
    return out


def table(text: str) -> list[dict[str, str]]:
    """kubectl's human-readable output as rows keyed by header (columns cut where the header's start:
    kubectl pads columns with at least three spaces, and headers such as NOMINATED NODE hold one)."""
    lines = [line for line in text.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", lines[0])]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [lines[0][a:b].strip() for a, b in bounds]
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for line in lines[1:]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def every_vendor() -> AsyncIterator[Cluster]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (the e2e path with the real kubectl needs it on PATH)")
    async with open_cluster(HARNESS_NODES) as opened:
        yield opened


@pytest_asyncio.fixture(loop_scope="session")
async def kns(every_vendor: Cluster) -> AsyncIterator[str]:
    name = "e2e-kubectl-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
    await ok(every_vendor, "create", "namespace", name)
    try:
        yield name
    finally:
        await kubectl(every_vendor, "delete", "namespace", name, "--wait=false")
        with contextlib.suppress(KubeError):
            await every_vendor.wait(lambda: every_vendor.gone(f"/api/v1/namespaces/{name}"), what=f"{name} to go")


async def published(cluster: Cluster) -> set[str]:
    slices = (await cluster.kube.list("/apis/resource.k8s.io/v1/resourceslices")).get("items") or []
    return {s["spec"]["driver"] for s in slices if s["spec"].get("devices")}


async def test_seed_pods_with_kubectl(every_vendor: Cluster, kns: str) -> None:
    cluster = every_vendor
    drivers = await published(cluster)
    present = {name for name, vendor in SEED_VENDOR.items() if node_vendor(vendor).names.driver in drivers}
    if "mlu-pod" in present:  # its memory is a percentage: the webhook must have seen the Cambricon cards
        await cluster.wait(
            lambda: cluster.webhook_converts(kns, copy.deepcopy(SEEDS["mlu-pod"])),
            what="the webhook to see the published Cambricon devices",
        )
    runnable = sorted(n for n in SEEDS if n != WAITS_FOR_ITS_SCHEDULER and (n not in SEED_VENDOR or n in present))

    # kubectl apply validates against the server's OpenAPI and sends fieldValidation=Strict
    code, out, err = await kubectl(cluster, "apply", "-n", kns, "-f", str(SEED_FILE))
    for name in [*runnable, WAITS_FOR_ITS_SCHEDULER]:
        assert f"pod/{name} created" in out, (out, err)
    assert code == 0 or "mlu-pod" not in present, err

    await ok(cluster, "wait", "-n", kns, "--for=condition=Ready", "--timeout=120s", *(f"pod/{n}" for n in runnable))
    await ok(cluster, "wait", "-n", kns, "--for=jsonpath={.status.phase}=Running", "pod/gpu-pod12", "--timeout=60s")

    pods = {row["NAME"]: row for row in table(await ok(cluster, "get", "pods", "-n", kns))}
    assert set(pods) >= {*runnable, WAITS_FOR_ITS_SCHEDULER}
    for name in runnable:
        assert pods[name]["STATUS"] == "Running" and pods[name]["READY"] == "1/1", pods[name]
        assert pods[name]["RESTARTS"] == "0"
    assert pods[WAITS_FOR_ITS_SCHEDULER]["STATUS"] == "Pending" and pods[WAITS_FOR_ITS_SCHEDULER]["READY"] == "0/1"
    wide = {row["NAME"]: row for row in table(await ok(cluster, "get", "pods", "-n", kns, "-o", "wide"))}
    nodes = {row["NAME"] for row in table(await ok(cluster, "get", "nodes"))}
    assert all(wide[n]["NODE"] in nodes for n in runnable)
    assert wide[WAITS_FOR_ITS_SCHEDULER]["NODE"] == "<none>"

    # the claims the scheduler allocated (and reserved for the pods), as kubectl shows them
    claims = table(await ok(cluster, "get", "resourceclaims", "-n", kns))
    assert [set(row) for row in claims[:1]] == [{"NAME", "STATE", "AGE"}]
    state = {row["NAME"].rsplit("-tessera-", 1)[0]: row["STATE"] for row in claims}
    for name in runnable:
        assert state[name] == "allocated,reserved", claims
    assert state[WAITS_FOR_ITS_SCHEDULER] == "pending"
    slices = table(await ok(cluster, "get", "resourceslices"))
    assert {"NODE", "DRIVER", "POOL"} <= set(slices[0]) and {row["DRIVER"] for row in slices} >= drivers

    # the claim's status as kube-scheduler writes it: reservedFor names the pod by resource, name and uid
    pod = await cluster.get(kns, "gpu-priority-pod")
    (claim,) = await cluster.claims(kns, "gpu-priority-pod")
    assert claim["status"]["reservedFor"] == [
        {"resource": "pods", "name": "gpu-priority-pod", "uid": pod["metadata"]["uid"]}
    ]
    # nvidia.com/gpumem: 3000 reached the webhook as "3k" and is still 3000 MiB
    assert claim["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"]["memory"] == "3000Mi"

    # kubectl exec: a command in the container, with what its devices give it (the 3000 MiB share)
    env = await ok(
        cluster, "exec", "-n", kns, "gpu-priority-pod", "--", "sh", "-c", "echo limit=$CUDA_DEVICE_MEMORY_LIMIT_0"
    )
    assert env.strip() == "limit=3000m", env
    code, _, _ = await kubectl(cluster, "exec", "-n", kns, "gpu-priority-pod", "--", "sh", "-c", "exit 3")
    assert code == 3
    echoed = await ok(
        cluster,
        "exec",
        "-i",
        "-n",
        kns,
        "ascend-pod" if "ascend-pod" in present else "gpu-pod12",
        "--",
        "cat",
        stdin=b"through stdin\n",
    )
    assert echoed == "through stdin\n"


async def test_logs_and_follow_with_kubectl(every_vendor: Cluster, kns: str) -> None:
    cluster = every_vendor
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ticker"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo tick-$i; sleep 0.4; done"],
                    "resources": {"limits": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1024}},
                }
            ],
        },
    }
    await ok(cluster, "apply", "-n", kns, "-f", "-", stdin=yaml.safe_dump(manifest).encode())
    await ok(cluster, "wait", "-n", kns, "--for=jsonpath={.status.phase}=Running", "pod/ticker", "--timeout=60s")
    followed = await ok(cluster, "logs", "-f", "-n", kns, "ticker", timeout=60)
    assert [line for line in followed.splitlines() if line.startswith("tick-")] == [f"tick-{i}" for i in range(1, 6)]
    await ok(cluster, "wait", "-n", kns, "--for=jsonpath={.status.phase}=Succeeded", "pod/ticker", "--timeout=60s")
    assert (await ok(cluster, "logs", "-n", kns, "ticker", "--tail=2")).split() == ["tick-4", "tick-5"]
    row = table(await ok(cluster, "get", "pod", "ticker", "-n", kns))[0]
    assert row["STATUS"] == "Completed" and row["READY"] == "0/1"
    code, _, err = await kubectl(cluster, "exec", "-n", kns, "ticker", "--", "true")
    assert code != 0 and "completed pod" in err


async def test_strict_validation_and_server_side_apply_with_kubectl(every_vendor: Cluster, kns: str) -> None:
    cluster = every_vendor
    typo = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "typo"},
        "spec": {"containers": [{"name": "main", "image": IMAGE, "comand": ["true"]}]},
    }
    code, _, err = await kubectl(cluster, "apply", "-n", kns, "-f", "-", stdin=yaml.safe_dump(typo).encode())
    assert code != 0 and 'strict decoding error: unknown field "spec.containers[0].comand"' in err, err

    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}}
    applied = await ok(cluster, "apply", "--server-side", "-n", kns, "-f", "-", stdin=yaml.safe_dump(config).encode())
    assert "serverside-applied" in applied
    config["data"] = {"a": "1", "c": "3"}  # b is no longer applied: it goes
    await ok(cluster, "apply", "--server-side", "-n", kns, "-f", "-", stdin=yaml.safe_dump(config).encode())
    current = await cluster.kube.get(f"/api/v1/namespaces/{kns}/configmaps/settings")
    assert current["data"] == {"a": "1", "c": "3"}
    (entry,) = current["metadata"]["managedFields"]
    assert entry["manager"] == "kubectl" and entry["operation"] == "Apply"
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}, "f:c": {}}}
    await ok(cluster, "patch", "-n", kns, "configmap", "settings", "-p", '{"data":{"a":"9"}}')
    code, _, err = await kubectl(
        cluster, "apply", "--server-side", "-n", kns, "-f", "-", stdin=yaml.safe_dump(config).encode()
    )
    assert code != 0 and 'conflict with "kubectl-patch"' in err and ".data.a" in err, err
    await ok(
        cluster,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-n",
        kns,
        "-f",
        "-",
        stdin=yaml.safe_dump(config).encode(),
    )
    assert (await cluster.kube.get(f"/api/v1/namespaces/{kns}/configmaps/settings"))["data"]["a"] == "1"
