"""The driver goes away in the middle: pods wait for it instead of failing, and cleanup completes."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import Cluster, pod

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_pod_waits_for_a_stopped_driver_then_runs(cluster: Cluster, ns: str) -> None:
    node = (await cluster.control.nodes_with_devices())[0]
    await cluster.control.stop_driver(node, kill=True)
    try:
        await cluster.create(
            ns, pod("patient", "sleep 3600", limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000}, node=node)
        )
        await asyncio.sleep(2)
        assert await cluster.phase(ns, "patient") == "Pending"
    finally:
        await cluster.control.start_driver(node)
    await cluster.wait_running(ns, "patient")


async def test_driver_killed_while_a_pod_runs_then_delete_cleans_up(cluster: Cluster, ns: str) -> None:
    node = (await cluster.control.nodes_with_devices())[0]
    await cluster.create(
        ns, pod("survivor", "sleep 3600", limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000}, node=node)
    )
    await cluster.wait_running(ns, "survivor")
    (claim,) = await cluster.claims(ns, "survivor")
    uid = claim["metadata"]["uid"]
    await cluster.control.stop_driver(node, kill=True)
    await cluster.control.start_driver(node)
    assert await cluster.phase(ns, "survivor") == "Running"
    await cluster.delete_and_wait(ns, "survivor")

    async def node_clean() -> bool:
        return not any(
            uid in f for f in await cluster.control.cdi_specs(node)
        ) and uid not in await cluster.control.claim_dirs(node)

    await cluster.wait(node_clean, what="the restarted driver to unprepare the claim")
    # and the restarted driver prepares new claims
    await cluster.create(ns, pod("after", "true", limits={"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1000}, node=node))
    assert (await cluster.wait_done(ns, "after"))["status"]["phase"] == "Succeeded"
