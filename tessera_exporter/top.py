"""``tessera top``: the cluster's cards in a terminal, like ``nvidia-smi`` for the whole cluster.

:func:`render` is pure: a :class:`ClusterView` becomes three tables, devices (per node and device:
shares, memory and cores allocated against what the device publishes, health from its device
taints), the shares with the pods and containers that hold them, and the pods waiting to be
scheduled with the scheduler's reason. :func:`run` reads the cluster: one list of each resource, or
with ``watch`` the same informers as the exporter, redrawing after changes (never on a timer).

What is shown is what is *allocated* (the scheduler's view, from the API). What containers really
use is measured on the nodes by the drivers' metrics (``tessera_container_*``), which need a
Prometheus or a scrape of every driver pod; ``tessera top`` does not reach the nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import IO

from kubeapi import KubeClient
from kubeapi.informer import Informer
from tessera_common.tasks import cancel_and_wait

from .exporter import CLAIMS, LIVE_PODS, PODS, SLICES
from .model import ClusterState, ClusterView, DeviceView, Obj, reduce_pod, share_order

GIB = 1024**3
HEALTHY = "ok"
CLEAR = "\x1b[H\x1b[2J"


def size(value: int | None) -> str:
    """Bytes as GiB with one decimal (``-`` when unknown)."""
    if value is None:
        return "-"
    return f"{value / GIB:.1f}Gi"


def percent(part: int, whole: int | None) -> str:
    return f"{round(100 * part / whole)}%" if whole else "-"


def health(view: DeviceView) -> str:
    """``ok``, or the device's taints (``key=value:Effect``, comma separated)."""
    taints = view.device.taints
    return ",".join(str(t) for t in taints) if taints else HEALTHY


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(w) for cell, w in zip(cells[:-1], widths[:-1], strict=True)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return [line(header), *(line(r) for r in rows)]


DEVICE_HEADER = ("NODE", "DEVICE", "TYPE", "UUID", "SHARES", "MEMORY", "MEM%", "CORES", "HEALTH", "PODS")
SHARE_HEADER = ("NODE", "DEVICE", "NAMESPACE", "POD", "CONTAINER", "CLAIM", "REQUEST", "MEMORY", "CORES")
PENDING_HEADER = ("NAMESPACE", "POD", "REASON", "MESSAGE")


def render(view: ClusterView, *, node: str | None = None) -> str:
    devices = [v for v in view.devices if node is None or v.device.node == node]
    out: list[str] = []
    rows = []
    for v in devices:
        d = v.device
        pods = sorted({f"{s.namespace}/{s.pod}" for s in v.holders if s.pod})
        unheld = sum(1 for s in v.holders if not s.pod)
        holders = ",".join(pods + ([f"({unheld} unheld)"] if unheld else [])) or "-"
        rows.append(
            (
                d.node or "-",
                d.name,
                d.type or "-",
                d.uuid or "-",
                f"{v.shares_allocated}/{d.shares if d.shares is not None else '-'}",
                f"{size(v.memory_allocated)}/{size(d.memory)}",
                percent(v.memory_allocated, d.memory),
                f"{v.cores_allocated}/{d.cores if d.cores is not None else '-'}",
                health(v),
                holders,
            )
        )
    out += table(DEVICE_HEADER, rows) if rows else ["no devices published by Tessera's drivers"]
    shares = sorted((s for s in view.shares if node is None or s.node == node), key=share_order)
    if shares:
        out.append("")
        out += table(
            SHARE_HEADER,
            [
                (s.node or "-", s.device, s.namespace, s.pod or "-", s.container or "-", s.claim, s.request,
                 size(s.memory), str(s.cores))
                for s in shares
            ],
        )  # fmt: skip
    if view.pending_pods and node is None:
        out.append("")
        out += table(PENDING_HEADER, [(p.namespace, p.name, p.reason, p.message or "-") for p in view.pending_pods])
    return "\n".join(out) + "\n"


async def _list_all(kube: KubeClient, path: str, **query: str) -> list[Obj]:
    items: list[Obj] = []
    query = {**query, "limit": "500"}
    while True:
        answer = await kube.list(path, **query)
        items.extend(i for i in answer.get("items") or [] if isinstance(i, dict))
        token = (answer.get("metadata") or {}).get("continue")
        if not token:
            return items
        query["continue"] = str(token)


async def snapshot(kube: KubeClient) -> ClusterView:
    """The cluster now: one list of each resource."""
    slices, claims, pods = await asyncio.gather(
        _list_all(kube, SLICES), _list_all(kube, CLAIMS), _list_all(kube, PODS, fieldSelector=LIVE_PODS)
    )
    return ClusterState().load(slices, claims, pods).view()


async def watch(kube: KubeClient, out: IO[str], *, node: str | None, clear: bool, settle: float = 0.2) -> None:
    """Redraw after every burst of changes (``settle`` seconds without a new event), until cancelled."""
    state = ClusterState()
    changed = asyncio.Event()

    def mark(handler: Callable[[str, Obj, Obj | None], None]) -> Callable[[str, Obj, Obj | None], None]:
        def on_event(kind: str, obj: Obj, old: Obj | None) -> None:
            handler(kind, obj, old)
            changed.set()

        return on_event

    informers = [
        Informer(kube, SLICES, name="resourceslices", handler=mark(state.on_slice)),
        Informer(kube, CLAIMS, name="resourceclaims", handler=mark(state.on_claim)),
        Informer(kube, PODS, name="pods", handler=mark(state.on_pod), transform=reduce_pod, fieldSelector=LIVE_PODS),
    ]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    try:
        for informer in informers:
            await informer.synced.wait()
        while True:
            changed.clear()
            out.write((CLEAR if clear else "") + render(state.view(), node=node) + ("" if clear else "\n"))
            out.flush()
            await changed.wait()
            while True:  # let a burst of events settle before drawing again
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settle):
                        await changed.wait()
                        continue
                break
    finally:
        await cancel_and_wait(tasks)


async def run(kube: KubeClient, *, follow: bool, node: str | None, out: IO[str] = sys.stdout) -> None:
    if follow:
        await watch(kube, out, node=node, clear=out.isatty())
    else:
        out.write(render(await snapshot(kube), node=node))
