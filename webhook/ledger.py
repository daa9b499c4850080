"""The quota ledgers: one ConfigMap per namespace in the webhook's own namespace, changed by
compare-and-swap on its resourceVersion.

Every change (a pod or claim admitted, the reconciler's corrections) is a pure function of the
current ledger (:mod:`webhook.quota`); :meth:`LedgerStore.change` reads the ledger, applies the
function and writes the result with the resourceVersion it read, so a concurrent writer (this
replica or another) makes the write fail with 409 and the change is computed again on the newer
ledger. Within one replica the changes of one namespace take turns (a lock), so conflicts come only
from other replicas. The ledger lives in the webhook's namespace, not the tenant's: a tenant who can
edit ConfigMaps in its own namespace cannot rewrite what it is charged. A ledger that is missing or
unreadable is rebuilt from the claims that exist (``seed``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubeapi import KubeClient, KubeError, namespaced_path

from .logs import logger
from .metrics import Metrics
from .quota import Ledger, Outcome, QuotaError

LEDGER_LABEL = "tessera.dev/quota-ledger"
NAMESPACE_ANNOTATION = "tessera.dev/namespace"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tessera-webhook"}
_TRANSIENT = {0, 429, 500, 502, 503, 504}


class LedgerUnavailable(RuntimeError):
    """The ledger could not be read or written within the deadline; the message says why."""


def ledger_name(namespace: str) -> str:
    """``tessera-quota-<namespace>`` (namespace names are DNS labels, so this is a valid name)."""
    return f"tessera-quota-{namespace}"


@dataclass(frozen=True)
class Stored:
    ledger: Ledger
    obj: dict[str, Any] | None
    """The ConfigMap it was read from (``None``: not stored yet)."""


Change = Callable[[Ledger], Outcome]
Seed = Callable[[str], Awaitable[Ledger]]


class LedgerStore:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        metrics: Metrics,
        *,
        deadline: float = 3.0,
        backoff: float = 0.05,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.metrics = metrics
        self.deadline = deadline
        self.backoff = backoff
        self._locks: dict[str, asyncio.Lock] = {}
        self._last: dict[str, dict[str, Any]] = {}

    def _path(self, namespace: str | None = None) -> str:
        return namespaced_path("v1", "configmaps", self.namespace, ledger_name(namespace) if namespace else None)

    def observed(self, obj: Mapping[str, Any]) -> None:
        """A ledger ConfigMap seen by a watch: the next change starts from it instead of a GET."""
        ns = ((obj.get("metadata") or {}).get("annotations") or {}).get(NAMESPACE_ANNOTATION)
        if isinstance(ns, str):
            self._last[ns] = dict(obj)  # an older version than ours only costs a 409 and a GET

    def forget(self, namespace: str) -> None:
        """The ledger was deleted (a watch said so): the next change reads what is there."""
        self._last.pop(namespace, None)

    async def change(
        self, namespace: str, change: Change, seed: Seed, *, log: Mapping[str, Any]
    ) -> tuple[Outcome, Ledger]:
        """Apply ``change`` to the namespace's ledger and store the result (compare-and-swap, retried on
        conflicts within the deadline): the outcome of the attempt that counted and the ledger as it is
        now stored. :class:`LedgerUnavailable` when the API does not let it through in time."""
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        end = time.monotonic() + self.deadline
        async with lock:
            attempt = 0
            last_error = ""
            while time.monotonic() < end:
                attempt += 1
                try:
                    stored = await self._read(namespace, seed, end)
                    outcome = change(stored.ledger)
                    if outcome.ledger is None or (outcome.ledger == stored.ledger and stored.obj is not None):
                        return outcome, stored.ledger
                    await self._write(namespace, stored, outcome.ledger, end)
                    return outcome, outcome.ledger
                except KubeError as exc:
                    self._last.pop(namespace, None)
                    if exc.conflict or exc.not_found:
                        self.metrics.quota_conflicts.inc()
                        continue  # another writer was first (or removed it): compute again on what is there
                    if exc.status not in _TRANSIENT:
                        raise LedgerUnavailable(_refusal(self.namespace, namespace, exc)) from None
                    last_error = str(exc)
                    logger().warning(
                        "quota ledger: attempt failed", extra={**log, "attempt": attempt, "error": last_error}
                    )
                    await asyncio.sleep(min(self.backoff * 2 ** min(attempt, 6), max(0.0, end - time.monotonic())))
        raise LedgerUnavailable(
            f"the quota ledger of namespace {namespace} could not be updated within {self.deadline:g}s"
            + (f" ({last_error})" if last_error else " (too many concurrent changes)")
        )

    async def _read(self, namespace: str, seed: Seed, end: float) -> Stored:
        obj = self._last.get(namespace)
        if obj is None:
            try:
                obj = await self.client.request("GET", self._path(namespace), timeout=_left(end))
            except KubeError as exc:
                if not exc.not_found:
                    raise
                return Stored(await seed(namespace), None)
        try:
            return Stored(Ledger.from_data(namespace, obj.get("data")), obj)
        except QuotaError as exc:
            logger().warning(f"{exc}; rebuilding it from the claims that exist", extra={"namespace": namespace})
            return Stored(await seed(namespace), obj)

    async def _write(self, namespace: str, stored: Stored, ledger: Ledger, end: float) -> None:
        meta: dict[str, Any] = {
            "name": ledger_name(namespace),
            "namespace": self.namespace,
            "labels": {**MANAGED_BY, LEDGER_LABEL: "true"},
            "annotations": {NAMESPACE_ANNOTATION: namespace},
        }
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": ledger.to_data()}
        if stored.obj is None:
            written = await self.client.request("POST", self._path(), body=body, timeout=_left(end))
        else:
            meta["resourceVersion"] = (stored.obj.get("metadata") or {}).get("resourceVersion")
            written = await self.client.request("PUT", self._path(namespace), body=body, timeout=_left(end))
        self._last[namespace] = written

    async def delete(self, namespace: str) -> None:
        """Remove a namespace's ledger (its quota is gone); a later quota rebuilds it from the claims."""
        async with self._locks.setdefault(namespace, asyncio.Lock()):
            self._last.pop(namespace, None)
            try:
                await self.client.request("DELETE", self._path(namespace))
            except KubeError as exc:
                if not exc.not_found:
                    raise


def _left(end: float) -> float:
    return max(0.05, end - time.monotonic())


def _refusal(home: str, namespace: str, exc: KubeError) -> str:
    if exc.status in (401, 403):
        return (
            f"the API server refused the quota ledger of namespace {namespace} ({exc.reason}); the webhook's "
            f"service account needs get, create and update on configmaps in {home} (see the chart's RBAC)"
        )
    return f"the API server refused the quota ledger of namespace {namespace} ({exc.reason}, HTTP {exc.status})"
