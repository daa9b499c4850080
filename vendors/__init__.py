"""Vendor registry: every supported vendor, looked up by short name or driver name."""

from __future__ import annotations

from . import ascend, cambricon, hygon, iluvatar, nvidia
from .base import DOMAIN, AdmissionVendor, NodeVendor, VendorNames


class UnknownVendorError(KeyError):
    """A vendor name that no module provides."""


_MODULES = (nvidia, ascend, cambricon, hygon, iluvatar)
_ADMISSION: dict[str, AdmissionVendor] = {m.NAMES.vendor: m.VENDOR for m in _MODULES}
_NODE: dict[str, NodeVendor] = {m.NAMES.vendor: m.VENDOR for m in _MODULES}


# Resource-name prefixes of every vendor HAMi users write, implemented here or not, so that a pod
# asking for a vendor this webhook does not serve is refused by name instead of passing through.
RESOURCE_PREFIXES: dict[str, tuple[str, ...]] = {
    "nvidia": ("nvidia.com/", "volcano.sh/vgpu-"),
    "ascend": ("huawei.com/Ascend",),
    "cambricon": ("cambricon.com/",),
    "hygon": ("hygon.com/",),
    "iluvatar": ("iluvatar.ai/",),
}


HAMI_ANNOTATION_PREFIX = "hami.io/"
"""HAMi's own annotation domain (scheduling policies, per-chip UUID choices)."""

ANNOTATION_PREFIXES: tuple[str, ...] = (
    f"{DOMAIN}/",
    HAMI_ANNOTATION_PREFIX,
    *sorted({prefix.split("/", 1)[0] + "/" for prefixes in RESOURCE_PREFIXES.values() for prefix in prefixes}),
)
"""Key prefixes of every pod annotation the webhook reads: ours, HAMi's and each vendor's domain
(``nvidia.com/use-gputype``, ``huawei.com/vnpu-mode``, ...). With :data:`RESOURCE_PREFIXES` this is
what the chart's ``matchConditions`` send to the webhook (a pod with none of them is not converted)."""


def vendor_for_resource(resource_name: str) -> str | None:
    """The vendor a container resource name belongs to, implemented or not; ``None`` if none."""
    for vendor, prefixes in RESOURCE_PREFIXES.items():
        if resource_name.startswith(prefixes):
            return vendor
    return None


def all_names() -> list[VendorNames]:
    """Names of every vendor this build knows, enabled or not."""
    return [v.names for v in _ADMISSION.values()]


def admission_vendors(enabled: list[str] | None = None) -> list[AdmissionVendor]:
    """Admission sides of the enabled vendors (all known ones when ``enabled`` is ``None``)."""
    if enabled is None:
        return list(_ADMISSION.values())
    return [admission_vendor(name) for name in enabled]


def admission_vendor(name: str) -> AdmissionVendor:
    try:
        return _ADMISSION[name]
    except KeyError:
        raise UnknownVendorError(f"unknown vendor {name!r}; known: {sorted(_ADMISSION)}") from None


def node_vendor(name: str) -> NodeVendor:
    """The node side of a vendor by short name (``nvidia``) or driver name (``nvidia.tessera.dev``)."""
    for vendor in _NODE.values():
        if name in (vendor.names.vendor, vendor.names.driver):
            return vendor
    raise UnknownVendorError(f"unknown vendor {name!r}; known: {sorted(_NODE)}")
