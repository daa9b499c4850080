"""The e2e tests run against a kubeconfig: ``TESSERA_E2E_KUBECONFIG`` names a real cluster (kind, set
up by ``e2e/kind/run.sh``); without it one local harness is started for the whole session.

Both present the same inventory: two nodes with ``2xH200,2xA100`` simulated cards each.
"""

from __future__ import annotations

import os
import random
import string
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from e2e.cluster import NodeSpec
from kubeapi import KubeError

from .helpers import Cluster, open_cluster

DEVICES = "2xH200,2xA100"
NODES = [NodeSpec("node-1", DEVICES), NodeSpec("node-2", DEVICES)]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # every module here also sets pytestmark = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.timeout(float(os.environ.get("TESSERA_E2E_TEST_TIMEOUT", "180"))))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cluster() -> AsyncIterator[Cluster]:
    async with open_cluster(NODES) as opened:
        yield opened


@pytest_asyncio.fixture(loop_scope="session")
async def ns(cluster: Cluster) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted (with what is left in it) afterwards."""
    name = "e2e-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
    await cluster.kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    try:
        yield name
    finally:
        try:
            await cluster.kube.delete(f"/api/v1/namespaces/{name}")
            await cluster.wait(lambda: cluster.gone(f"/api/v1/namespaces/{name}"), what=f"namespace {name} to go")
        except KubeError:
            pass
