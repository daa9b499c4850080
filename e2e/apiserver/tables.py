"""Server-side printing: ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` answers, as kubectl asks.

The columns and cells are those of kube-apiserver's printers (``pkg/printers/internalversion``) for
the kinds we serve: pods (NAME READY STATUS RESTARTS AGE, wide: IP NODE NOMINATED NODE READINESS
GATES), nodes, namespaces, events, configmaps, secrets, service accounts, leases, webhook
configurations, device classes, resource claims (STATE: ``pending``, ``allocated``,
``allocated,reserved``, ``deleted``), claim templates and slices (NODE DRIVER POOL). Like the real
server, every column is sent (``priority: 1`` ones are shown by ``kubectl get -o wide`` only) and each
row carries the object as ``PartialObjectMetadata`` (``includeObject=Metadata``, the default), whole
(``Object``) or not at all (``None``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import APIError
from .kinds import Kind

Obj = dict[str, Any]
Cell = str | int | bool
_NAME = {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace."}
_AGE = {"name": "Age", "type": "string", "description": "CreationTimestamp is the time this object was created."}


def wants_table(accept: str) -> bool:
    """True when the first media type kubectl accepts is a meta.k8s.io Table."""
    for entry in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[-1].strip() for p in entry.split(";")[1:]}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return True
        if entry.strip():
            return False
    return False


def table_version(accept: str) -> str:
    for entry in accept.split(","):
        if "as=Table" in entry and "v=v1beta1" in entry and "v=v1;" not in entry + ";":
            return "meta.k8s.io/v1beta1"
        if "as=Table" in entry:
            return "meta.k8s.io/v1"
    return "meta.k8s.io/v1"


# ------------------------------------------------------------------------------ formatting
def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: ``5s``, ``2m10s``, ``15m``, ``3h20m``, ``2d4h``, ``3y``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y{rest}d" if rest else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def since(text: Any, now: dt.datetime | None = None) -> str:
    when = _parse_time(text)
    if when is None:
        return "<unknown>"
    return human_duration(((now or dt.datetime.now(dt.UTC)) - when).total_seconds())


def _age(obj: Obj) -> str:
    return since((obj.get("metadata") or {}).get("creationTimestamp"))


# ------------------------------------------------------------------------------ printers
def _col(name: str, description: str, *, kind: str = "string", priority: int = 0) -> Obj:
    out: Obj = {"name": name, "type": kind, "format": "", "description": description, "priority": priority}
    return out


def _pod_reason(pod: Obj) -> tuple[str, int, int, str]:
    """(STATUS, ready containers, total containers, RESTARTS) as ``printPod`` computes them."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    total = len(spec.get("containers") or []) + sum(
        1 for c in init_specs.values() if c.get("restartPolicy") == "Always"
    )
    reason = status.get("reason") or status.get("phase") or ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    ready = restarts = 0
    sidecar_restarts = 0
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, container in enumerate(init_statuses):
        restarts += int(container.get("restartCount") or 0)
        sidecar = (init_specs.get(container.get("name")) or {}).get("restartPolicy") == "Always"
        if sidecar:
            sidecar_restarts += int(container.get("restartCount") or 0)
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and int(terminated.get("exitCode") or 0) == 0:
            continue
        if sidecar and container.get("started"):
            ready += 1 if container.get("ready") else 0
            continue
        if terminated is not None:
            if terminated.get("reason"):
                reason = "Init:" + str(terminated["reason"])
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode', 0)}"
        elif waiting is not None and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + str(waiting["reason"])
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    initialized = any(
        c.get("type") == "Initialized" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    if not initializing or initialized:
        restarts = sidecar_restarts
        has_running = False
        for container in reversed(status.get("containerStatuses") or []):
            restarts += int(container.get("restartCount") or 0)
            state = container.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif terminated is not None and terminated.get("reason"):
                reason = str(terminated["reason"])
            elif terminated is not None:
                reason = (
                    f"Signal:{terminated['signal']}"
                    if terminated.get("signal")
                    else f"ExitCode:{terminated.get('exitCode', 0)}"
                )
            elif container.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            reason = "Running" if pod_ready else "NotReady"
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    return str(reason), ready, total, str(restarts)


def _pod(pod: Obj) -> list[Cell]:
    reason, ready, total, restarts = _pod_reason(pod)
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ips = status.get("podIPs") or []
    gates = spec.get("readinessGates") or []
    gate_text = "<none>"
    if gates:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        true = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
        gate_text = f"{true}/{len(gates)}"
    return [
        pod["metadata"]["name"],
        f"{ready}/{total}",
        reason,
        restarts,
        _age(pod),
        (ips[0].get("ip") if ips else "") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gate_text,
    ]


_POD_COLUMNS = [
    _NAME,
    _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", "The aggregate status of the containers in this pod."),
    _col("Restarts", "The number of times the containers in this pod have been restarted."),
    _AGE,
    _col("IP", "IP address allocated to the pod.", priority=1),
    _col("Node", "NodeName is the node the pod is scheduled onto.", priority=1),
    _col("Nominated Node", "The node the scheduler nominated for this pod.", priority=1),
    _col("Readiness Gates", "Readiness gates of the pod.", priority=1),
]


def _node(node: Obj) -> list[Cell]:
    status = node.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    ready = conditions.get("Ready")
    states = ["Ready" if ready == "True" else "NotReady" if ready == "False" else "Unknown"]
    if (node.get("spec") or {}).get("unschedulable"):
        states.append("SchedulingDisabled")
    labels = (node.get("metadata") or {}).get("labels") or {}
    roles = sorted(
        {k[len("node-role.kubernetes.io/") :] for k in labels if k.startswith("node-role.kubernetes.io/")}
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    info = status.get("nodeInfo") or {}
    addresses = status.get("addresses") or []

    def address(kind: str) -> str:
        return next((a.get("address") for a in addresses if a.get("type") == kind), None) or "<none>"

    return [
        node["metadata"]["name"],
        ",".join(states),
        ",".join(r for r in roles if r) or "<none>",
        _age(node),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


_NODE_COLUMNS = [
    _NAME,
    _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"),
    _AGE,
    _col("Version", "Kubelet Version reported by the node."),
    _col("Internal-IP", "List of addresses reachable to the node.", priority=1),
    _col("External-IP", "List of addresses reachable to the node.", priority=1),
    _col("OS-Image", "OS Image reported by the node.", priority=1),
    _col("Kernel-Version", "Kernel Version reported by the node.", priority=1),
    _col("Container-Runtime", "ContainerRuntime Version reported by the node.", priority=1),
]


def _event(event: Obj) -> list[Cell]:
    first = since(event.get("firstTimestamp")) if event.get("firstTimestamp") else since(event.get("eventTime"))
    last = since(event.get("lastTimestamp")) if event.get("lastTimestamp") else first
    count = int(event.get("count") or 0)
    series = event.get("series")
    if series:
        last = since(series.get("lastObservedTime"))
        count = int(series.get("count") or 0)
    elif count == 0:
        count = 1
    involved = event.get("involvedObject") or {}
    target = str(involved.get("kind", "")).lower()
    if involved.get("name"):
        target = f"{target}/{involved['name']}"
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    source_text = f"{component}, {host}" if host else component
    return [
        last,
        event.get("type", ""),
        event.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        source_text,
        str(event.get("message", "")).strip(),
        first,
        count,
        event["metadata"]["name"],
    ]


_EVENT_COLUMNS = [
    _col("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    _col("Type", "Type of this event (Normal, Warning)."),
    _col("Reason", "This should be a short, machine understandable string."),
    _col("Object", "The object that this event is about."),
    _col("Subobject", "The field of the object this event is about.", priority=1),
    _col("Source", "The component reporting this event.", priority=1),
    _col("Message", "A human-readable description of the status of this operation."),
    _col("First Seen", "The time at which the event was first recorded.", priority=1),
    _col("Count", "The number of times this event has occurred.", priority=1),
    {**_NAME, "priority": 1},
]


def _claim_state(claim: Obj) -> str:
    states = []
    deleted = bool((claim.get("metadata") or {}).get("deletionTimestamp"))
    if deleted:
        states.append("deleted")
    status = claim.get("status") or {}
    if not status.get("allocation"):
        if not deleted:
            states.append("pending")
    else:
        states.append("allocated")
        if status.get("reservedFor"):
            states.append("reserved")
    return ",".join(states)


def _count(*values: Any) -> int:
    return sum(len(v) for v in values if isinstance(v, Mapping | list))


Printer = tuple[list[Obj], Callable[[Obj], list[Cell]]]
PRINTERS: dict[str, Printer] = {
    "Pod": (_POD_COLUMNS, _pod),
    "Node": (_NODE_COLUMNS, _node),
    "Event": (_EVENT_COLUMNS, _event),
    "Namespace": (
        [_NAME, _col("Status", "The status of the namespace"), _AGE],
        lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age(o)],
    ),
    "ConfigMap": (
        [_NAME, _col("Data", "Number of keys in the ConfigMap", kind="integer"), _AGE],
        lambda o: [o["metadata"]["name"], _count(o.get("data"), o.get("binaryData")), _age(o)],
    ),
    "Secret": (
        [
            _NAME,
            _col("Type", "Used to facilitate programmatic handling of secret data."),
            _col("Data", "Number of keys in the Secret", kind="integer"),
            _AGE,
        ],
        lambda o: [o["metadata"]["name"], o.get("type", ""), _count(o.get("data")), _age(o)],
    ),
    "ServiceAccount": (
        [_NAME, _col("Secrets", "Secrets is a list of the secrets in the same namespace", kind="integer"), _AGE],
        lambda o: [o["metadata"]["name"], _count(o.get("secrets")), _age(o)],
    ),
    "Lease": (
        [_NAME, _col("Holder", "The holder of the lease"), _AGE],
        lambda o: [o["metadata"]["name"], (o.get("spec") or {}).get("holderIdentity") or "", _age(o)],
    ),
    "MutatingWebhookConfiguration": (
        [_NAME, _col("Webhooks", "Webhooks indicates the number of webhooks", kind="integer"), _AGE],
        lambda o: [o["metadata"]["name"], _count(o.get("webhooks")), _age(o)],
    ),
    "ValidatingWebhookConfiguration": (
        [_NAME, _col("Webhooks", "Webhooks indicates the number of webhooks", kind="integer"), _AGE],
        lambda o: [o["metadata"]["name"], _count(o.get("webhooks")), _age(o)],
    ),
    "DeviceClass": ([_NAME, _AGE], lambda o: [o["metadata"]["name"], _age(o)]),
    "ResourceClaim": (
        [_NAME, _col("State", "A summary of the current state (allocated, pending, reserved, etc.)."), _AGE],
        lambda o: [o["metadata"]["name"], _claim_state(o), _age(o)],
    ),
    "ResourceClaimTemplate": ([_NAME, _AGE], lambda o: [o["metadata"]["name"], _age(o)]),
    "ResourceSlice": (
        [
            _NAME,
            _col("Node", "NodeName identifies the node which provides the resources in this pool."),
            _col("Driver", "Driver identifies the DRA driver providing the capacity information."),
            _col("Pool", "Name is used to identify the pool."),
            _AGE,
        ],
        lambda o: [
            o["metadata"]["name"],
            (o.get("spec") or {}).get("nodeName") or "",
            (o.get("spec") or {}).get("driver", ""),
            ((o.get("spec") or {}).get("pool") or {}).get("name", ""),
            _age(o),
        ],
    ),
}
_DEFAULT: Printer = ([_NAME, _AGE], lambda o: [o["metadata"]["name"], _age(o)])


def _row_object(obj: Obj, include: str, api_version: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": obj.get("metadata") or {}}


def table(kind: Kind, objects: Iterable[Obj], *, list_meta: Obj | None, query: Mapping[str, str], accept: str) -> Obj:
    """A ``Table`` of ``objects`` (each as served by ``kind``'s endpoint)."""
    include = query.get("includeObject") or "Metadata"
    if include not in ("None", "Metadata", "Object"):
        raise APIError(400, f"includeObject must be one of None, Metadata, Object; got {include!r}")
    api_version = table_version(accept)
    columns, printer = PRINTERS.get(kind.kind, _DEFAULT)
    rows = []
    for obj in objects:
        row: Obj = {"cells": printer(obj)}
        if kind.kind == "Pod" and (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            phase = obj["status"]["phase"]
            row["conditions"] = [{"type": "Completed", "status": "True", "reason": phase,
                                  "message": "The pod has completed successfully." if phase == "Succeeded"
                                  else "The pod failed."}]  # fmt: skip
        embedded = _row_object(obj, include, api_version)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": dict(list_meta or {}),
        "columnDefinitions": columns,
        "rows": rows,
    }
