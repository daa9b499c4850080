"""The node exporter as Prometheus reads it: every family parses with Prometheus's text parser, follows
the naming conventions, and is documented in docs/driver.md (the dashboards use documented names
only); a multi-container pod with several devices per container is labelled per container and device.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from e2e.apiserver import APIServer

from .helpers import claim, request, result, running_driver, settings, write_text
from .kubelet import Claim, Kubelet
from .test_observability import free_port, scrape

DOCS = Path(__file__).resolve().parents[2] / "docs" / "driver.md"
NAME = re.compile(r"^(tessera|hami)_[a-z0-9_]*[a-z0-9]$")
LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")
UNITS = ("bytes", "seconds", "celsius", "watts", "ratio", "percent")
HAMI_RATIO_0_100 = {
    "hami_container_device_utilization_ratio",
    "hami_host_gpu_utilization_ratio",
}
"""HAMi's own names whose values are on its 0-100 scale (kept for its dashboards)."""
HAMI_VGPU_MONITOR = {
    "hami_host_gpu_memory_used_bytes",
    "hami_host_gpu_utilization_ratio",
    "hami_host_gpu_memory_controller_utilization_ratio",
    "hami_vgpu_memory_used_bytes",
    "hami_vgpu_memory_limit_bytes",
    "hami_container_device_memory_bytes",
    "hami_container_device_utilization_ratio",
    "hami_container_last_kernel_elapsed_seconds",
}
"""The names of HAMi's vGPU monitor (its node-side exporter): the only HAMi names a driver may export.
HAMi's scheduler names (``hami_gpu_*``, ``hami_node_gpu_*``, ``hami_vgpu_*_allocated_*``) are the
cluster exporter's."""
GIB = 1 << 30


async def test_exporter_parses_follows_conventions_and_is_documented(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    port = free_port()
    s = settings(
        root, kubeconfig, "2xH100", "--metrics-port", str(port), "--listen-address", "127.0.0.1", "--hami-metrics"
    )
    # one pod, two containers: "main" with two devices, "sidecar" with a share of the second
    pod = claim(
        "pod-a-gpus",
        [
            result("gpu-0", "main", memory="8Gi", cores="20"),
            result("gpu-1", "main", memory="8Gi", cores="20"),
            result("gpu-1", "sidecar", memory="2Gi"),
        ],
        [
            request("main", count=2, capacity={"memory": "8Gi", "cores": "20"}),
            request("sidecar", capacity={"memory": "2Gi"}),
        ],
    )
    pod["status"]["reservedFor"] = [
        {"resource": "pods", "name": "pod-a", "uid": "6a1c0a52-0000-4000-8000-00000000000a"}
    ]
    api.store.put(pod)
    async with running_driver(s) as driver:
        kubelet = await Kubelet(s.registry_dir).register()
        await kubelet.prepare(Claim("default", "pod-a-gpus", pod["metadata"]["uid"]))
        await kubelet.prepare(Claim("default", "missing", "0"))  # an error counter too
        await kubelet.close()
        write_text(s.mock_faults, "gpu-1 ecc\n")
        assert driver.monitor is not None
        await driver.monitor.check()
        text = await scrape(port)
        gpu0, gpu1 = driver.devices

    parsed = list(text_string_to_metric_families(text))
    # the client library's creation timestamp of each counter and histogram (``<name>_created``)
    bases = {f.name for f in parsed if f.type in ("counter", "histogram")}
    families = [f for f in parsed if not (f.name.endswith("_created") and f.name[: -len("_created")] in bases)]
    documented = DOCS.read_text()
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in families:
        assert NAME.match(family.name), family.name
        assert family.documentation.strip(), f"{family.name} has no HELP"
        assert f"`{family.name}" in documented, f"{family.name} is not documented in docs/driver.md"
        if family.type == "counter":
            assert all(x.name in (f"{family.name}_total", f"{family.name}_created") for x in family.samples)
        else:
            assert not family.name.endswith("_total"), f"{family.name}: _total is for counters"
        for word in UNITS:
            if word in family.name.split("_")[:-1] and family.type != "histogram":
                assert family.name.endswith(f"_{word}"), f"{family.name}: the unit goes last"
        for x in family.samples:
            assert all(LABEL.match(k) and not k.startswith("__") for k in x.labels), x
            key = (x.name, tuple(sorted(x.labels.items())))
            assert key not in seen, f"duplicate series {key}"
            seen.add(key)
            assert not math.isnan(x.value), x
            if family.name.endswith("_ratio") and family.name not in HAMI_RATIO_0_100:
                assert 0.0 <= x.value <= 1.0, x
    names = {f.name for f in families}
    assert {
        "tessera_container_memory_limit_bytes",
        "tessera_device_memory_used_bytes",
        "tessera_dra_device_healthy",
        "hami_vgpu_memory_limit_bytes",
        "hami_host_gpu_memory_used_bytes",
    } <= names
    hami_names = {n for n in names if n.startswith("hami_")}
    assert hami_names <= HAMI_VGPU_MONITOR, f"HAMi scheduler names belong to the cluster exporter: {hami_names}"

    limits = {
        (x.labels["container"], x.labels["device"], x.labels["uuid"], x.labels["index"], x.labels["pod"]): x.value
        for f in families
        if f.name == "tessera_container_memory_limit_bytes"
        for x in f.samples
    }
    assert limits == {
        ("main", "gpu-0", gpu0.uuid, "0", "pod-a"): 8 * GIB,
        ("main", "gpu-1", gpu1.uuid, "1", "pod-a"): 8 * GIB,
        ("sidecar", "gpu-1", gpu1.uuid, "1", "pod-a"): 2 * GIB,
    }
    hami = {
        (x.labels["container"], x.labels["vdevice_index"], x.labels["device_uuid"]): x.value
        for f in families
        if f.name == "hami_vgpu_memory_limit_bytes"
        for x in f.samples
    }
    assert hami == {
        ("main", "0", gpu0.uuid): 8 * GIB,
        ("main", "1", gpu1.uuid): 8 * GIB,
        ("sidecar", "0", gpu1.uuid): 2 * GIB,
    }
