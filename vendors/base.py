"""The vendor layer: one module per accelerator vendor, behind two small protocols.

* :class:`AdmissionVendor` is what the webhook needs: which container resources belong to the
  vendor, what a container asks for (a :class:`DeviceAsk`), and which CEL selectors the pod's
  annotations imply.
* :class:`NodeVendor` is what the DRA driver needs: the simulated models its mock backend can
  offer, how to discover real devices, and the container edits (env, mounts, device nodes) that
  enforce an allocated share.

Every name the system agrees on (domain, driver and DeviceClass names, capacity and attribute
names, the opaque config kind) is defined here or in the vendor module, nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from tessera_common.quantity import QuantityError, parse_quantity

DOMAIN = "tessera.dev"
"""Our API domain: annotations, labels and the opaque config live under it."""

SHARING_CONFIG_API_VERSION = f"{DOMAIN}/v1alpha1"
SHARING_CONFIG_KIND = "SharingConfig"

OPT_OUT_KEY = f"{DOMAIN}/webhook"
"""Label or annotation on a pod, or label on a namespace; the value ``ignore`` opts out."""
OPT_OUT_VALUE = "ignore"

# Capacity names published on every shareable device (docs/driver.md, ResourceSlices).
CAPACITY_MEMORY = "memory"
CAPACITY_CORES = "cores"
CAPACITY_SHARES = "shares"

# Attribute names published on every device (docs/driver.md, ResourceSlices).
ATTR_UUID = "uuid"
ATTR_INDEX = "index"
ATTR_PRODUCT_NAME = "productName"
ATTR_TYPE = "type"
ATTR_ARCHITECTURE = "architecture"
ATTR_NUMA_NODE = "numaNode"
ATTR_PCIE_BUS_ID = "pcieBusID"
ATTR_DRIVER_VERSION = "driverVersion"

# Occupancy attributes (ints, percent), published by the driver from the ResourceClaims allocated from
# its pools and read by the webhook's placement selectors (binpack, spread): how much of the device is
# held and how much of its node (the mean over the node's devices), in steps of OCCUPANCY_STEP rounded
# up (0: nothing held); and two ranks, the share of the node's devices (deviceRank) and of the
# driver's nodes (nodeRank) that are less occupied (0: none is, this is among the least occupied).
ATTR_OCCUPANCY = "occupancy"
ATTR_NODE_OCCUPANCY = "nodeOccupancy"
ATTR_DEVICE_RANK = "deviceRank"
ATTR_NODE_RANK = "nodeRank"
OCCUPANCY_STEP = 10

DEFAULT_SPLIT_COUNT = 10
"""Default number of shares per physical device (HAMi's deviceSplitCount)."""

MIB = 1024 * 1024

CoreLimitPolicy = Literal["default", "force", "disable"]
CORE_LIMIT_POLICIES: tuple[CoreLimitPolicy, ...] = ("default", "force", "disable")


class ConversionError(ValueError):
    """A pod cannot be converted; the message tells the user what to change."""


class DiscoveryError(RuntimeError):
    """Devices could not be enumerated on this node; the message says what to check."""


@dataclass(frozen=True)
class VendorNames:
    """The names one vendor's devices carry through the system."""

    vendor: str
    """Short name used on the command line and in Helm values, e.g. ``nvidia``."""
    device_word: str
    """The word for one device: device names are ``<word>-<index>``, request names start with it."""

    @property
    def driver(self) -> str:
        """DRA driver name, also the name of the vendor's DeviceClass."""
        return f"{self.vendor}.{DOMAIN}"

    @property
    def device_class(self) -> str:
        return self.driver

    @property
    def cdi_kind(self) -> str:
        """CDI ``vendor/class`` of the per-claim specs the driver writes."""
        return f"k8s.{self.driver}/claim"

    def device_name(self, index: int) -> str:
        return f"{self.device_word}-{index}"

    def qualified(self, name: str) -> str:
        """A capacity or attribute name qualified with the driver's domain, as CEL and constraints use it."""
        return f"{self.driver}/{name}"


@dataclass(frozen=True)
class DeviceAsk:
    """What one container asks of one vendor, validated and in canonical units.

    ``memory_mib`` and ``memory_percent`` are per device and mutually exclusive; ``None`` means the
    container did not say (the whole device's memory). ``cores`` is a percentage of each device;
    ``None`` means the container did not ask for cores (no SM limit is applied).
    """

    count: int
    memory_mib: int | None = None
    memory_percent: int | None = None
    cores: int | None = None
    priority: int | None = None
    models: tuple[str, ...] = ()
    """Device models (the ``type`` attribute) the resource names themselves imply, e.g. ``910B3``."""
    consumed_resources: tuple[str, ...] = ()
    """Container resource names this ask was built from, removed from requests and limits."""
    consumed_env: tuple[str, ...] = ()
    """Container env names this ask was built from (e.g. ``CUDA_TASK_PRIORITY``), removed from the env."""


@dataclass(frozen=True)
class SharingConfig:
    """The opaque, per-request config the webhook writes and the driver reads (docs/webhook.md)."""

    priority: int | None = None
    core_limit_policy: CoreLimitPolicy = "default"
    oversubscribe: bool = False

    def to_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "apiVersion": SHARING_CONFIG_API_VERSION,
            "kind": SHARING_CONFIG_KIND,
            "coreLimitPolicy": self.core_limit_policy,
            "oversubscribe": self.oversubscribe,
        }
        if self.priority is not None:
            params["priority"] = self.priority
        return params

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any], defaults: SharingConfig | None = None) -> SharingConfig:
        """Parse and validate opaque parameters; raise ``ValueError`` with the offending field.

        A field the parameters leave out takes its value from ``defaults`` (the cluster's
        :class:`SharingPolicy` defaults on the node), else the dataclass default.
        """
        base = defaults or cls()
        if params.get("apiVersion") != SHARING_CONFIG_API_VERSION or params.get("kind") != SHARING_CONFIG_KIND:
            raise ValueError(
                f"opaque config is not a {SHARING_CONFIG_API_VERSION} {SHARING_CONFIG_KIND}: "
                f"apiVersion={params.get('apiVersion')!r} kind={params.get('kind')!r}"
            )
        known = {"apiVersion", "kind", "priority", "coreLimitPolicy", "oversubscribe"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"{SHARING_CONFIG_KIND} has unknown fields {unknown}")
        priority = params.get("priority", base.priority)
        if priority is not None and (isinstance(priority, bool) or priority not in (0, 1)):
            raise ValueError(f"{SHARING_CONFIG_KIND}.priority must be 0 (high) or 1 (low), got {priority!r}")
        policy = params.get("coreLimitPolicy", base.core_limit_policy)
        if policy not in CORE_LIMIT_POLICIES:
            raise ValueError(
                f"{SHARING_CONFIG_KIND}.coreLimitPolicy must be one of {list(CORE_LIMIT_POLICIES)}, got {policy!r}"
            )
        oversubscribe = params.get("oversubscribe", base.oversubscribe)
        if not isinstance(oversubscribe, bool):
            raise ValueError(f"{SHARING_CONFIG_KIND}.oversubscribe must be a boolean, got {oversubscribe!r}")
        return cls(priority=priority, core_limit_policy=policy, oversubscribe=oversubscribe)


