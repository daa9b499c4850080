"""Quota at admission and the reconciler that keeps each namespace's ledger true (the I/O around
:mod:`webhook.quota`).

Every replica runs the same :class:`QuotaController`; nothing it holds in memory is authoritative,
so replicas can come and go:

* Admission. A pod the webhook converts reserves its claim's charge (:meth:`check_pod`); the claim
  the claim controller then makes from the template takes the reservation over, and any other claim
  (a user's own claim, or one from a user's template) is charged when it is created
  (:meth:`check_claim`, the ``/validate`` endpoint). A charge that would take the namespace over one
  of its limits is refused with the numbers. Both go through the ledger's compare-and-swap
  (:class:`webhook.ledger.LedgerStore`), so concurrent admissions on any replicas never admit more
  than the limits allow.
* Reconciling. Informers on ResourceQuotas, ResourceClaims and the ledgers trigger a pass over a
  namespace when something changes (and every ``resync`` seconds): entries of deleted claims go,
  claims that exist but are not charged are added, expired reservations go, a ledger lost or
  unreadable is rebuilt from the claims, and a namespace whose quota is gone loses its ledger. The
  pass is idempotent, so replicas doing it at once only cost conflicts.
* Reporting. Each ResourceQuota that names our resources gets their usage in ``status.used`` (the
  quota controller keeps values of names it does not compute itself, so ``kubectl describe
  resourcequota`` shows them), and ``/metrics`` carries HAMi's ``hami_resource_quota_used`` and
  ``hami_resource_quota_limit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kubeapi import KubeClient, KubeError, namespaced_path
from kubeapi.informer import Informer
from tessera_common.tasks import cancel_and_wait

from . import quota as q
from .inventory import Inventory
from .ledger import LEDGER_LABEL, NAMESPACE_ANNOTATION, LedgerStore, LedgerUnavailable
from .logs import logger
from .metrics import Metrics
from .review import FORBIDDEN, UNAVAILABLE

QUOTAS_PATH = "/api/v1/resourcequotas"
HAMI_ZONE = "vGPU"
"""The const label HAMi puts on its scheduler's metrics (and the cluster exporter on its ``hami_*``)."""
CLAIMS_PATH = "/apis/resource.k8s.io/v1/resourceclaims"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str = ""
    code: int = FORBIDDEN

    @property
    def unavailable(self) -> bool:
        return self.code == UNAVAILABLE


ALLOW = Verdict(True)


