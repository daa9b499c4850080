"""List+watch caches and a work queue, the client-go way, over ``kubeapi.KubeClient``.

An :class:`Informer` lists, then watches from the list's resourceVersion, keeps a cache keyed by
(namespace, name) and calls its handler for every change; when the watch ends it resumes from the
last resourceVersion, and when that is too old (410) or the server is unreachable it lists again
after a backoff. A :class:`WorkQueue` collapses repeated keys and retries with a delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubeapi import KubeClient, KubeError

log = logging.getLogger("e2e.controllers")

Obj = dict[str, Any]
Key = tuple[str, str]
Handler = Callable[[str, Obj, Obj | None], Awaitable[None] | None]


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class Informer:
    def __init__(
        self,
        kube: KubeClient,
        path: str,
        *,
        name: str,
        handler: Handler | None = None,
        watch_timeout: int = 300,
        backoff: float = 0.5,
        **selectors: str,
    ) -> None:
        self.kube = kube
        self.path = path
        self.name = name
        self.handler = handler
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.selectors = selectors
        self.cache: dict[Key, Obj] = {}
        self.synced = asyncio.Event()
        self._rv: str | None = None

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
            log.exception("informer %s: handler failed for %s %s", self.name, kind, key_of(obj))

    async def _list(self) -> None:
        answer = await self.kube.list(self.path, **self.selectors)
        fresh = {key_of(o): o for o in answer.get("items") or []}
        old = self.cache
        self.cache = fresh
        self._rv = str(answer.get("metadata", {}).get("resourceVersion") or "") or None
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                await self._notify("ADDED", obj, None)
            elif before.get("metadata", {}).get("resourceVersion") != obj.get("metadata", {}).get("resourceVersion"):
                await self._notify("MODIFIED", obj, before)
        for key, obj in old.items():
            if key not in fresh:
                await self._notify("DELETED", obj, obj)
        self.synced.set()

    async def run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                async for event in self.kube.watch(
                    self.path, resource_version=self._rv, timeout_seconds=self.watch_timeout, **self.selectors
                ):
                    kind = str(event.get("type"))
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        log.info("informer %s: watch error %s, listing again", self.name, obj.get("message"))
                        need_list = True
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion")
                    if rv:
                        self._rv = str(rv)
                    if kind == "BOOKMARK":
                        continue
                    key = key_of(obj)
                    old = self.cache.get(key)
                    if kind == "DELETED":
                        self.cache.pop(key, None)
                    else:
                        self.cache[key] = obj
                    await self._notify(kind, obj, old)
            except asyncio.CancelledError:
                raise
            except (KubeError, OSError, ValueError) as exc:
                log.debug("informer %s: %s; retrying", self.name, exc)
                need_list = True
                await asyncio.sleep(self.backoff)


class WorkQueue:
    """Keys to reconcile; a key added while queued is processed once; a delayed retry keeps at most
    one timer per key (the earliest), so retries never multiply."""

    def __init__(self) -> None:
        self._pending: dict[Key, None] = {}
        self._event = asyncio.Event()
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}

    def add(self, key: Key) -> None:
        self._pending[key] = None
        self._event.set()

    def add_after(self, key: Key, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= when:
                return
            current[1].cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = (when, loop.call_at(when, fire))

    async def get(self) -> Key:
        while not self._pending:
            self._event.clear()
            await self._event.wait()
        key = next(iter(self._pending))
        del self._pending[key]
        return key

    def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


async def run_worker(queue: WorkQueue, reconcile: Callable[[Key], Awaitable[float | None]], name: str) -> None:
    """Process keys forever; ``reconcile`` returns a delay to look again, or None."""
    while True:
        key = await queue.get()
        try:
            again = await reconcile(key)
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            log.info("%s: %s/%s: %s; retrying", name, key[0], key[1], exc)
            again = 1.0 if exc.unreachable else 0.2
        except Exception:
            log.exception("%s: %s/%s failed; retrying", name, key[0], key[1])
            again = 1.0
        if again is not None:
            queue.add_after(key, again)


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