_CORE_STRICTNESS: Mapping[str, int] = {"disable": 0, "default": 1, "force": 2}
"""How strictly each ``coreLimitPolicy`` holds a share to its SM limit: ``disable`` never, ``default``
while other tenants use the device, ``force`` always."""


class PolicyError(ValueError):
    """A ``SharingConfig`` goes beyond the cluster's :class:`SharingPolicy`; the message names the field,
    the policy setting that forbids it and how to fix it."""


@dataclass(frozen=True)
class PolicySetting:
    """Where an admin sets one part of the policy: the Helm value and the flag of both programs."""

    value: str
    flag: str

    def __str__(self) -> str:
        return f"Helm value {self.value}, flag {self.flag}"


CORE_POLICY_SETTING = PolicySetting("policy.coreLimitPolicy", "--core-policy")
HIGH_PRIORITY_SETTING = PolicySetting("policy.allowHighPriority", "--allow-high-priority")
OVERSUBSCRIBE_SETTING = PolicySetting("policy.allowOversubscribe", "--allow-oversubscribe")
CORE_DISABLE_SETTING = PolicySetting("policy.allowCoreLimitDisable", "--allow-core-limit-disable")


@dataclass(frozen=True)
class SharingPolicy:
    """The cluster's sharing policy: one set of values (the chart's ``policy``) read by the webhook, which
    writes claims within it, and by every driver, which honours a claim's ``SharingConfig`` only within it.

    Three settings loosen isolation between tenants: ``coreLimitPolicy: disable`` (no SM limit even
    while others share the device), ``priority: 0`` (the share's kernels pause other tenants' on the
    device) and ``oversubscribe: true`` (allocations past the physical free memory fall back to
    managed memory). Config from a DeviceClass (``source: FromClass``, written by the admin) is
    honoured as it is; config from a claim (``source: FromClaim``, which any user who can create a
    claim or a template can write) only within this policy.
    """

    core_limit_policy: CoreLimitPolicy = "default"
    """What a share gets when no config names a policy; also the loosest a claim may name (``disable``
    needs :attr:`allow_core_limit_disable` as well)."""
    allow_high_priority: bool = True
    """Claims may ask for ``priority: 0`` (HAMi lets every pod do so; turn off where tenants do not trust
    each other)."""
    allow_oversubscribe: bool = False
    allow_core_limit_disable: bool = False

    def __post_init__(self) -> None:
        if self.core_limit_policy not in CORE_LIMIT_POLICIES:
            raise ValueError(
                f"core limit policy must be one of {list(CORE_LIMIT_POLICIES)}, got {self.core_limit_policy!r}"
            )
        if self.core_limit_policy == "disable" and not self.allow_core_limit_disable:
            raise ValueError(
                f"the cluster's core limit policy is disable but disabling the core limit is not allowed: set "
                f"{CORE_DISABLE_SETTING.value} (flag {CORE_DISABLE_SETTING.flag}) to true as well, or choose "
                "default or force"
            )

    def defaults(self) -> SharingConfig:
        """The config of a share whose claim and class name none."""
        return SharingConfig(core_limit_policy=self.core_limit_policy)

    def check_claim(self, config: SharingConfig, current: SharingConfig) -> list[str]:
        """What in ``config`` (from a claim) goes beyond this policy; one sentence per field, empty if nothing.

        A field may be as loose as the policy allows, or as loose as ``current`` (the config in effect
        before this claim entry: the DeviceClass's, or the policy's defaults): a claim can never loosen
        what the admin set, but it may repeat it.
        """
        problems: list[str] = []
        loosest_core = 0 if self.allow_core_limit_disable else _CORE_STRICTNESS[self.core_limit_policy]
        floor = min(loosest_core, _CORE_STRICTNESS[current.core_limit_policy])
        if _CORE_STRICTNESS[config.core_limit_policy] < floor:
            if config.core_limit_policy == "disable" and not self.allow_core_limit_disable:
                why = f"disabling the core limit is not allowed ({CORE_DISABLE_SETTING} is false)"
            else:
                why = f"the cluster's core limit policy is {self.core_limit_policy} ({CORE_POLICY_SETTING})"
            problems.append(f"coreLimitPolicy: {config.core_limit_policy} is looser than this cluster allows: {why}")
        if config.priority == 0 and not self.allow_high_priority and current.priority != 0:
            problems.append(f"priority: 0 (high) is not allowed in this cluster ({HIGH_PRIORITY_SETTING} is false)")
        if config.oversubscribe and not self.allow_oversubscribe and not current.oversubscribe:
            problems.append(f"oversubscribe: true is not allowed in this cluster ({OVERSUBSCRIBE_SETTING} is false)")
        return problems


