"""In the local cluster: a pod that escapes libvgpu is killed by the driver's watchdog, with an Event.

A HAMi-style pod asks for 1 GiB of an H200 (``nvidia.com/gpumem: 1024``); the webhook converts it,
the scheduler allocates a share, the kubelet prepares it and runs the container, which loads a
second, unhooked copy of the (fake) CUDA driver with ``dlmopen(LM_ID_NEWLM, "libcuda.so.1")`` and
allocates 3 GiB. The driver's watchdog sees the process's memory through the fake NVML, finds its
pod from the container's cgroup (or, run with ``cgroups=False``, from the kubelet's PID map, as on a
machine where cgroups cannot be made), kills it and records a Warning Event naming the pod, the
limit and the usage. A neighbour on the same card within its limit keeps running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from e2e.cluster import Harness, NodeSpec
from e2e.tests.control import HarnessControl
from e2e.tests.helpers import Cluster, pod
from kubeapi import KubeClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

REASON = "TesseraMemoryLimitExceeded"


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["cgroups", "pid-map"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with Harness([NodeSpec("node-1", "1xH200")], cgroups=request.param == "cgroups") as harness:
        kubelet = harness.nodes["node-1"].kubelet
        assert kubelet is not None
        if request.param == "cgroups":
            assert kubelet.cgroups is not None, "this machine can create cgroups: the harness must use them"
        else:
            assert kubelet.pid_map is not None and kubelet.cgroups is None
        kube = await KubeClient.connect(harness.kubeconfig, timeout=30)
        try:
            yield Cluster(kube, HarnessControl(harness), timeout=60)
        finally:
            await kube.close()


async def test_a_dlmopen_escape_is_killed_and_an_event_names_pod_limit_and_usage(cluster: Cluster) -> None:
    ns = "default"
    limits = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1024}
    escape = "cuda-workload --route dlmopen --total-mib 3072 --step-mib 512 --hold-seconds 120"
    polite = "cuda-workload --total-mib 768 --step-mib 256 --hold-seconds 120"
    await cluster.create(ns, pod("polite", polite, limits=limits))
    await cluster.wait_running(ns, "polite")
    await cluster.logs_with(ns, "polite", "held 768 MiB")
    await cluster.create(ns, pod("escape", escape, limits=limits))

    done = await cluster.wait_done(ns, "escape")
    (status,) = done["status"]["containerStatuses"]
    terminated = status["state"]["terminated"]
    assert terminated["exitCode"] == 137, terminated  # SIGKILL
    assert "held 3072 MiB" in terminated["message"]  # it really got past its limit before

    events = await cluster.wait(lambda: cluster.events(ns, "escape", REASON), what=f"a {REASON} event")
    (event,) = events
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Pod" and event["involvedObject"]["uid"] == done["metadata"]["uid"]
    message = event["message"]
    assert "pod default/escape" in message
    assert "limit of 1024 MiB" in message
    assert "3072 MiB of device memory" in message
    assert "Killed process(es)" in message
    assert status["containerID"].removeprefix("tessera://")[:13] in message  # the container, by its ID

    assert await cluster.phase(ns, "polite") == "Running"
    assert await cluster.events(ns, "polite", REASON) == []
    await cluster.delete_and_wait(ns, "polite")
    await cluster.delete_and_wait(ns, "escape")
