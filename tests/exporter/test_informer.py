"""kubeapi.informer against the API server stand-in over real HTTP: list then watch, bookmarks, a list
again after 410 Gone with the missed changes as events, pages, and no polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from e2e.apiserver import APIServer
from e2e.apiserver.store import Store
from kubeapi import KubeClient
from kubeapi.informer import Informer

PODS = "/api/v1/namespaces/default/pods"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}


def configmap(name: str, value: str = "1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}


@contextlib.asynccontextmanager
async def server(tmp_path: Path, **kwargs: Any) -> AsyncIterator[tuple[APIServer, KubeClient]]:
    async with APIServer.running(**kwargs) as api:
        kube = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kubeconfig"), timeout=5)
        try:
            yield api, kube
        finally:
            await kube.close()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.changed = asyncio.Event()

    def __call__(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.events.append((kind, obj["metadata"]["name"], (obj.get("data") or {}).get("v", "")))
        self.changed.set()

    async def until(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[Informer]:
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def lists_and_watches(api: APIServer, path: str) -> tuple[int, int]:
    calls = [r for r in api.requests if r.method == "GET" and r.path == path]
    watches = sum(1 for r in calls if r.query.get("watch") == "true")
    return len(calls) - watches, watches


async def test_list_then_watch_every_change_without_polling(tmp_path: Path) -> None:
    async with server(tmp_path) as (api, kube):
        await kube.create(CONFIGMAPS, configmap("a"))
        seen = Recorder()
        async with running(Informer(kube, CONFIGMAPS, name="cm", handler=seen)) as informer:
            await kube.create(CONFIGMAPS, configmap("b"))
            await kube.merge_patch(f"{CONFIGMAPS}/a", {"data": {"v": "2"}})
            await kube.delete(f"{CONFIGMAPS}/b")
            await seen.until(4)
            assert seen.events == [
                ("ADDED", "a", "1"),
                ("ADDED", "b", "1"),
                ("MODIFIED", "a", "2"),
                ("DELETED", "b", "1"),
            ]
            assert set(informer.cache) == {("default", "a")}
            assert informer.events == 3 and informer.lists == 1
    # the server logs a watch when it ends (here: when it stops)
    assert lists_and_watches(api, CONFIGMAPS) == (1, 1)
    watch = next(r for r in api.requests if r.path == CONFIGMAPS and r.query.get("watch") == "true")
    assert watch.query["allowWatchBookmarks"] == "true" and watch.query["resourceVersion"]


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_bookmarks_advance_the_resource_version_of_a_quiet_watch(tmp_path: Path) -> None:
    async with (
        server(tmp_path, bookmark_interval=0.1) as (_api, kube),
        running(Informer(kube, CONFIGMAPS, name="cm")) as informer,
    ):
        start = int(informer.resource_version or 0)
        await kube.create("/api/v1/namespaces/default/secrets", SECRET)
        await eventually(lambda: int(informer.resource_version or 0) > start)
        assert informer.events == 0  # bookmarks are not events


async def test_a_watch_too_old_lists_again_and_reports_what_it_missed(tmp_path: Path) -> None:
    """The watch is cut and its renewal delayed; meanwhile more changes than the server's history holds:
    410 Gone, then one list whose differences to the cache arrive as events."""
    async with server(tmp_path, store=Store(history=5), bookmark_interval=3600) as (api, kube):
        for name in ("keep", "change", "drop"):
            await kube.create(CONFIGMAPS, configmap(name))
        seen = Recorder()
        informer = Informer(kube, CONFIGMAPS, name="cm", handler=seen, backoff=0.05)
        async with running(informer):
            api.faults.add("GET", f"^{CONFIGMAPS}$", status=None, delay=1.0, count=1)  # the renewed watch waits
            api.store.close_watchers()
            await kube.merge_patch(f"{CONFIGMAPS}/change", {"data": {"v": "2"}})
            await kube.delete(f"{CONFIGMAPS}/drop")
            await kube.create(CONFIGMAPS, configmap("new"))
            for i in range(6):  # push the history past the informer's resourceVersion
                await kube.create("/api/v1/namespaces/default/secrets", {"apiVersion": "v1", "kind": "Secret",
                                                                         "metadata": {"name": f"s{i}"}})  # fmt: skip
            await seen.until(6)
            assert sorted(seen.events[3:]) == [
                ("ADDED", "new", "1"),
                ("DELETED", "drop", "1"),
                ("MODIFIED", "change", "2"),
            ]
            assert set(informer.cache) == {("default", "keep"), ("default", "change"), ("default", "new")}
            assert informer.lists == 2 and informer.events == 0


async def test_gone_in_the_stream_lists_again(tmp_path: Path) -> None:
    async with server(tmp_path, store=Store(history=3), bookmark_interval=3600) as (_api, kube):
        await kube.create(CONFIGMAPS, configmap("a"))
        informer = Informer(kube, CONFIGMAPS, name="cm")
        informer.resource_version = "1"  # as if resuming a watch long after
        informer.synced.set()
        for i in range(5):
            await kube.create(CONFIGMAPS, configmap(f"more{i}"))
        assert await informer._watch() == "gone"


async def test_lists_in_pages(tmp_path: Path) -> None:
    async with server(tmp_path) as (api, kube):
        for i in range(7):
            await kube.create(CONFIGMAPS, configmap(f"cm{i}"))
        async with running(Informer(kube, CONFIGMAPS, name="cm", page_size=3)) as informer:
            assert len(informer.cache) == 7
        pages = [r for r in api.requests if r.path == CONFIGMAPS and r.query.get("limit") == "3"]
        assert len(pages) == 3 and "continue" in pages[-1].query


@pytest.mark.parametrize("selector", ["status.phase!=Succeeded,status.phase!=Failed"])
async def test_selectors_and_transform_apply_to_list_and_watch(tmp_path: Path, selector: str) -> None:
    async with server(tmp_path) as (api, kube):
        seen: list[dict[str, Any]] = []
        informer = Informer(
            kube, PODS, name="pods", handler=lambda k, o, _: seen.append(o),
            transform=lambda o: {"metadata": o["metadata"]}, fieldSelector=selector,
        )  # fmt: skip
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}  # fmt: skip
        async with running(informer):
            await kube.create(PODS, pod)
            await eventually(lambda: bool(seen))
        assert set(seen[0]) == {"metadata"}
    queries = [r.query for r in api.requests if r.path == PODS and r.method == "GET"]
    assert len(queries) == 2 and all(q.get("fieldSelector") == selector for q in queries)


async def test_failures_and_lists_are_reported(tmp_path: Path) -> None:
    """``on_failure`` gets every failed request (a 403 here), ``on_listed`` every completed list, after
    its events: a user can withdraw what it derived from a cache it may no longer read."""
    async with server(tmp_path) as (api, kube):
        await kube.create(CONFIGMAPS, configmap("a"))
        seen = Recorder()
        calls: list[str] = []
        informer = Informer(
            kube, CONFIGMAPS, name="cm", handler=seen, backoff=0.05,
            on_listed=lambda: calls.append(f"listed after {len(seen.events)} events"),
            on_failure=lambda exc: calls.append(f"failed {getattr(exc, 'status', None)}"),
        )  # fmt: skip
        api.faults.add("GET", f"^{CONFIGMAPS}$", status=403, count=1, message="forbidden")
        async with running(informer):
            assert calls == ["failed 403", "listed after 1 events"]
            api.faults.add("GET", f"^{CONFIGMAPS}$", status=403, count=1, message="forbidden")
            api.store.close_watchers()  # the renewed watch is refused, then the list succeeds
            await eventually(lambda: len(calls) == 4)
            assert calls[2:] == ["failed 403", "listed after 1 events"]