AttributeValue = int | bool | str


@dataclass(frozen=True)
class DeviceInfo:
    """One physical device as discovery (real or simulated) reports it."""

    index: int
    uuid: str
    product_name: str
    model: str
    """Short model, published as the ``type`` attribute (``H200``, ``910B3``)."""
    memory_bytes: int
    architecture: str = ""
    compute_capability: str = ""
    driver_version: str = ""
    """A semantic version string (``550.54.15`` is normalised by the publisher)."""
    pci_bus_id: str = ""
    numa_node: int | None = None
    device_nodes: tuple[str, ...] = ()
    """Host device nodes the container needs for this device (empty for simulated devices)."""
    extra_attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    """Vendor-specific attributes, published next to the common ones."""
    memory_valid_mib: tuple[int, ...] = ()
    """When set, the only memory amounts (MiB, ascending, at most 10, the last one the whole device) a
    share may consume: the publisher writes them as the ``memory`` capacity's ``requestPolicy.validValues``
    (default: the last one), so the scheduler rounds a request up to the next one, as HAMi rounds Ascend
    memory up to a vNPU template. Empty: any amount in 1 MiB steps."""
    cores_shareable: bool = True
    """False when the vendor cannot give a share an arbitrary percentage of the compute (Ascend template
    vNPUs fix it with the memory): the publisher then omits the ``cores`` capacity, so a claim that asks
    for cores does not fit the device."""


