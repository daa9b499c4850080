"""List+watch caches, the client-go way, over :class:`kubeapi.KubeClient`.

An :class:`Informer` lists (in pages), then watches from the list's resourceVersion with bookmarks
(``allowWatchBookmarks``), so a quiet watch still advances its resourceVersion and can resume after
the server ends the stream without listing again. When the resourceVersion is too old (410 Gone,
as an HTTP answer or as an ``ERROR`` event in the stream) it lists again and reports what changed
meanwhile as ``ADDED``/``MODIFIED``/``DELETED``; when the server cannot be reached it lists again
after a backoff. It never polls: between lists, every change arrives as a watch event.

The cache is keyed by (namespace, name). ``transform`` reduces each object before it is cached and
handed to the handler (an exporter keeps only the fields it reads of a Pod, not its env).
``on_listed`` is called after every complete list (its differences already handed to the handler),
``on_failure`` with the error whenever a list or watch request fails (before the backoff): a user
that must not act on a cache it can no longer refresh (401/403) can tell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import KubeClient, KubeError

log = logging.getLogger("tessera.kubeapi.informer")

Obj = dict[str, Any]
Key = tuple[str, str]
Handler = Callable[[str, Obj, Obj | None], Awaitable[None] | None]
"""``(event type, object, previous version or None)``; may be a coroutine function."""
Transform = Callable[[Obj], Obj]


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    def __init__(
        self,
        kube: KubeClient,
        path: str,
        *,
        name: str,
        handler: Handler | None = None,
        transform: Transform | None = None,
        watch_timeout: int = 300,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        page_size: int = 500,
        selectors: Mapping[str, str] | None = None,
        on_listed: Callable[[], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        **more_selectors: str,
    ) -> None:
        self.kube = kube
        self.path = path
        self.name = name
        self.handler = handler
        self.transform = transform
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.page_size = page_size
        self.on_listed = on_listed
        self.on_failure = on_failure
        self.selectors = {**(selectors or {}), **more_selectors}
        """Query parameters of both the list and the watch (``labelSelector``, ``fieldSelector``)."""
        self.cache: dict[Key, Obj] = {}
        self.synced = asyncio.Event()
        self.lists = 0
        """How many times the informer listed (1 at start; each relist after 410 or an error adds one)."""
        self.events = 0
        """Watch events applied (bookmarks not counted)."""
        self.resource_version: str | None = None

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.cache.get((namespace, name))

    def items(self) -> list[Obj]:
        return list(self.cache.values())

    async def _notify(self, kind: str, obj: Obj, old: Obj | None) -> None:
        if self.handler is None:
            return
        try:
            result = self.handler(kind, obj, old)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            namespace, name = key_of(obj)
            where = {"informer": self.name, "event": kind, "namespace": namespace, "object": name}
            log.exception("informer handler failed", extra=where)

    def _reduce(self, obj: Obj) -> Obj:
        return self.transform(obj) if self.transform is not None else obj

    async def _list(self) -> None:
        """Every page of the collection, then the differences to the cache as events."""
        items: list[Obj] = []
        query = dict(self.selectors)
        if self.page_size > 0:
            query["limit"] = str(self.page_size)
        while True:
            answer = await self.kube.list(self.path, **query)
            items.extend(self._reduce(o) for o in answer.get("items") or [] if isinstance(o, dict))
            meta = answer.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
            query["continue"] = str(token)
        fresh = {key_of(o): o for o in items}
        old = self.cache
        self.cache = fresh
        self.resource_version = str(meta.get("resourceVersion") or "") or None
        self.lists += 1
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                await self._notify("ADDED", obj, None)
            elif _rv(before) != _rv(obj):
                await self._notify("MODIFIED", obj, before)
        for key, obj in old.items():
            if key not in fresh:
                await self._notify("DELETED", obj, obj)
        if self.on_listed is not None:
            self._call("on_listed", self.on_listed)
        self.synced.set()

    async def _watch(self) -> str:
        """One watch stream: ``ended`` (the server closed it: watch again from the resourceVersion),
        ``gone`` (410: list again at once) or ``error`` (another error event: list again after a backoff)."""
        async for event in self.kube.watch(
            self.path,
            resource_version=self.resource_version,
            timeout_seconds=self.watch_timeout,
            allowWatchBookmarks="true",
            **self.selectors,
        ):
            kind = str(event.get("type"))
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            if kind == "ERROR":
                code = obj.get("code")
                log.info(
                    "watch ended with an error; listing again",
                    extra={"informer": self.name, "code": code, "reason": obj.get("message")},
                )
                return "gone" if code == 410 else "error"
            rv = _rv(obj)
            if rv:
                self.resource_version = rv
            if kind == "BOOKMARK":
                continue
            obj = self._reduce(obj)
            key = key_of(obj)
            old = self.cache.get(key)
            if kind == "DELETED":
                self.cache.pop(key, None)
            else:
                self.cache[key] = obj
            self.events += 1
            await self._notify(kind, obj, old)
        return "ended"

    def _call(self, what: str, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("informer callback failed", extra={"informer": self.name, "callback": what})

    async def run(self) -> None:
        need_list = True
        delay = self.backoff
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                outcome = await self._watch()
                need_list = outcome != "ended"
                if outcome == "error":
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
                else:
                    delay = self.backoff
            except asyncio.CancelledError:
                raise
            except (KubeError, OSError, ValueError) as exc:
                if isinstance(exc, KubeError) and exc.status == 410:  # the resourceVersion is too old: list again
                    need_list = True
                    continue
                log.warning(
                    "list or watch failed; listing again" if isinstance(exc, KubeError)
                    else "watch stream broke; listing again",
                    extra={"informer": self.name, "error": str(exc), "retry_in_s": delay},
                )  # fmt: skip
                if self.on_failure is not None:
                    self._call("on_failure", self.on_failure, exc)
                need_list = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
