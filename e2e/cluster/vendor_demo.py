"""The narrated demo for a vendor other than NVIDIA: ``python -m e2e.cluster demo --vendor ascend``.

One node of the vendor (its real driver, mock backend), and one HAMi-style pod of that vendor as users
write it (the founding talk's seed pod; Hygon: ``examples/hygon-pod.yaml``) with its command replaced
by one that shows what the container got: as submitted, as the webhook mutated it, its claim and
allocation, the CDI spec the driver wrote, and the output. Simulated devices have no device nodes and
no vendor runtime, so the output shows the settings that runtime (or, for Iluvatar, ``libvgpu.so``
against the fake CUDA driver) enforces.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubeapi import RESOURCE_V1, namespaced_path
from vendors.base import (
    ATTR_ARCHITECTURE,
    ATTR_DRIVER_VERSION,
    ATTR_INDEX,
    ATTR_NUMA_NODE,
    ATTR_PCIE_BUS_ID,
    ATTR_PRODUCT_NAME,
    ATTR_TYPE,
    ATTR_UUID,
)

from .harness import REPO, Harness, NodeSpec, wait_for
from .narrate import Narrator, delete_and_wait, pod_log, submit_and_show

Obj = dict[str, Any]
SEEDS = REPO / "examples" / "seed-pods.yaml"


@dataclass(frozen=True)
class VendorDemo:
    vendor: str
    title: str
    source: Path
    pod: str
    command: tuple[str, ...]
    explain: str
    expect: tuple[str, ...]
    """Every one of these must be in the output for the demo to succeed."""
    verdict: str


def _show_env(prefixes: str) -> str:
    return f"env | grep -E '^({prefixes})' | sort"


DEMOS: Mapping[str, VendorDemo] = {
    d.vendor: d
    for d in (
        VendorDemo(
            "ascend",
            "ascend-pod: one Ascend 910 with 16384 MiB (a vNPU)",
            SEEDS,
            "ascend-pod",
            ("sh", "-c", _show_env("ASCEND_|TESSERA_LIMIT_ENFORCER")),
            "The node runs in template mode: the scheduler rounds the memory up to one of the chip's vNPU "
            "templates (validValues of the memory capacity), and the container gets the chip and the "
            "template in ASCEND_VISIBLE_DEVICES / ASCEND_VNPU_SPECS, from which the Ascend Docker Runtime "
            "creates the vNPU (no runtime here: the output shows what it would read).",
            ("ASCEND_VISIBLE_DEVICES=", "ASCEND_VNPU_SPECS=", "TESSERA_LIMIT_ENFORCER=ascend-vnpu-template"),
            "=> the container names its chip and vNPU template, for the Ascend Docker Runtime to create.",
        ),
        VendorDemo(
            "cambricon",
            "mlu-pod: one MLU, 20 % of its memory and 10 % of its compute (an sMLU)",
            SEEDS,
            "mlu-pod",
            ("sh", "-c", _show_env("CAMBRICON_|TESSERA_LIMIT_ENFORCER")),
            "cambricon.com/mlu.smlu.vmemory is a percentage of the card (the talk's meaning): the webhook "
            "turns it into MiB from the devices the ResourceSlices publish, and the driver writes the sMLU "
            "profile <card>_<vcore>_<units> that Cambricon's runtime creates the sMLU from.",
            ("CAMBRICON_VISIBLE_DEVICES=", "CAMBRICON_DSMLU_PROFILE=", "CAMBRICON_SPLIT_MEMS="),
            "=> the container gets its sMLU profile and split settings for Cambricon's runtime.",
        ),
        VendorDemo(
            "hygon",
            "dcu-pod: one DCU, 8192 MiB and 30 % of its compute units (a vdev)",
            REPO / "examples" / "hygon-pod.yaml",
            "dcu-pod",
            (
                "sh",
                "-c",
                _show_env("TESSERA_LIMIT_ENFORCER")
                + '; for f in "$0"/vdev*.conf; do echo "vdev config $(basename "$f"):"; cat "$f"; done',
                "/etc/vdev/docker/",
            ),
            "The driver writes a vdev config (memory size, compute-unit mask) into the claim's directory "
            "and mounts it at /etc/vdev/docker/, where the Hygon driver stack reads it; the process runtime "
            "maps that path to the host directory.",
            ("TESSERA_LIMIT_ENFORCER=hygon-vdev", "mem: 8192 MiB", "cu_count: "),
            "=> the container's vdev config holds 8192 MiB and its share of the compute units.",
        ),
        VendorDemo(
            "iluvatar",
            "iluvatar-pod: one GPU, 64 x 256 MiB of memory and 50 % of its cores (a vGPU)",
            SEEDS,
            "iluvatar-pod",
            (
                "sh",
                "-c",
                _show_env("IX_VISIBLE_DEVICES|CUDA_DEVICE_|TESSERA_LIMIT_ENFORCER")
                + "; cuda-workload --total-mib 20480 --step-mib 4096; exit 0",
            ),
            "CoreX implements the CUDA driver API, so libvgpu.so enforces the vGPU as for NVIDIA: the "
            "workload asks the fake CUDA driver for 20 GiB in 4 GiB steps under a 16384 MiB limit.",
            ("IX_VISIBLE_DEVICES=", "total=16384 MiB", "CUDA_ERROR_OUT_OF_MEMORY"),
            "=> cuMemGetInfo reports 16384 MiB and the step past it is refused with CUDA_ERROR_OUT_OF_MEMORY.",
        ),
    )
}
DEMO_VENDORS = frozenset({"nvidia", *DEMOS})

_COMMON_ATTRIBUTES = {
    ATTR_UUID,
    ATTR_INDEX,
    ATTR_PRODUCT_NAME,
    ATTR_TYPE,
    ATTR_ARCHITECTURE,
    ATTR_NUMA_NODE,
    ATTR_PCIE_BUS_ID,
    ATTR_DRIVER_VERSION,
}


def example_pod(demo: VendorDemo) -> Obj:
    for doc in yaml.safe_load_all(demo.source.read_text(encoding="utf-8")):
        if isinstance(doc, dict) and (doc.get("metadata") or {}).get("name") == demo.pod:
            pod = copy.deepcopy(doc)
            pod["spec"]["restartPolicy"] = "Never"
            pod["spec"]["terminationGracePeriodSeconds"] = 2
            pod["spec"]["containers"][0]["command"] = list(demo.command)
            return pod
    raise KeyError(f"{demo.source} has no pod named {demo.pod}")


def _value(attribute: Mapping[str, Any]) -> Any:
    return next(iter(attribute.values())) if attribute else None


def device_rows(slices: Sequence[Obj]) -> list[Obj]:
    """What the demo shows of each published device."""
    rows = []
    for s in slices:
        for d in s["spec"].get("devices") or []:
            attributes = d.get("attributes") or {}
            row: Obj = {
                "device": d["name"],
                "type": _value(attributes.get(ATTR_TYPE, {})),
                "uuid": _value(attributes.get(ATTR_UUID, {})),
                "capacity": {k: v["value"] for k, v in (d.get("capacity") or {}).items()},
            }
            extra = {k: _value(v) for k, v in attributes.items() if k not in _COMMON_ATTRIBUTES}
            if extra:
                row["attributes"] = extra
            memory = (d.get("capacity") or {}).get("memory") or {}
            valid = ((memory.get("requestPolicy") or {}).get("validValues")) or []
            if valid:
                row["memory validValues"] = valid
            row["allowMultipleAllocations"] = d.get("allowMultipleAllocations", False)
            rows.append(row)
    return rows


async def run_vendor_demo(narrator: Narrator, vendor: str, *, devices: str = "", keep: bool = False) -> int:
    demo = DEMOS[vendor]
    started = time.monotonic()
    node_name = f"{vendor}-1"
    narrator.title(f"Tessera demo: HAMi-style {vendor} sharing on Kubernetes DRA, on a local cluster")
    narrator.say(
        f"Starting the local cluster: API server, admission webhook, the {vendor} DRA driver (mock backend, "
        f"{devices or 'devices from the chart values'}), claim controller, scheduler and kubelet..."
    )
    async with Harness([NodeSpec(node_name, devices, vendor=vendor)], keep_state=keep) as harness:
        kube = harness.kube
        assert kube is not None
        node = harness.nodes[node_name]
        narrator.say(
            f"Cluster up in {time.monotonic() - started:.1f}s: node {node_name} labelled tessera.dev/{vendor}=true, "
            f"{node.spec.devices} (state and logs in {harness.state})."
        )
        slices = (await kube.list(f"{RESOURCE_V1}/resourceslices")).get("items") or []
        narrator.step(f"the {node.driver_name} driver published these devices")
        narrator.block(device_rows(slices))

        narrator.title(demo.title)
        narrator.say(demo.explain)
        pod = example_pod(demo)
        name = pod["metadata"]["name"]
        done = await submit_and_show(harness, narrator, pod, wait="done")
        output = await pod_log(kube, "default", name, pod["spec"]["containers"][0]["name"])
        missing = [e for e in demo.expect if e not in output]
        placed = (done.get("spec") or {}).get("nodeName") == node_name
        ok = not missing and placed and (done.get("status") or {}).get("phase") == "Succeeded"
        narrator.say(
            demo.verdict
            if ok
            else f"=> UNEXPECTED: phase {(done.get('status') or {}).get('phase')}, node "
            f"{(done.get('spec') or {}).get('nodeName')}, missing from the output: {missing}"
        )

        narrator.title("cleaning up")
        claims_dir = os.path.join(node.host_lib_dir, "claims")

        def claim_dirs() -> list[str]:
            return os.listdir(claims_dir) if os.path.isdir(claims_dir) else []

        claims_path = namespaced_path("resource.k8s.io/v1", "resourceclaims", "default")
        left = len((await kube.list(claims_path)).get("items") or [])
        specs, dirs = len(os.listdir(node.cdi_dir)), len(claim_dirs())
        narrator.say(
            "the pod finished: the kubelet unprepared its claim (CDI spec and claim dir gone) and the claim "
            "controller deleted the claim"
            if not (left or specs or dirs)
            else f"before: {left} claim(s), {specs} CDI spec(s), {dirs} claim dir(s)"
        )
        await delete_and_wait(kube, "default", [name])

        async def clean() -> bool:
            claims = (await kube.list(claims_path)).get("items") or []
            return not claims and not os.listdir(node.cdi_dir) and not claim_dirs()

        await wait_for(clean, timeout=30, what="the claim, its CDI spec and its claim dir to go")
        narrator.say("after: 0 claims, 0 CDI specs, 0 claim dirs")
        narrator.title(f"done in {time.monotonic() - started:.1f}s")
        if keep:
            narrator.say(f"--keep: state left in {harness.state}")
        return 0 if ok else 1