@dataclass(frozen=True)
class MockModel:
    """A device model the mock backend can simulate (``--mock-devices 4xH200``)."""

    model: str
    product_name: str
    memory_mib: int
    architecture: str = ""
    compute_capability: str = ""
    extra_attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    memory_valid_mib: tuple[int, ...] = ()
    """Copied to :attr:`DeviceInfo.memory_valid_mib` of the simulated devices."""
    cores_shareable: bool = True
    """Copied to :attr:`DeviceInfo.cores_shareable` of the simulated devices."""


@dataclass(frozen=True)
class Share:
    """One allocated device (or share of one) that the driver prepares for a container."""

    device: DeviceInfo
    request: str
    share_id: str | None
    memory_bytes: int | None
    """Consumed memory; ``None`` means the whole device (no limit)."""
    cores: int | None
    """Consumed cores in percent, only when the claim asked for cores; ``None`` means no SM limit."""


@dataclass(frozen=True)
class DeviceNode:
    path: str
    host_path: str | None = None
    permissions: str | None = None


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    read_only: bool = True

    def options(self) -> list[str]:
        return ["ro" if self.read_only else "rw", "nosuid", "nodev", "bind"]


@dataclass(frozen=True)
class ContainerEdits:
    """What the runtime applies to a container that gets a share (CDI ``containerEdits``)."""

    env: Mapping[str, str] = field(default_factory=dict)
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)
    """Files the driver writes on the host before it publishes the CDI spec: absolute host path ->
    text content (mode 0644; restored from the checkpoint when missing or changed). Every path lies
    under :attr:`NodeLayout.claim_dir` or :attr:`NodeLayout.node_dir`; unprepare removes them with the
    claim directory. The mounts above refer to them (Hygon's vdev config, libvgpu's limits file).
    Not part of the CDI spec itself."""
    writable_files: tuple[str, ...] = ()
    """Files the container writes (libvgpu's usage region and node record): created empty, mode 0666,
    when missing, and never rewritten or compared by the driver (their content is the container's).
    Same places and removal as :attr:`files`; mount each one by itself, never its directory."""

    def to_cdi(self) -> dict[str, Any]:
        edits: dict[str, Any] = {}
        if self.env:
            edits["env"] = [f"{k}={v}" for k, v in self.env.items()]
        if self.device_nodes:
            nodes = []
            for n in self.device_nodes:
                node: dict[str, Any] = {"path": n.path}
                if n.host_path:
                    node["hostPath"] = n.host_path
                if n.permissions:
                    node["permissions"] = n.permissions
                nodes.append(node)
            edits["deviceNodes"] = nodes
        if self.mounts:
            edits["mounts"] = [
                {"hostPath": m.host_path, "containerPath": m.container_path, "type": "bind", "options": m.options()}
                for m in self.mounts
            ]
        return edits


DEFAULT_KUBELET_DIR = "/var/lib/kubelet"
DEFAULT_CDI_DIR = "/var/run/cdi"
DEFAULT_HOST_LIB_DIR = "/usr/local/tessera"
"""The node's directories Tessera uses, as the driver's flags and the chart's values default them."""


def plugin_dir(driver: str, kubelet_dir: str = DEFAULT_KUBELET_DIR) -> str:
    """The driver's own kubelet plugin directory: its DRA socket and checkpoint."""
    return f"{kubelet_dir.rstrip('/')}/plugins/{driver}"


def registry_dir(kubelet_dir: str = DEFAULT_KUBELET_DIR) -> str:
    """The kubelet's plugin registration directory."""
    return f"{kubelet_dir.rstrip('/')}/plugins_registry"


def host_dirs(
    drivers: Sequence[str],
    *,
    kubelet_dir: str = DEFAULT_KUBELET_DIR,
    cdi_dir: str = DEFAULT_CDI_DIR,
    host_lib_dir: str = DEFAULT_HOST_LIB_DIR,
) -> tuple[str, ...]:
    """The host directories the drivers of ``drivers`` own or write to (no workload may mount them)."""
    return (
        host_lib_dir.rstrip("/") or "/",
        cdi_dir.rstrip("/") or "/",
        registry_dir(kubelet_dir),
        *(plugin_dir(d, kubelet_dir) for d in drivers),
    )


