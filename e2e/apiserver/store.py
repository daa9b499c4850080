"""The object store: buckets of JSON objects, one resourceVersion counter, a watch history.

Synchronous and single-threaded (everything runs on the server's event loop), so every operation is
atomic. Objects handed out are deep copies. ``put``/``delete`` are the test back door (no admission,
no validation, no conflict checks) but still bump resourceVersion and notify watchers.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import datetime as dt
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import events
from .kinds import KINDS, Kind, kind_for_object, kind_for_plural
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Event:
    rv: int
    bucket: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


class Watcher:
    """A live subscription to one bucket; the server drains ``queue`` (``None`` = server stopping)."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()


class Store:
    def __init__(self, *, history: int = 50_000) -> None:
        self._buckets: dict[str, dict[Key, Obj]] = {k.bucket: {} for k in KINDS}
        self._rv = 1
        self._history: deque[Event] = deque(maxlen=history)
        self._watchers: set[Watcher] = set()

    # ------------------------------------------------------------------ reading
    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def oldest_watchable(self) -> int:
        """Watches may start from this resourceVersion or later; older ones get 410 Gone."""
        if len(self._history) == self._history.maxlen and self._history:
            return self._history[0].rv
        return 0

    def raw(self, bucket: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object itself (not a copy); callers must not mutate it."""
        return self._buckets[bucket].get((namespace or "", name))

    def raw_items(self, bucket: str, namespace: str | None = None) -> Iterable[Obj]:
        items = self._buckets[bucket]
        for key in sorted(items):
            if namespace and key[0] != namespace:
                continue
            yield items[key]

    def get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        kind = kind_for_plural(plural)
        obj = self.raw(kind.bucket, namespace if kind.namespaced else None, name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        kind = kind_for_plural(plural)
        labels = parse_label_selector(label_selector) if label_selector else []
        fields = parse_field_selector(field_selector, kind.supports_field) if field_selector else []
        out = []
        for obj in self.raw_items(kind.bucket, namespace if kind.namespaced else None):
            if labels_match(labels, obj.get("metadata", {}).get("labels")) and fields_match(fields, obj):
                out.append(copy.deepcopy(obj))
        return out

    # ------------------------------------------------------------------ test back door
    def put(self, obj: Obj) -> Obj:
        """Create or replace ``obj`` as given (system metadata filled in); returns what is stored."""
        kind = kind_for_object(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if kind is None:
            raise KeyError(f"the API server stand-in does not serve {obj.get('apiVersion')}/{obj.get('kind')}")
        if kind.group == "events.k8s.io":
            obj = events.to_core(obj)
            kind = kind_for_plural("events")
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            meta.setdefault("namespace", "default")
        name = meta.get("name")
        if not name:
            raise ValueError("store.put needs metadata.name")
        old = self.raw(kind.bucket, meta.get("namespace"), name)
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            meta.setdefault("generation", 1)
            return copy.deepcopy(self.commit_create(kind, obj))
        meta.setdefault("uid", old["metadata"].get("uid"))
        meta.setdefault("creationTimestamp", old["metadata"].get("creationTimestamp"))
        meta.setdefault("generation", old["metadata"].get("generation", 1))
        return copy.deepcopy(self.commit_update(kind, obj, old))

    def delete(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        """Remove at once (no finalizers, no grace period); the removed object or None."""
        kind = kind_for_plural(plural)
        old = self.raw(kind.bucket, namespace if kind.namespaced else None, name)
        if old is None:
            return None
        return copy.deepcopy(self.commit_delete(kind, old))

    # ------------------------------------------------------------------ commits (server side)
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _key(self, kind: Kind, obj: Obj) -> Key:
        meta = obj["metadata"]
        return (meta.get("namespace", "") if kind.namespaced else "", meta["name"])

    def commit_create(self, kind: Kind, obj: Obj) -> Obj:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        stored = copy.deepcopy(obj)
        self._buckets[kind.bucket][self._key(kind, stored)] = stored
        self._emit(Event(rv, kind.bucket, "ADDED", stored, None))
        return stored

    def commit_update(self, kind: Kind, obj: Obj, old: Obj) -> Obj:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        stored = copy.deepcopy(obj)
        self._buckets[kind.bucket][self._key(kind, stored)] = stored
        self._emit(Event(rv, kind.bucket, "MODIFIED", stored, old))
        return stored

    def commit_delete(self, kind: Kind, old: Obj) -> Obj:
        rv = self._next_rv()
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._buckets[kind.bucket].pop(self._key(kind, old), None)
        self._emit(Event(rv, kind.bucket, "DELETED", gone, old))
        return gone

    # ------------------------------------------------------------------ watch
    def _emit(self, event: Event) -> None:
        self._history.append(event)
        for watcher in self._watchers:
            if watcher.bucket == event.bucket:
                watcher.queue.put_nowait(event)

    def history_since(self, bucket: str, rv: int) -> builtins.list[Event]:
        return [e for e in self._history if e.bucket == bucket and e.rv > rv]

    def subscribe(self, bucket: str) -> Watcher:
        watcher = Watcher(bucket)
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_watchers(self) -> None:
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        self._watchers.clear()


def fill_system_metadata(obj: Obj) -> None:
    """uid, creationTimestamp and generation, as kube-apiserver sets them on create."""
    meta = obj.setdefault("metadata", {})
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now_rfc3339()
    meta["generation"] = 1
    for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
        meta.pop(transient, None)
