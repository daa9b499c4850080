"""Core ``v1`` Events and ``events.k8s.io/v1`` Events share one storage, as in kube-apiserver.

Stored in the core shape; these pure functions convert the ``events.k8s.io/v1`` view in and out.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

# events.k8s.io/v1 field -> core v1 field
_FIELDS = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_BACK = {v: k for k, v in _FIELDS.items()}
# same name in both: metadata, eventTime, series, reportingInstance, action, reason, related, type

FIELD_LABELS = {
    "regarding.kind": "involvedObject.kind",
    "regarding.namespace": "involvedObject.namespace",
    "regarding.name": "involvedObject.name",
    "regarding.uid": "involvedObject.uid",
    "reportingController": "reportingComponent",
}


def to_core(event: Obj) -> Obj:
    out: Obj = {"apiVersion": "v1", "kind": "Event"}
    for key, value in event.items():
        if key in ("apiVersion", "kind"):
            continue
        out[_FIELDS.get(key, key)] = value
    out.setdefault("involvedObject", {})
    return out


def from_core(event: Obj) -> Obj:
    out: Obj = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
    for key, value in event.items():
        if key in ("apiVersion", "kind"):
            continue
        out[_BACK.get(key, key)] = value
    if "eventTime" not in out or out["eventTime"] is None:
        # events.k8s.io requires eventTime; kube-apiserver fills it from the old timestamps.
        out["eventTime"] = out.get("deprecatedFirstTimestamp") or event.get("metadata", {}).get("creationTimestamp")
    return out