@dataclass(frozen=True)
class NodeLayout:
    """Where the driver keeps things on the host, as the container edits refer to them."""

    host_lib_dir: str
    """Holds ``libvgpu.so``, ``ld.so.preload``, ``claims/<claim uid>/`` and ``node/``."""
    claim_dir: str
    """The per-claim directory of the driver's files (host path). Never mounted into a container as a
    whole: single files of it are."""
    peer_files: Mapping[str, str] = field(default_factory=dict)
    """Files (host path -> content) the node's other prepared claims hold, from the driver's checkpoint:
    what a vendor that partitions a device itself (Hygon's vdevs) must not hand out twice."""

    @property
    def node_dir(self) -> str:
        """The node-wide directory (host path): one record and meta file per prepared container, read
        by the other containers for task priority; read-only in every container."""
        return node_dir(self.host_lib_dir)


NODE_DIR_NAME = "node"


def node_dir(host_lib_dir: str) -> str:
    return f"{host_lib_dir.rstrip('/')}/{NODE_DIR_NAME}"


class AdmissionVendor(Protocol):
    """The webhook side of a vendor."""

    names: VendorNames

    def owns_resource(self, resource_name: str) -> bool:
        """True when a container resource with this name belongs to the vendor."""
        ...

    def parse(self, container: Mapping[str, Any]) -> DeviceAsk | None:
        """What the container asks of this vendor, or ``None`` if nothing.

        Raises :class:`ConversionError` with a message the user can act on for bad values.
        """
        ...

    def selectors(self, annotations: Mapping[str, str]) -> list[str]:
        """CEL expressions the pod's annotations impose on this vendor's devices."""
        ...


@runtime_checkable
class AttributeMatchingVendor(Protocol):
    """Optional webhook-side extension: attributes all devices of one container must share.

    A vendor implements it when pod annotations can bind a container's devices together (NVIDIA's
    ``nvidia.com/numa-bind`` -> ``numaNode``); the webhook turns each name into a ``matchAttribute``
    constraint on the container's request when it asks for more than one device.
    """

    def match_attributes(self, annotations: Mapping[str, str]) -> list[str]:
        """Unqualified attribute names; raises :class:`ConversionError` for a malformed annotation."""
        ...


@dataclass(frozen=True)
class QuotaNames:
    """Resource names a namespace's ResourceQuota may cap for one vendor's shares, HAMi's spelling
    (``limits.<memory>``, ``limits.<cores>`` in ``spec.hard``).

    A claim's request is charged, per device, its memory in ``memory_unit_mib`` units (rounded up) and
    its cores in percent; a request is charged under these names when it may get a device of one of
    ``models`` (empty: any device of the vendor).
    """

    memory: str
    """e.g. ``nvidia.com/gpumem`` (without the ``limits.`` prefix)."""
    cores: str | None
    """e.g. ``nvidia.com/gpucores``; ``None`` when the vendor has no cores resource."""
    memory_unit_mib: int = 1
    """MiB per unit of the memory quota (the unit of the vendor's memory resource)."""
    models: frozenset[str] = frozenset()
    """Device models (the ``type`` attribute) the names cover; empty: every model of the vendor."""


@runtime_checkable
class QuotaVendor(Protocol):
    """Optional webhook-side extension: the ResourceQuota names that cap the vendor's shares (HAMi's)."""

    def quota_names(self) -> Sequence[QuotaNames]: ...


class NodeVendor(Protocol):
    """The node (DRA driver) side of a vendor."""

    names: VendorNames
    real_backend: str
    """Name of the real discovery backend for ``--backend`` (``nvml``, ``npu-smi``, ...)."""
    mock_models: Mapping[str, MockModel]

    def discover(self) -> list[DeviceInfo]:
        """Enumerate the node's devices with the vendor's own library or tool.

        Raises :class:`DiscoveryError` when the library or tool is missing or its output is unusable.
        """
        ...

    def container_edits(self, shares: Sequence[Share], config: SharingConfig, layout: NodeLayout) -> ContainerEdits:
        """The edits that give a container exactly ``shares`` (sorted by device index) and enforce them."""
        ...


