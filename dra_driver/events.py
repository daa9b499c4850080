"""Kubernetes Events from the driver: one helper for every part that tells a user something.

``EventRecorder.record(target, type, reason, message)`` writes a core ``v1`` Event about a Pod or the
Node (``kubectl describe pod`` and ``kubectl get events`` show it), the way client-go's recorder does:
the same event (object, type, reason, message) again within :data:`AGGREGATE_SECONDS` bumps ``count``
and ``lastTimestamp`` of the first one (a merge patch) instead of creating another object, so a
prepare the kubelet retries every few seconds makes one Event with a count, not hundreds. An Event is
about its object and lives in the object's namespace (``default`` for the Node). Recording never
raises: a failure (RBAC without ``events`` ``create``/``patch``, the API server down) is logged.

Pure :func:`event_object` builds the object; :class:`EventRecorder` does the I/O.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeapi import KubeClient, KubeError, namespaced_path

log = logging.getLogger("dra_driver.events")

COMPONENT = "tessera-dra-driver"
"""``source.component`` and ``reportingComponent`` of every Event the driver writes."""
AGGREGATE_SECONDS = 600.0
"""A repeated event within this many seconds updates the first one (client-go's aggregation window)."""
MAX_REMEMBERED = 4096
"""Events remembered for aggregation; the oldest are forgotten first."""
MAX_MESSAGE = 1024
NORMAL = "Normal"
WARNING = "Warning"


@dataclass(frozen=True)
class Target:
    """The object an Event is about (``involvedObject``)."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = "v1"

    @classmethod
    def pod(cls, namespace: str, name: str, uid: str = "") -> Target:
        return cls("Pod", name, namespace, uid)

    @classmethod
    def node(cls, name: str, uid: str = "") -> Target:
        return cls("Node", name, "", uid)

    @property
    def event_namespace(self) -> str:
        """Where the Event lives: the object's namespace, ``default`` for cluster-scoped objects."""
        return self.namespace or "default"

    def involved_object(self) -> dict[str, str]:
        out = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.uid:
            out["uid"] = self.uid
        return out


def rfc3339(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def event_object(target: Target, kind: str, reason: str, message: str, *, host: str, now: float) -> dict[str, Any]:
    """A new core v1 Event (``generateName`` after the object, as client-go names them). Pure."""
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{target.name}.", "namespace": target.event_namespace},
        "involvedObject": target.involved_object(),
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": kind,
        "source": {"component": COMPONENT, "host": host},
        "reportingComponent": COMPONENT,
        "reportingInstance": f"{COMPONENT}-{host}",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


@dataclass
class _Seen:
    name: str
    count: int
    first: float


class EventRecorder:
    """Writes Events about Pods and the Node of one driver instance (``host`` = the node name)."""

    def __init__(self, client: KubeClient | None, host: str, *, clock: Any = time.time) -> None:
        self._client = client
        self._host = host
        self._clock = clock
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()

    async def record(self, target: Target, kind: str, reason: str, message: str) -> None:
        """Record (or aggregate) one Event; never raises."""
        if self._client is None:
            return
        now = float(self._clock())
        key = (target.kind, target.namespace, target.name, target.uid, kind, reason, message[:MAX_MESSAGE])
        seen = self._seen.get(key)
        ctx = {"object": f"{target.kind}/{target.namespace + '/' if target.namespace else ''}{target.name}",
               "reason": reason}  # fmt: skip
        if seen is not None and now - seen.first < AGGREGATE_SECONDS:
            path = namespaced_path("v1", "events", target.event_namespace, seen.name)
            try:
                await self._client.merge_patch(path, {"count": seen.count + 1, "lastTimestamp": rfc3339(now)})
                seen.count += 1
                self._seen.move_to_end(key)
                return
            except KubeError as exc:
                if not exc.not_found:
                    log.warning("cannot update Event", extra={**ctx, "error": str(exc)})
                    return
                # The Event expired (the API server keeps them about an hour): write a new one.
        body = event_object(target, kind, reason, message, host=self._host, now=now)
        try:
            created = await self._client.create(namespaced_path("v1", "events", target.event_namespace), body)
        except KubeError as exc:
            log.warning("cannot record Event", extra={**ctx, "error": str(exc)})
            return
        name = str((created.get("metadata") or {}).get("name") or "")
        if name:
            self._seen[key] = _Seen(name, 1, now)
            self._seen.move_to_end(key)
            while len(self._seen) > MAX_REMEMBERED:
                self._seen.popitem(last=False)

    async def pods(self, pods: Mapping[tuple[str, str], str], kind: str, reason: str, message: str) -> None:
        """The same Event on each pod of ``{(namespace, name): uid}``."""
        for (namespace, name), uid in sorted(pods.items()):
            await self.record(Target.pod(namespace, name, uid), kind, reason, message)
