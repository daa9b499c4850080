"""``tessera top``: the tables of a known cluster (pure), and the real command against the API server
stand-in: once, with ``--watch`` redrawing after a change, and a clear error for a bad context."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from e2e.apiserver import APIServer
from kubeapi import KubeClient
from tessera_exporter.model import ClusterState
from tessera_exporter.top import render

from .helpers import (
    CLAIMS,
    NODE,
    PODS,
    SLICES,
    TAINT,
    claim,
    device_uuid,
    pod,
    put,
    request,
    reserved,
    result,
    shared_card,
    slices,
)


def rows(text: str, *header: str) -> list[dict[str, str]]:
    """The rows of the (last) table whose header starts with the columns ``header``, as column -> cell."""
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line.split()[: len(header)] == list(header))
    head = lines[start]
    columns = [(m.start(), m.group()) for m in re.finditer(r"\S+", head)]
    out = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = {}
        for i, (pos, name) in enumerate(columns):
            end = columns[i + 1][0] if i + 1 < len(columns) else None
            cells[name] = line[pos:end].strip()
        out.append(cells)
    return out


def known_state() -> tuple[ClusterState, str]:
    sl = slices(NODE, "2xH200")
    sl[0]["spec"]["devices"][1]["taints"] = [TAINT]
    a = pod("a", {"main": [("gpu", "")]}, claims={"gpu": "claim-a"}, node=NODE)
    b = pod("b", {"main": [("gpu", "")]}, claims={"gpu": "claim-b"}, node=NODE)
    waiting = pod("w", {"main": [("gpu", "")]}, claims={"gpu": "claim-w"}, unschedulable="0/1 nodes are available")
    s = ClusterState()
    for obj in sl:
        s.on_slice("ADDED", obj)
    for p in (a, b, waiting):
        s.on_pod("ADDED", p)
    s.on_claim("ADDED", reserved(claim("claim-a", [result("gpu-0", pool=NODE, memory="40Gi", cores="30")]), a))
    s.on_claim("ADDED", reserved(claim("claim-b", [result("gpu-0", pool=NODE, memory="20Gi", cores="1")]), b))
    s.on_claim("ADDED", claim("claim-w", [], allocated=False))
    return s, device_uuid(sl, "gpu-0")


def test_tables_of_a_known_cluster() -> None:
    state, uuid = known_state()
    text = render(state.view())
    devices = rows(text, "NODE", "DEVICE", "TYPE")
    assert [d["DEVICE"] for d in devices] == ["gpu-0", "gpu-1"]
    card, tainted = devices
    assert card == {
        "NODE": NODE, "DEVICE": "gpu-0", "TYPE": "H200", "UUID": uuid, "SHARES": "2/10",
        "MEMORY": f"60.0Gi/{card['MEMORY'].split('/')[1]}", "MEM%": card["MEM%"], "CORES": "31/100",
        "HEALTH": "ok", "PODS": "default/a,default/b",
    }  # fmt: skip
    total = float(card["MEMORY"].split("/")[1].removesuffix("Gi"))
    assert card["MEM%"] == f"{round(100 * 60 / total)}%"
    assert tainted["HEALTH"] == "nvidia.tessera.dev/unhealthy=xid-79:NoSchedule"
    assert (tainted["SHARES"], tainted["CORES"], tainted["PODS"]) == ("0/10", "0/100", "-")
    shares = rows(text, "NODE", "DEVICE", "NAMESPACE")
    assert [(s["POD"], s["CONTAINER"], s["CLAIM"], s["MEMORY"], s["CORES"]) for s in shares] == [
        ("a", "main", "claim-a", "40.0Gi", "30"),
        ("b", "main", "claim-b", "20.0Gi", "1"),
    ]
    (pending,) = rows(text, "NAMESPACE", "POD")
    assert pending == {
        "NAMESPACE": "default",
        "POD": "w",
        "REASON": "Unschedulable",
        "MESSAGE": "0/1 nodes are available",
    }


def test_node_filter_and_an_empty_cluster() -> None:
    state, _ = known_state()
    assert "gpu-0" not in render(state.view(), node="elsewhere")
    assert render(ClusterState().view()).startswith("no devices published")


async def _top(*args: str, kubeconfig: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tessera_exporter", "top", "--kubeconfig", kubeconfig, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def test_the_command_against_an_api_server(tmp_path: Path) -> None:
    async with APIServer.running() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        kube = await KubeClient.connect(kubeconfig, timeout=5)
        try:
            _sl, _a, _b = await shared_card(kube)
            proc = await _top(kubeconfig=kubeconfig)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            card = rows(out.decode(), "NODE", "DEVICE", "TYPE")[0]
            assert (card["DEVICE"], card["SHARES"], card["CORES"], card["PODS"]) == (
                "gpu-0", "2/10", "31/100", "default/a,default/b")  # fmt: skip

            proc = await _top("--watch", kubeconfig=kubeconfig)
            assert proc.stdout is not None
            seen = b""
            async with asyncio.timeout(30):
                while b"default/b" not in seen:
                    seen += await proc.stdout.read(4096)
                p = await put(kube, PODS, pod("c", {"main": [("gpu", "")]}, claims={"gpu": "claim-c"}, node=NODE))
                c = claim("claim-c", [result("gpu-1", pool=NODE, memory="1Gi", cores="5")], [request()])
                await put(kube, CLAIMS, reserved(c, p))
                while b"default/c" not in seen:
                    seen += await proc.stdout.read(4096)
            proc.terminate()
            await proc.wait()
            second = rows(seen.decode(), "NODE", "DEVICE", "TYPE")[1]
            assert (second["DEVICE"], second["SHARES"], second["CORES"], second["PODS"]) == ("gpu-1", "1/10", "5/100",
                                                                                            "default/c")  # fmt: skip
            gets = [r for r in api.requests if r.method == "GET" and r.path == SLICES]
            assert all(r.query.get("watch") != "true" or r.query.get("allowWatchBookmarks") for r in gets)
        finally:
            await kube.close()


async def test_a_bad_context_is_one_clear_line(tmp_path: Path) -> None:
    async with APIServer.running() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        proc = await _top("--context", "nope", kubeconfig=kubeconfig)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2 and not out
        assert err.decode().count("\n") == 1 and "nope" in err.decode() and "Traceback" not in err.decode()


def test_the_tessera_command_is_installed() -> None:
    """``tessera top`` is the distribution's console script (pyproject [project.scripts])."""
    from importlib.metadata import entry_points

    from tessera_exporter import cli

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "tessera"]
    assert script.load() is cli.main