@runtime_checkable
class HealthReportingVendor(Protocol):
    """Optional node-side extension: the vendor tool's own view of each device's health.

    The driver polls it every health interval; a device with a problem is reported unhealthy to the
    kubelet and tainted in the ResourceSlice.
    """

    def device_health(self) -> dict[str, str]:
        """Device UUID (as :meth:`NodeVendor.discover` reports it) -> what the tool says is wrong, ``""``
        when healthy. Raises :class:`DiscoveryError` when the tool cannot be run or read."""
        ...


# --- helpers shared by vendor modules (pure) -----------------------------------------------------

_INT64_MAX = 2**63 - 1
"""The largest value ``Quantity.Value()`` holds (HAMi reads resources as ``int(q.Value())``)."""


def parse_count(value: Any, resource: str) -> int:
    """A non-negative whole number from a container resource value, read as HAMi reads it.

    kube-apiserver sends every quantity in canonical form (``3000`` arrives as ``"3k"``, ``10240`` as
    ``"10240"``, ``2048Mi`` as ``"2Gi"``), and HAMi takes ``Quantity.Value()`` of it: the number itself,
    in the resource's own unit (``nvidia.com/gpumem: 3k`` is 3000 MiB, ``10Gi`` is 10737418240 MiB). A
    fractional value (``1500m``) is refused, as kube-apiserver refuses it for every extended resource.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConversionError(f"{resource}: expected a whole number, got {value!r}; write for example {resource}: 1")
    try:
        exact = parse_quantity(repr(value) if isinstance(value, float) else value)
    except QuantityError:
        raise ConversionError(
            f"{resource}: expected a whole number, got {value!r}; write for example {resource}: 1"
        ) from None
    if exact < 0:
        raise ConversionError(f"{resource}: must not be negative, got {value!r}")
    if exact.denominator != 1:
        raise ConversionError(
            f"{resource}: expected a whole number, got {value!r} ({float(exact):g}); Kubernetes refuses it "
            f"as well (an extended resource must be an integer)"
        )
    if exact > _INT64_MAX:
        raise ConversionError(f"{resource}: {value!r} is too large")
    return int(exact)


def split_list(value: str) -> list[str]:
    """Comma-separated annotation values, trimmed, empty entries dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def cel_string(value: str) -> str:
    """A CEL string literal (double-quoted, escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def cel_regex_literal(value: str) -> str:
    """``value`` as a case-insensitive RE2 substring pattern, itself as a CEL string literal."""
    return cel_string("(?i)" + re.escape(value))


def type_selector(names: VendorNames, types: Sequence[str], *, negate: bool) -> str:
    """Case-insensitive substring match of ``type`` or ``productName`` against any of ``types`` (HAMi)."""
    attrs = f"device.attributes[{cel_string(names.driver)}]"
    terms = [
        " || ".join(f"{attrs}.{attr}.matches({cel_regex_literal(t)})" for attr in (ATTR_TYPE, ATTR_PRODUCT_NAME))
        for t in types
    ]
    expr = " || ".join(f"({t})" for t in terms)
    return f"!({expr})" if negate else expr


def uuid_selector(names: VendorNames, uuids: Sequence[str], *, negate: bool) -> str:
    attrs = f"device.attributes[{cel_string(names.driver)}]"
    listed = ", ".join(cel_string(u) for u in uuids)
    expr = f"{attrs}.{ATTR_UUID} in [{listed}]"
    return f"!({expr})" if negate else expr


def annotation_selectors(
    names: VendorNames,
    annotations: Mapping[str, str],
    *,
    use_type: str | None = None,
    nouse_type: str | None = None,
    use_uuid: str | None = None,
    nouse_uuid: str | None = None,
) -> list[str]:
    """CEL selectors for HAMi's four device-choice annotations of a vendor (keys it does not have: ``None``).

    Comma lists; an empty value means no constraint, as in HAMi.
    """
    out: list[str] = []
    for key, negate in ((use_type, False), (nouse_type, True)):
        types = split_list(annotations.get(key, "")) if key else []
        if types:
            out.append(type_selector(names, types, negate=negate))
    for key, negate in ((use_uuid, False), (nouse_uuid, True)):
        uuids = split_list(annotations.get(key, "")) if key else []
        if uuids:
            out.append(uuid_selector(names, uuids, negate=negate))
    return out
