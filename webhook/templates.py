"""Ensure a pod's ResourceClaimTemplate exists in its namespace (the webhook's only write).

Create it; an AlreadyExists answer is success once the existing template is seen to carry our
content (a same-named template with other content is refused, never used). Transient failures
(unreachable, 429, 5xx) are retried with backoff inside a deadline shorter than the webhook's
timeout; when it runs out the caller denies the pod with the reason, so it is not admitted with a
reference to a template that does not exist. Templates known to exist are remembered for a while,
and concurrent ensures of one template share one API call.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from kubeapi import KubeClient, KubeError, namespaced_path
from tessera_common.quantity import QuantityError, parse_quantity

from .logs import logger
from .metrics import Metrics

GROUP_VERSION = "resource.k8s.io/v1"
PLURAL = "resourceclaimtemplates"
_TRANSIENT = {0, 429, 500, 502, 503, 504}


class EnsureError(RuntimeError):
    """The template could not be ensured; ``unavailable`` is True when the API could not be reached."""

    def __init__(self, message: str, *, unavailable: bool) -> None:
        super().__init__(message)
        self.unavailable = unavailable


def contains(ours: Any, theirs: Any, path: tuple[str, ...] = ()) -> bool:
    """True when ``theirs`` holds everything ``ours`` does (the API server may add defaults, and sends
    quantities in canonical form: the ``4096Mi`` of a capacity request comes back as ``4Gi``)."""
    if isinstance(ours, Mapping):
        return isinstance(theirs, Mapping) and all(
            k in theirs and contains(v, theirs[k], (*path, str(k))) for k, v in ours.items()
        )
    if isinstance(ours, list):
        return (
            isinstance(theirs, list)
            and len(ours) == len(theirs)
            and all(contains(a, b, path) for a, b in zip(ours, theirs, strict=True))
        )
    if path[-3:-1] == ("capacity", "requests") and ours != theirs:
        try:
            return parse_quantity(ours) == parse_quantity(theirs)
        except QuantityError:
            return False
    return bool(ours == theirs)


class TemplateStore:
    def __init__(
        self,
        client: KubeClient,
        metrics: Metrics,
        *,
        deadline: float = 3.0,
        attempts: int = 4,
        backoff: float = 0.1,
        cache_seconds: float = 30.0,
        cache_size: int = 4096,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.deadline = deadline
        self.attempts = attempts
        self.backoff = backoff
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[str]] = {}

    def forget(self) -> None:
        self._known.clear()

    async def ensure(self, template: Mapping[str, Any], log_extra: Mapping[str, Any]) -> str:
        """``created``, ``exists`` or ``cached``; raises :class:`EnsureError`."""
        meta = template["metadata"]
        key = (meta["namespace"], meta["name"])
        seen = self._known.get(key)
        now = time.monotonic()
        if seen is not None and now - seen < self.cache_seconds:
            self._known.move_to_end(key)
            self.metrics.templates.labels("cached").inc()
            return "cached"
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._ensure(template, dict(log_extra)))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _ensure(self, template: Mapping[str, Any], log_extra: dict[str, Any]) -> str:
        meta = template["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        where = f"ResourceClaimTemplate {namespace}/{name}"
        collection = namespaced_path(GROUP_VERSION, PLURAL, namespace)
        log_extra["template"] = name
        end = time.monotonic() + self.deadline
        last: KubeError | None = None
        for attempt in range(1, self.attempts + 1):
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            try:
                try:
                    await self.client.request("POST", collection, body=dict(template), timeout=remaining)
                    result = "created"
                except KubeError as exc:
                    if not exc.conflict:
                        raise
                    existing = await self.client.request(
                        "GET", f"{collection}/{name}", timeout=max(0.05, end - time.monotonic())
                    )
                    if not contains(template["spec"], existing.get("spec")):
                        self.metrics.templates.labels("failed").inc()
                        raise EnsureError(
                            f"{where} already exists with other content; names tessera-* are reserved for the "
                            f"Tessera webhook: delete that template and create the pod again",
                            unavailable=False,
                        ) from None
                    result = "exists"
            except KubeError as exc:
                last = exc
                if exc.status not in _TRANSIENT:
                    self.metrics.templates.labels("failed").inc()
                    raise EnsureError(_refusal(where, exc), unavailable=False) from None
                logger().warning(
                    f"{where}: attempt {attempt} failed", extra={**log_extra, "attempt": attempt, "error": str(exc)}
                )
                delay = min(self.backoff * 2 ** (attempt - 1), max(0.0, end - time.monotonic()))
                if attempt < self.attempts and delay > 0:
                    await asyncio.sleep(delay)
                continue
            self._remember((namespace, name))
            self.metrics.templates.labels(result).inc()
            logger().info(f"{where} {result}", extra=log_extra)
            return result
        self.metrics.templates.labels("failed").inc()
        reason = str(last) if last else f"no answer within {self.deadline:g}s"
        raise EnsureError(
            f"cannot create {where}: the Kubernetes API server could not be reached ({reason}); the pod was not "
            f"admitted, create it again once the API server is reachable",
            unavailable=True,
        )

    def _remember(self, key: tuple[str, str]) -> None:
        self._known[key] = time.monotonic()
        self._known.move_to_end(key)
        while len(self._known) > self.cache_size:
            self._known.popitem(last=False)


def _refusal(where: str, exc: KubeError) -> str:
    if exc.status in (401, 403):
        return (
            f"the API server refused to create {where} ({exc.reason}); the webhook's service account needs "
            f"create and get on resourceclaimtemplates.resource.k8s.io (see the chart's RBAC)"
        )
    if exc.status == 404:
        return (
            f"cannot create {where}: {exc.reason}; does the namespace exist, and does the cluster serve "
            f"resource.k8s.io/v1 (Kubernetes 1.34 or later)?"
        )
    return f"the API server refused {where} ({exc.reason}, HTTP {exc.status})"
