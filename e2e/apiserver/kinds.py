"""The kinds the stand-in serves: where they live on the wire and how they behave.

One table, read by the router, the store and discovery. ``storage`` names the bucket in the store;
two views may share one bucket (core ``v1`` Events and ``events.k8s.io/v1`` Events, as in
kube-apiserver, converted on the way in and out by :mod:`e2e.apiserver.events`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    storage: str = ""
    singular: str = ""
    # Kinds whose main endpoint ignores status and whose /status endpoint ignores everything else.
    has_status: bool = field(default=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def bucket(self) -> str:
        return self.storage or self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        """``pods`` or ``resourceclaims.resource.k8s.io``, as kube-apiserver names it in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def collection_path(self, namespace: str | None = None) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace)}/{name}"

    def supports_field(self, label: str) -> bool:
        if label in ("metadata.name", "metadata.namespace") and self.namespaced:
            return True
        if label == "metadata.name":
            return True
        return label in self.field_labels


_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

KINDS: tuple[Kind, ...] = (
    Kind(
        "", "v1", "namespaces", "Namespace", False, ("status", "finalize"), ("status.phase",), ("ns",), has_status=True
    ),
    Kind("", "v1", "nodes", "Node", False, ("status",), ("spec.unschedulable",), ("no",), has_status=True),
    Kind(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("status", "binding", "log", "exec", "ephemeralcontainers"),
        (
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
        ("po",),
        has_status=True,
    ),
    Kind("", "v1", "events", "Event", True, (), _EVENT_FIELDS, ("ev",)),
    Kind("", "v1", "configmaps", "ConfigMap", True, (), (), ("cm",)),
    Kind("", "v1", "secrets", "Secret", True, (), ("type",)),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", True, (), (), ("sa",)),
    Kind("", "v1", "resourcequotas", "ResourceQuota", True, ("status",), (), ("quota",), has_status=True),
    Kind(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        True,
        (),
        (
            *_EVENT_FIELDS,
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reportingController",
        ),
        ("ev",),
        storage="events",
    ),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", True),
    Kind("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", False),
    Kind("resource.k8s.io", "v1", "resourceclaims", "ResourceClaim", True, ("status",), has_status=True),
    Kind("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", True),
    Kind("resource.k8s.io", "v1", "resourceslices", "ResourceSlice", False, (), ("spec.nodeName", "spec.driver")),
    Kind("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False),
    Kind(
        "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False
    ),
)

_BY_PATH: dict[tuple[str, str, str], Kind] = {(k.group, k.version, k.plural): k for k in KINDS}
_BY_KIND: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in KINDS}
_BY_PLURAL: dict[str, Kind] = {}
for _k in KINDS:
    _BY_PLURAL.setdefault(_k.plural, _k)


def kind_for_path(group: str, version: str, plural: str) -> Kind | None:
    return _BY_PATH.get((group, version, plural))


def kind_for_object(api_version: str, kind: str) -> Kind | None:
    return _BY_KIND.get((api_version, kind))


def kind_for_plural(plural: str) -> Kind:
    """The primary view of a plural (core Events for ``events``); ``KeyError`` for unknown ones."""
    try:
        return _BY_PLURAL[plural]
    except KeyError:
        raise KeyError(f"the API server stand-in does not serve {plural!r}; known: {sorted(_BY_PLURAL)}") from None


def groups() -> dict[str, list[str]]:
    """Group name -> served versions (the core group is ``""``)."""
    out: dict[str, list[str]] = {}
    for k in KINDS:
        versions = out.setdefault(k.group, [])
        if k.version not in versions:
            versions.append(k.version)
    return out


def kinds_in(group: str, version: str) -> list[Kind]:
    return [k for k in KINDS if k.group == group and k.version == version]