def _slim_claim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the reconciler keeps of a claim: identity, owner and spec (not the allocation status)."""
    meta = obj.get("metadata") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "ownerReferences", "deletionTimestamp")
    return {"metadata": {k: meta[k] for k in keep if k in meta}, "spec": obj.get("spec") or {}}


def owned_by_pod(claim: Mapping[str, Any]) -> bool:
    """A claim the claim controller made for a pod (the pod is its controlling owner)."""
    meta = claim.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    return isinstance(refs, list) and any(
        isinstance(r, Mapping)
        and r.get("controller") is True
        and r.get("kind") == "Pod"
        and r.get("apiVersion") == "v1"
        for r in refs
    )


class QuotaController:
    def __init__(
        self,
        client: KubeClient,
        catalog: q.Catalog,
        store: LedgerStore,
        metrics: Metrics,
        *,
        inventory: Callable[[], Inventory | None],
        resync: float = 30.0,
        grace: float = 60.0,
        pending: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.catalog = catalog
        self.store = store
        self.metrics = metrics
        self.inventory = inventory
        self.resync = resync
        self.grace = grace
        self.pending = pending
        self.clock = clock
        self.quotas = Informer(client, QUOTAS_PATH, name="quota/resourcequotas", handler=self._on_quota)
        self.claims = Informer(
            client, CLAIMS_PATH, name="quota/resourceclaims", handler=self._on_claim, transform=_slim_claim
        )
        self.ledgers = Informer(
            client,
            namespaced_path("v1", "configmaps", store.namespace),
            name="quota/ledgers",
            handler=self._on_ledger,
            labelSelector=f"{LEDGER_LABEL}=true",
        )
        self._gone: dict[str, float] = {}
        """Uids of claims seen deleted, with when (so a pass drops them at once, whatever their age)."""
        self._charges: dict[str, q.Charge] = {}
        """What each claim seen costs, computed once (the spec is immutable)."""
        self._dirty: dict[str, None] = {}
        self._wake = asyncio.Event()
        metrics.registry.register(_QuotaCollector(self))

    # --- informers ----------------------------------------------------------------------------------

    def _queue(self, namespace: str) -> None:
        if namespace:
            self._dirty[namespace] = None
            self._wake.set()

    def _on_quota(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._queue(str((obj.get("metadata") or {}).get("namespace", "")))

    def _on_claim(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind == "MODIFIED":
            return  # the spec is immutable: an allocation or a status change costs nothing more
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        if kind == "DELETED":
            self._gone[uid] = self.clock()
            self._charges.pop(uid, None)
        self._queue(str(meta.get("namespace", "")))

    def _on_ledger(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        namespace = ((obj.get("metadata") or {}).get("annotations") or {}).get(NAMESPACE_ANNOTATION)
        if kind != "DELETED":
            self.store.observed(obj)
        elif isinstance(namespace, str):
            self.store.forget(namespace)
            self._queue(namespace)  # deleted by hand: rebuilt from the claims if the quota is still there

    @property
    def synced(self) -> bool:
        return self.quotas.synced.is_set() and self.claims.synced.is_set() and self.ledgers.synced.is_set()

    async def run(self) -> None:
        """The informers and the reconciling loop, until cancelled."""
        tasks = [asyncio.create_task(i.run(), name=i.name) for i in (self.quotas, self.claims, self.ledgers)]
        try:
            for informer in (self.quotas, self.claims, self.ledgers):
                await informer.synced.wait()
            logger().info("quota: informers synced")
            next_resync = 0.0
            while True:
                now = time.monotonic()
                if now >= next_resync:
                    for namespace in self._namespaces():
                        self._queue(namespace)
                    self._prune()
                    next_resync = now + self.resync
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
                # arrives as the event fires, and the loop would then outlive its task's cancel()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_resync - time.monotonic())):
                        await self._wake.wait()
                self._wake.clear()
                while self._dirty:
                    namespace = next(iter(self._dirty))
                    del self._dirty[namespace]
                    try:
                        await self.reconcile(namespace)
                    except (KubeError, LedgerUnavailable) as exc:
                        logger().warning(f"quota: reconcile failed: {exc}", extra={"namespace": namespace})
                    except Exception:  # a bug: keep the loop alive, say where
                        logger().exception("quota: reconcile failed", extra={"namespace": namespace})
        finally:
            await cancel_and_wait(tasks)

    def _namespaces(self) -> set[str]:
        out = {ns for (ns, _), obj in self.quotas.cache.items() if self.catalog.limits([obj])}
        for obj in self.ledgers.items():
            namespace = ((obj.get("metadata") or {}).get("annotations") or {}).get(NAMESPACE_ANNOTATION)
            if isinstance(namespace, str):
                out.add(namespace)
        return out

    def _prune(self) -> None:
        horizon = self.clock() - 4 * self.grace
        for uid in [u for u, at in self._gone.items() if at < horizon]:
            del self._gone[uid]

    # --- reading ------------------------------------------------------------------------------------

    async def limits(self, namespace: str) -> dict[str, q.Limit]:
        """The namespace's limits on our names (the informer's, or a read while it is not synced)."""
        if self.quotas.synced.is_set():
            quotas = [o for (ns, _), o in self.quotas.cache.items() if ns == namespace]
        else:
            answer = await self.client.list(namespaced_path("v1", "resourcequotas", namespace))
            quotas = list(answer.get("items") or [])
        return self.catalog.limits(quotas)

    def _charge(self, spec: Any, wanted: Mapping[str, Any]) -> q.Charged:
        """A spec's charge under every name that can be computed; :class:`quota.QuotaError` only for a
        name the namespace limits."""
        inventory = self.inventory()
        charged = self.catalog.charge(spec, inventory, wanted)
        try:
            return q.Charged(self.catalog.charge(spec, inventory).amounts, charged.notes)
        except q.QuotaError:
            return charged

    def _claim_charge(self, claim: Mapping[str, Any]) -> q.Charge | None:
        """What an existing claim costs (kept: the spec is immutable); ``None`` when it cannot be charged yet
        (a whole device before the inventory publishes one: computed again on the next pass)."""
        uid = str((claim.get("metadata") or {}).get("uid", ""))
        charge = self._charges.get(uid)
        if charge is None:
            try:
                charge = self._charges[uid] = self.catalog.charge(claim.get("spec"), self.inventory()).amounts
            except q.QuotaError as exc:
                meta = claim.get("metadata") or {}
                logger().warning(
                    f"quota: claim cannot be charged: {exc}",
                    extra={"namespace": meta.get("namespace"), "claim": meta.get("name")},
                )
        return charge

    async def _existing(self, namespace: str) -> dict[str, q.Existing]:
        if self.claims.synced.is_set():
            claims = [o for (ns, _), o in self.claims.cache.items() if ns == namespace]
        else:
            answer = await self.client.list(namespaced_path("resource.k8s.io/v1", "resourceclaims", namespace))
            claims = [_slim_claim(o) for o in answer.get("items") or []]
        out = {}
        for claim in claims:
            meta = claim.get("metadata") or {}
            charge = self._claim_charge(claim)
            if charge:
                out[str(meta.get("uid"))] = q.Existing(str(meta.get("name", "")), charge, owned_by_pod(claim))
        return out

    async def _seed(self, namespace: str) -> q.Ledger:
        """A new ledger: the claims that exist now, nothing reserved."""
        ledger = q.Ledger(namespace)
        return q.reconcile(ledger, await self._existing(namespace), (), now=self.clock(), grace=self.grace)

    # --- admission ----------------------------------------------------------------------------------

    async def check_pod(
        self, namespace: str, pod: str, claim_spec: Any, *, review_uid: str, dry_run: bool, log: Mapping[str, Any]
    ) -> Verdict:
        """A pod the webhook converted: its claim's charge, reserved until the claim exists."""
        return await self._check(
            namespace,
            f"pod {pod}",
            claim_spec,
            dry_run=dry_run,
            log=log,
            kind="pod",
            change=lambda ledger, charge, limits: q.reserve(
                self.catalog,
                ledger,
                id=review_uid,
                pod=pod,
                charge=charge,
                limits=limits,
                now=self.clock(),
                ttl=self.pending,
            ),
        )

    async def check_claim(self, namespace: str, claim: Mapping[str, Any], *, dry_run: bool, review_uid: str,
                          log: Mapping[str, Any]) -> Verdict:  # fmt: skip
        """A ResourceClaim being created (validating admission: it has its uid and name)."""
        meta = claim.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        uid = str(meta.get("uid") or f"admission-{review_uid}")
        name = str(meta.get("name") or meta.get("generateName") or "?")
        from_pod = owned_by_pod(claim)
        return await self._check(
            namespace,
            f"resource claim {name}",
            claim.get("spec"),
            dry_run=dry_run,
            log=log,
            kind="claim",
            change=lambda ledger, charge, limits: q.admit_claim(
                self.catalog,
                ledger,
                uid=uid,
                name=name,
                charge=charge,
                limits=limits,
                now=self.clock(),
                from_pod=from_pod,
            ),
        )

    async def _check(
        self,
        namespace: str,
        what: str,
        spec: Any,
        *,
        dry_run: bool,
        log: Mapping[str, Any],
        kind: str,
        change: Callable[[q.Ledger, q.Charge, Mapping[str, q.Limit]], q.Outcome],
    ) -> Verdict:
        try:
            limits = await self.limits(namespace)
        except KubeError as exc:
            return self._verdict(kind, "unavailable", False, _unavailable(namespace, str(exc)), UNAVAILABLE)
        if not limits:
            return ALLOW
        try:
            charged = self._charge(spec, limits)
        except q.QuotaError as exc:
            message = f"{what} cannot be charged against the quota of namespace {namespace}: {exc}"
            return self._verdict(kind, "denied", False, message)
        if not any(name in limits for name in charged.amounts):
            return ALLOW

        def decide(ledger: q.Ledger) -> q.Outcome:
            outcome = change(ledger, charged.amounts, limits)
            return q.Outcome(None, outcome.excesses) if dry_run else outcome

        try:
            outcome, _ = await self.store.change(namespace, decide, self._seed, log=log)
        except LedgerUnavailable as exc:
            return self._verdict(kind, "unavailable", False, _unavailable(namespace, str(exc)), UNAVAILABLE)
        if not outcome.allowed:
            message = q.denial(namespace, what, outcome.excesses, charged.notes)
            logger().info(f"quota: denied: {message}", extra=log)
            return self._verdict(kind, "denied", False, message)
        logger().info(
            "quota: charged" + (" (dry run)" if dry_run else ""),
            extra={**log, "charge": ",".join(f"{k}={v}" for k, v in charged.amounts.items())},
        )
        return self._verdict(kind, "admitted", True)

    def _verdict(self, kind: str, result: str, allowed: bool, message: str = "", code: int = FORBIDDEN) -> Verdict:
        self.metrics.quota_checks.labels(kind, result).inc()
        return Verdict(allowed, message, code)

    # --- reconciling --------------------------------------------------------------------------------

    async def reconcile(self, namespace: str) -> None:
        """One pass over a namespace: its ledger made true to the claims, then the quotas' status."""
        limits = await self.limits(namespace)
        log = {"namespace": namespace}
        if not limits:
            if any(self._ledger_namespace(o) == namespace for o in self.ledgers.items()):
                await self.store.delete(namespace)
                logger().info("quota: the namespace has no quota on our resources any more; ledger removed", extra=log)
            return
        existing = await self._existing(namespace)
        gone = set(self._gone)

        def correct(ledger: q.Ledger) -> q.Outcome:
            return q.Outcome(q.reconcile(ledger, existing, gone, now=self.clock(), grace=self.grace))

        _, ledger = await self.store.change(namespace, correct, self._seed, log=log)
        await self._report(namespace, ledger.used(self.clock()), limits)

    async def _report(self, namespace: str, used: Mapping[str, int], limits: Mapping[str, q.Limit]) -> None:
        """Our usage into ``status.used`` of each of the namespace's ResourceQuotas that names it."""
        for (ns, name), quota in list(self.quotas.cache.items()):
            if ns != namespace:
                continue
            hard = (quota.get("spec") or {}).get("hard") or {}
            status = dict(quota.get("status") or {})
            current = dict(status.get("used") or {})
            wanted = dict(current)
            for key in hard:
                resource = self.catalog.managed(str(key))
                if resource is not None:
                    wanted[str(key)] = str(used.get(resource.name, 0))
            if wanted == current:
                continue
            # (objects of a list carry no kind: the API server wants one in a write)
            body = {**quota, "apiVersion": "v1", "kind": "ResourceQuota", "status": {**status, "used": wanted}}
            try:
                written = await self.client.replace(namespaced_path("v1", "resourcequotas", ns, name) + "/status", body)
            except KubeError as exc:
                if exc.conflict:  # the quota controller wrote meanwhile: the next pass writes again
                    self._queue(namespace)
                    continue
                raise
            self.quotas.cache[(ns, name)] = written

    @staticmethod
    def _ledger_namespace(obj: Mapping[str, Any]) -> str | None:
        namespace = ((obj.get("metadata") or {}).get("annotations") or {}).get(NAMESPACE_ANNOTATION)
        return namespace if isinstance(namespace, str) else None

    # --- metrics ------------------------------------------------------------------------------------

    def usage(self) -> Iterator[tuple[str, q.Resource, int, q.Limit]]:
        """``(namespace, resource, used, limit)`` for every limit of every namespace with a ledger, from
        the informers (what a scrape shows)."""
        now = self.clock()
        for obj in self.ledgers.items():
            namespace = self._ledger_namespace(obj)
            if namespace is None:
                continue
            try:
                ledger = q.Ledger.from_data(namespace, obj.get("data"))
            except q.QuotaError:
                continue
            used = ledger.used(now)
            quotas = [o for (ns, _), o in self.quotas.cache.items() if ns == namespace]
            for name, limit in sorted(self.catalog.limits(quotas).items()):
                yield namespace, self.catalog.resources[name], used.get(name, 0), limit


class _QuotaCollector(Collector):
    """HAMi's quota metrics, computed at scrape time from the controller's view."""

    def __init__(self, controller: QuotaController) -> None:
        self.controller = controller

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "hami_resource_quota_used",
            "Usage of a namespace's ResourceQuota limit on a Tessera resource (HAMi's name; memory in the "
            "resource's unit, cores in percent).",
            labels=["namespace", "quota_name", "limit", "zone"],
        )
        limit = GaugeMetricFamily(
            "hami_resource_quota_limit",
            "A namespace's ResourceQuota limit on a Tessera resource (the lowest where several quotas name it).",
            labels=["namespace", "quota_name", "zone"],
        )
        for namespace, resource, amount, lim in self.controller.usage():
            used.add_metric([namespace, resource.name, str(lim.value), HAMI_ZONE], amount)
            limit.add_metric([namespace, resource.name, HAMI_ZONE], lim.value)
        yield used
        yield limit


def _unavailable(namespace: str, reason: str) -> str:
    return (
        f"the quota of namespace {namespace} could not be checked ({reason}); nothing was admitted, try again "
        "once the API server answers"
    )
