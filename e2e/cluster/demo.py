"""The narrated demo: a HAMi-style pod in, a limited workload out.

1. The seed's ``gpu-pod12`` (2 GPUs, 10240 MiB and 30 % of the cores each) runs a workload that asks
   the fake CUDA driver for 12 GiB in 1 GiB steps: ``libvgpu.so`` answers ``cuMemGetInfo`` with
   10 GiB and the 11th step gets ``CUDA_ERROR_OUT_OF_MEMORY``.
2. Two pods share one card: both get a share of ``gpu-0`` (different shareIDs) and each sees only
   its own limit.
3. A pod asking more memory than any card has left stays Pending, with the scheduler's reason.
4. Everything is deleted: claims, CDI specs and claim directories go with the pods.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from kubeapi import RESOURCE_V1, namespaced_path

from .harness import REPO, Harness, NodeSpec, wait_for
from .narrate import Narrator, delete_and_wait, submit_and_show

Obj = dict[str, Any]


def seed_pod(name: str, path: Path = REPO / "examples" / "seed-pods.yaml") -> Obj:
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if isinstance(doc, dict) and doc.get("metadata", {}).get("name") == name:
            return doc
    raise KeyError(f"{path} has no pod named {name}")


def gpu_pod(name: str, memory_mib: int, command: list[str], *, gpus: int = 1) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "ubuntu:22.04",
                    "command": command,
                    "resources": {"limits": {"nvidia.com/gpu": gpus, "nvidia.com/gpumem": memory_mib}},
                }
            ],
        },
    }


async def run_demo(narrator: Narrator, *, devices: str = "2xH200", keep: bool = False) -> int:
    started = time.monotonic()
    narrator.title("Tessera demo: HAMi-style GPU sharing on Kubernetes DRA, on a local cluster")
    narrator.say(
        "Starting the local cluster: API server, admission webhook, DRA driver (mock backend, "
        f"{devices}), claim controller, scheduler and kubelet..."
    )
    async with Harness([NodeSpec("node-1", devices)], keep_state=keep) as harness:
        kube = harness.kube
        assert kube is not None
        narrator.say(f"Cluster up in {time.monotonic() - started:.1f}s (state and logs in {harness.state}).")
        slices = (await kube.list(f"{RESOURCE_V1}/resourceslices")).get("items") or []
        narrator.step("the driver published these devices")
        narrator.block(
            [
                {
                    "device": d["name"],
                    "type": d["attributes"]["type"]["string"],
                    "uuid": d["attributes"]["uuid"]["string"],
                    "capacity": {k: v["value"] for k, v in d.get("capacity", {}).items()},
                    "allowMultipleAllocations": d.get("allowMultipleAllocations", False),
                }
                for s in slices
                for d in s["spec"]["devices"]
            ]
        )

        narrator.title("1. gpu-pod12: 2 GPUs, 10240 MiB and 30 % of the cores each")
        pod = seed_pod("gpu-pod12")
        pod["spec"]["restartPolicy"] = "Never"
        pod["spec"]["containers"][0]["command"] = ["cuda-workload", "--total-mib", "12288", "--step-mib", "1024"]
        narrator.say(
            "The workload allocates 12 GiB in 1 GiB steps on its first GPU (cuda-workload against the fake "
            "CUDA driver, with libvgpu.so preloaded as the CDI spec asks)."
        )
        done = await submit_and_show(harness, narrator, pod, wait="done")
        output = await kube.text(
            namespaced_path("v1", "pods", "default", "gpu-pod12") + "/log",
            container=pod["spec"]["containers"][0]["name"],
        )
        ok = "CUDA_ERROR_OUT_OF_MEMORY" in output and "total=10240 MiB" in output
        narrator.say(
            "=> cuMemGetInfo reports 10240 MiB and the 11th GiB is refused with CUDA_ERROR_OUT_OF_MEMORY."
            if ok
            else "=> UNEXPECTED: the workload was not limited to 10 GiB (see the output above)"
        )
        del done

        narrator.title("2. two pods sharing one card")
        hold = ["sh", "-c", "cuda-workload --total-mib 8192 --step-mib 4096 && sleep 3600"]
        first = await submit_and_show(harness, narrator, gpu_pod("share-a", 20000, hold), wait="running")
        second = await submit_and_show(harness, narrator, gpu_pod("share-b", 30000, hold), wait="running")
        shares = []
        for p in (first, second):
            claim_name = p["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
            claim = await kube.get(namespaced_path("resource.k8s.io/v1", "resourceclaims", "default", claim_name))
            result = claim["status"]["allocation"]["devices"]["results"][0]
            shares.append(
                (p["metadata"]["name"], result["device"], result["shareID"], result["consumedCapacity"]["memory"])
            )
        for name, device, share, memory in shares:
            narrator.say(f"   {name}: device {device}, shareID {share}, memory {memory}")
        shared = shares[0][1] == shares[1][1]
        narrator.say(
            "=> both pods hold a share of the same card, each limited to its own memory."
            if shared
            else "=> UNEXPECTED: the pods landed on different cards"
        )
        for name in ("share-a", "share-b"):

            async def limited(name: str = name) -> str | None:
                text = await kube.text(namespaced_path("v1", "pods", "default", name) + "/log", container="main")
                return text if "after allocation" in text else None

            text = await wait_for(limited, timeout=30, what=f"{name}'s workload output")
            narrator.step(f"output of {name}/main so far")
            narrator.block(text)

        narrator.title("3. a pod that cannot fit")
        narrator.say(
            "It asks for 2 cards with 100000 MiB each; share-a and share-b hold 50000 MiB of gpu-0, so only "
            "gpu-1 has that much left (gpu-pod12 finished and gave its shares back)."
        )
        await submit_and_show(
            harness, narrator, gpu_pod("too-big", 100000, ["true"], gpus=2), wait="pending", timeout=30
        )

        narrator.title("4. cleaning up")
        node = harness.nodes["node-1"]
        narrator.say(
            f"before: {len(os.listdir(node.cdi_dir))} CDI spec(s), "
            f"{len(os.listdir(os.path.join(node.host_lib_dir, 'claims')))} claim dir(s)"
        )
        await delete_and_wait(kube, "default", ["gpu-pod12", "share-a", "share-b", "too-big"])

        async def clean() -> bool:
            claims = (await kube.list(namespaced_path("resource.k8s.io/v1", "resourceclaims", "default")))["items"]
            return (
                not claims
                and not os.listdir(node.cdi_dir)
                and not os.listdir(os.path.join(node.host_lib_dir, "claims"))
            )

        await wait_for(clean, timeout=30, what="claims, CDI specs and claim dirs to go")
        narrator.say("after: 0 claims, 0 CDI specs, 0 claim dirs")
        narrator.title(f"done in {time.monotonic() - started:.1f}s")
        if keep:
            narrator.say(f"--keep: state left in {harness.state}")
        return 0 if ok and shared else 1
