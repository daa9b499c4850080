"""Init containers get their share too and run first, one after the other."""

from __future__ import annotations

import datetime as dt

import pytest

from .helpers import SHOW, Cluster, env_of, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")


def ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_init_containers_run_first_with_their_own_limits(cluster: Cluster, ns: str) -> None:
    spec = pod(
        "with-init",
        f"{SHOW}",
        limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 2000},
        init=[
            ("prepare", f"{SHOW}; sleep 1", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000}),
            ("plain", "echo no-gpu", {}),
        ],
    )
    created = await cluster.create(ns, spec)
    init = created["spec"]["initContainers"]
    assert init[0]["resources"].get("claims") and not init[1]["resources"].get("claims")
    done = await cluster.wait_done(ns, "with-init")
    assert done["status"]["phase"] == "Succeeded"
    statuses = {s["name"]: s["state"]["terminated"] for s in done["status"]["initContainerStatuses"]}
    main = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert statuses["prepare"]["exitCode"] == 0 and statuses["plain"]["exitCode"] == 0
    assert ts(statuses["prepare"]["finishedAt"]) <= ts(statuses["plain"]["startedAt"])
    assert ts(statuses["plain"]["finishedAt"]) <= ts(main["startedAt"])
    assert env_of(await cluster.logs(ns, "with-init", "prepare"))["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1000m"
    assert env_of(await cluster.logs(ns, "with-init", "main"))["CUDA_DEVICE_MEMORY_LIMIT_0"] == "2000m"
    assert "CUDA_DEVICE_MEMORY_LIMIT_0" not in env_of(await cluster.logs(ns, "with-init", "plain"))
