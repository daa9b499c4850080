"""The cluster exporter: watches of ResourceSlices, ResourceClaims and Pods feed a :class:`ClusterState`;
``/metrics`` renders it at scrape time.

Every change arrives as a watch event (list, then watch from the list's resourceVersion with
bookmarks; list again on 410 Gone): nothing is polled, and a scrape reflects every event received
before it. ``/readyz`` answers 200 once every watched resource has been listed; ``/healthz`` while the
event loop runs. Besides the cluster's figures (:mod:`tessera_exporter.metrics`), collectors are kept
in one ``prometheus_client`` registry: a feature with figures of its own (quota, for instance) adds
its collector with :meth:`Exporter.add_collector` and, if it needs another resource, an informer
with :meth:`Exporter.watch` (its handler may update :attr:`Exporter.state` or its own records).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubeapi import RESOURCE_V1, KubeClient
from kubeapi.informer import Handler, Informer, Transform
from tessera_common.tasks import cancel_and_wait

from .metrics import Renderer
from .model import ClusterState, reduce_pod

log = logging.getLogger("tessera.exporter")

SLICES = f"{RESOURCE_V1}/resourceslices"
CLAIMS = f"{RESOURCE_V1}/resourceclaims"
PODS = "/api/v1/pods"
LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
"""Finished pods hold no shares and wait for nothing: the pod watch leaves them out."""


class Exporter:
    def __init__(self, kube: KubeClient, *, watch_timeout: int = 300, state: ClusterState | None = None) -> None:
        self.kube = kube
        self.state = state or ClusterState()
        self.watch_timeout = watch_timeout
        self.informers: dict[str, Informer] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self._tasks: list[asyncio.Task[None]] = []
        self.watch("resourceslices", SLICES, self.state.on_slice)
        self.watch("resourceclaims", CLAIMS, self.state.on_claim)
        self.watch("pods", PODS, self.state.on_pod, transform=reduce_pod, fieldSelector=LIVE_PODS)
        self.renderer = Renderer()
        self.add_collector(InformerCollector(self._informer_items))

    def _informer_items(self) -> Iterator[tuple[str, Informer]]:
        return iter(list(self.informers.items()))

    def watch(
        self, resource: str, path: str, handler: Handler, *, transform: Transform | None = None, **selectors: str
    ) -> Informer:
        """Keep ``resource`` (a name for logs and metrics) watched at ``path`` (before :meth:`start`)."""
        informer = Informer(
            self.kube,
            path,
            name=resource,
            handler=handler,
            transform=transform,
            watch_timeout=self.watch_timeout,
            selectors=selectors,
        )
        self.informers[resource] = informer
        return informer

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(i.run(), name=f"watch-{r}") for r, i in self.informers.items()]

    async def wait_synced(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            for informer in self.informers.values():
                await informer.synced.wait()

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    def render(self) -> bytes:
        """The cluster's figures (:mod:`tessera_exporter.metrics`), then every registered collector's."""
        return self.renderer.render(self.state.view()).encode() + generate_latest(self.registry)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.synced:
            return web.Response(text="ok\n")
        waiting = sorted(r for r, i in self.informers.items() if not i.synced.is_set())
        return web.Response(status=503, text=f"not listed yet: {', '.join(waiting)}\n")


class InformerCollector(Collector):
    """The exporter's own health: per watched resource, whether it is synced, how many objects it
    holds, how many watch events and lists it has seen."""

    def __init__(self, informers: Callable[[], Iterable[tuple[str, Informer]]]) -> None:
        self._informers = informers

    def collect(self) -> Iterator[Metric]:
        synced = GaugeMetricFamily(
            "tessera_cluster_exporter_synced", "1 once the resource's first list is done.", labels=["resource"]
        )
        objects = GaugeMetricFamily(
            "tessera_cluster_exporter_objects", "Objects of the resource in the watch cache.", labels=["resource"]
        )
        events = CounterMetricFamily(
            "tessera_cluster_exporter_watch_events", "Watch events applied.", labels=["resource"]
        )
        lists = CounterMetricFamily(
            "tessera_cluster_exporter_lists",
            "Lists of the resource (1 at start; more after 410 Gone or a lost connection).",
            labels=["resource"],
        )
        for resource, informer in self._informers():
            synced.add_metric([resource], 1.0 if informer.synced.is_set() else 0.0)
            objects.add_metric([resource], float(len(informer.cache)))
            events.add_metric([resource], float(informer.events))
            lists.add_metric([resource], float(informer.lists))
        yield from (synced, objects, events, lists)
