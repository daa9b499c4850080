"""Work queues for the controllers, the client-go way; the list+watch caches are the product's
(:class:`kubeapi.informer.Informer`: list, watch with bookmarks, list again on 410 Gone).

A :class:`WorkQueue` collapses repeated keys and retries with a delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubeapi import KubeError
from kubeapi.informer import Informer, Key, key_of
from tessera_common.tasks import cancel_and_wait

log = logging.getLogger("e2e.controllers")

__all__ = ["Informer", "Key", "WorkQueue", "cancel_all", "key_of", "run_worker"]


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
    await cancel_and_wait(tasks, ignore_errors=True)
