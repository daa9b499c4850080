"""The Grafana dashboard uses only metrics we export: every PromQL expression of it parses (with a
PromQL parser), and each metric it names is in the cluster exporter's output (scraped from a running
exporter) or the drivers' (rendered from the driver's own registry, HAMi names on)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from dra_driver.backends.mock import discover
from dra_driver.metrics import DriverMetrics
from tests.exporter import promtext
from tests.exporter.helpers import (
    CLAIMS,
    NODE,
    PODS,
    SLICES,
    TAINT,
    claim,
    cluster,
    exporter_at,
    pod,
    put,
    request,
    scrape,
    until,
)
from tests.exporter.helpers import shared_card as make_shared_card
from vendors import node_vendor

from . import helm

DASHBOARD = helm.CHART / "dashboards" / "tessera-shares.json"
VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")
LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions(dash: dict[str, Any]) -> list[str]:
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append(target["expr"])
    return out


def substituted(expr: str) -> str:
    """Grafana's variables replaced as Grafana would before sending: intervals by a duration, the
    others by a value."""
    return VARIABLE.sub(lambda m: "5m" if m.group(1).startswith("__") else "any", expr)


def metric_names(expr: str) -> set[str]:
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            found.add(node.name)

    promql_parser.walk(promql_parser.parse(substituted(expr)), visit)
    return found


def exposed(text: str) -> set[str]:
    """Every metric name of an exposition: families (HELP lines, also those without samples now) and
    sample names."""
    families = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return families | promtext.names(text)


@pytest.fixture(scope="module")
def node_exporter_names() -> set[str]:
    names = node_vendor("nvidia").names
    metrics = DriverMetrics(names, NODE, hami=True)
    metrics.devices = discover("2xH200", names, node_vendor("nvidia").mock_models, NODE)
    text = metrics.render().decode()
    assert "tessera_container_memory_used_bytes" in text  # families are listed without containers too
    return exposed(text)


@pytest.fixture
async def cluster_exporter_names(tmp_path: Path) -> set[str]:
    async with cluster(tmp_path) as (_api, kube), exporter_at(kube) as (_exporter, url):
        sl, _a, _b = await make_shared_card(kube)
        sl[0]["spec"]["devices"][1]["taints"] = [TAINT]
        current = await kube.get(f"{SLICES}/{sl[0]['metadata']['name']}")
        await kube.replace(f"{SLICES}/{sl[0]['metadata']['name']}", {**current, "spec": sl[0]["spec"]})
        await put(kube, PODS, pod("w", {"main": [("gpu", "")]}, claims={"gpu": "w"}, unschedulable="no room"))
        await put(kube, CLAIMS, claim("w", [], [request()], allocated=False))

        async def everything() -> str | None:
            text = await scrape(url)
            wanted = ("tessera_cluster_device_taint_info", "tessera_cluster_pending_pod_info")
            return text if all(promtext.series(text, n) for n in wanted) else None

        return exposed(await until(everything))


def test_every_expression_parses() -> None:
    exprs = expressions(dashboard())
    assert len(exprs) >= 10
    for expr in exprs:
        metric_names(expr)


async def test_every_metric_the_dashboard_uses_is_exported(
    cluster_exporter_names: set[str], node_exporter_names: set[str]
) -> None:
    dash = dashboard()
    used: set[str] = set()
    for expr in expressions(dash):
        used |= metric_names(expr)
    for variable in dash["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        used |= set(LABEL_VALUES.findall(text))
    assert {"hami_gpu_memory_allocated_bytes", "tessera_cluster_pending_pod_info"} <= used
    missing = sorted(used - cluster_exporter_names - node_exporter_names)
    assert not missing, f"the dashboard uses metrics nobody exports: {missing}"


async def test_the_node_and_cluster_exporters_share_no_metric_name(
    cluster_exporter_names: set[str], node_exporter_names: set[str]
) -> None:
    """HAMi's scheduler names (allocation per device) come from the cluster exporter only, its vGPU
    monitor names (each container's use) from the drivers only: a name both exported would be summed
    twice by a dashboard, with two meanings of a label such as ``device_cores``."""
    assert {"hami_gpu_memory_allocated_bytes", "hami_gpu_shared_count"} <= cluster_exporter_names
    assert {"hami_vgpu_memory_used_bytes", "hami_host_gpu_memory_used_bytes"} <= node_exporter_names
    both = sorted(cluster_exporter_names & node_exporter_names)
    assert not both, f"exported by both the cluster exporter and the drivers: {both}"


def test_the_check_catches_an_unknown_metric() -> None:
    """Control: a name that is not exported, and an expression that does not parse, are caught."""
    assert "tessera_cluster_bogus_bytes" in metric_names('sum(tessera_cluster_bogus_bytes{node=~"$node"})')
    with pytest.raises(ValueError):
        metric_names("sum(hami_gpu_shared_count{")


def test_panels_use_the_chosen_data_source() -> None:
    dash = dashboard()
    assert dash["templating"]["list"][0] == {
        "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {}
    }  # fmt: skip
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_the_chart_ships_the_dashboard_for_grafanas_sidecar(
    all_objs: list[helm.Obj], default_objs: list[helm.Obj]
) -> None:
    assert not helm.find(default_objs, "ConfigMap")  # off by default
    (config,) = helm.find(all_objs, "ConfigMap")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["namespace"] == "monitoring"
    assert config["metadata"]["annotations"] == {"grafana_folder": "GPUs"}
    assert json.loads(config["data"]["tessera-shares.json"]) == dashboard()
