"""Hygon DCUs: HAMi's ``hygon.com/dcunum``, ``dcumem`` and ``dcucores``, enforced by the driver's vdev.

Admission
    ``hygon.com/dcunum`` (count), ``hygon.com/dcumem`` (MiB), ``hygon.com/dcucores`` (percent). Same
    rules and denials as NVIDIA; a vdev is one per container (HAMi's plugin only writes one for a
    container with a single DCU), so several DCUs in one container are whole DCUs. Annotations:
    ``hygon.com/use-dcutype`` / ``nouse-dcutype`` (type substring), ``hygon.com/use-gpuuuid`` /
    ``nouse-gpuuuid`` (UUID lists).

Node
    Discovery runs ``hy-smi --showproductname --showbus --showuniqueid --showmeminfo vram
    --showdriverversion`` (the rocm-smi style ``DCU[i] : key: value`` report; no Python binding for the
    Hygon management library exists on PyPI). The DRM card and render nodes of each DCU come from
    sysfs (``/sys/bus/pci/devices/<bus id>/drm``), its compute-unit count from the KFD topology
    (``/sys/class/kfd/kfd/topology/nodes/*/properties``).

    Container edits (real devices): ``/dev/kfd``, ``/dev/mkfd``, ``/dev/dri/card<N>`` and
    ``/dev/dri/renderD<N>``, the Hygon driver stack mounted read-only at ``/opt/hyhal`` and
    ``/opt/hygondriver`` (host paths from ``TESSERA_HYGON_HYHAL_DIR``, default ``/opt/hyhal``, and
    ``TESSERA_HYGON_DRIVER_DIR``, default ``/opt/dtk``). A share with a memory or core limit gets a
    **vdev config** (``PciBusId``, two ``cu_mask`` words, ``cu_count``, ``mem: <MiB> MiB``,
    ``device_id``, ``vdev_id``, ``pipe_id``, ``enable: 1``, HAMi's format) returned in
    :attr:`ContainerEdits.files` under the claim directory and mounted at ``/etc/vdev/docker/``; the
    Hygon driver stack in the container reads it and the driver enforces the memory size and the
    compute-unit mask. That enforcement is Hygon's; Tessera only writes the file.

    The compute units, vdev id and pipe id must not collide with other vdevs on the node. The vendor
    picks free ones by reading the vdev configs of the node's other prepared claims (under
    ``<host lib dir>/claims/*/``): a read of the driver's own state, not a pure function. Two prepares of
    partial shares of the same DCU running at the same instant could still pick the same CUs; the driver
    must serialise Hygon prepares per node for the masks to be exclusive.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import (
    MIB,
    ContainerEdits,
    DeviceAsk,
    DeviceInfo,
    DeviceNode,
    DiscoveryError,
    MockModel,
    Mount,
    NodeLayout,
    QuotaNames,
    Share,
    SharingConfig,
    VendorNames,
    annotation_selectors,
)
from .common import (
    DEFAULT_TOOL_TIMEOUT_S,
    ENFORCER_ENV,
    MemoryUnit,
    env_setting,
    normalise_version,
    run_tool,
    single_share_ask,
)

NAMES = VendorNames(vendor="hygon", device_word="dcu")

RESOURCE_PREFIX = "hygon.com/"
COUNT_RESOURCES = ("hygon.com/dcunum",)
MEMORY_RESOURCES = ("hygon.com/dcumem",)
CORE_RESOURCES = ("hygon.com/dcucores",)
ALL_RESOURCES = frozenset(COUNT_RESOURCES + MEMORY_RESOURCES + CORE_RESOURCES)
QUOTA_NAMES = (QuotaNames(MEMORY_RESOURCES[0], CORE_RESOURCES[0]),)
"""``limits.hygon.com/dcumem`` (MiB) and ``limits.hygon.com/dcucores`` (percent per DCU), HAMi's."""

USE_TYPE = "hygon.com/use-dcutype"
NOUSE_TYPE = "hygon.com/nouse-dcutype"
USE_UUID = "hygon.com/use-gpuuuid"
NOUSE_UUID = "hygon.com/nouse-gpuuuid"

ATTR_COMPUTE_UNITS = "computeUnits"
DEFAULT_COMPUTE_UNITS = 64
"""Used for the vdev's CU mask when the KFD topology does not tell (one 64-bit mask word)."""
MAX_COMPUTE_UNITS = 128
"""A vdev config carries two 64-bit CU mask words."""
MAX_VDEVS = 200
MAX_PIPES = 20

VDEV_MOUNT = "/etc/vdev/docker/"

HY_SMI_ENV = "TESSERA_HY_SMI"
"""Driver env: the path of ``hy-smi`` in the driver container."""
HYHAL_DIR_ENV = "TESSERA_HYGON_HYHAL_DIR"
"""Driver env: the host's hyhal directory, mounted into containers at ``/opt/hyhal``."""
DRIVER_DIR_ENV = "TESSERA_HYGON_DRIVER_DIR"
"""Driver env: the host's DTK directory, mounted into containers at ``/opt/hygondriver``."""
KFD_NODES = ("/dev/kfd", "/dev/mkfd")

MOCK_MODELS: Mapping[str, MockModel] = {
    m.model: m
    for m in (
        MockModel("Z100", "Hygon Z100", 32752, "gfx906", extra_attributes={ATTR_COMPUTE_UNITS: 60}),
        MockModel("Z100L", "Hygon Z100L", 32752, "gfx906", extra_attributes={ATTR_COMPUTE_UNITS: 60}),
        MockModel("K100", "Hygon K100", 65520, "gfx926", extra_attributes={ATTR_COMPUTE_UNITS: 120}),
        MockModel("K100_AI", "Hygon K100_AI", 65520, "gfx928", extra_attributes={ATTR_COMPUTE_UNITS: 120}),
    )
}
"""Simulated DCUs (memory as hy-smi reports it)."""


class Hygon:
    """Both sides of the Hygon vendor."""

    names = NAMES
    real_backend = "hy-smi"
    mock_models = MOCK_MODELS

    def __init__(
        self,
        *,
        hy_smi: str = "hy-smi",
        timeout_s: float = DEFAULT_TOOL_TIMEOUT_S,
        node_name: str | None = None,
        sysfs_root: str = "/sys",
        dev_root: str = "/",
        hyhal_dir: str = "/opt/hyhal",
        driver_dir: str = "/opt/dtk",
    ) -> None:
        self.hy_smi = hy_smi
        self.timeout_s = timeout_s
        self.node_name = node_name
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root
        self.hyhal_dir = hyhal_dir
        self.driver_dir = driver_dir

    @classmethod
    def from_env(cls) -> Hygon:
        """Settings: ``TESSERA_HY_SMI``, ``TESSERA_HYGON_HYHAL_DIR``, ``TESSERA_HYGON_DRIVER_DIR``."""
        return cls(
            hy_smi=env_setting(HY_SMI_ENV, "hy-smi"),
            hyhal_dir=env_setting(HYHAL_DIR_ENV, "/opt/hyhal"),
            driver_dir=env_setting(DRIVER_DIR_ENV, "/opt/dtk"),
        )

    # --- admission side --------------------------------------------------------------------------

    def owns_resource(self, resource_name: str) -> bool:
        return resource_name.startswith(RESOURCE_PREFIX)

    def parse(self, container: Mapping[str, Any]) -> DeviceAsk | None:
        return single_share_ask(
            container,
            prefix=RESOURCE_PREFIX,
            known=ALL_RESOURCES,
            counts=COUNT_RESOURCES,
            memories=MEMORY_RESOURCES,
            cores=CORE_RESOURCES,
            memory_unit=MemoryUnit(mib=1),
            vendor="Hygon",
            device_label="DCU",
        )

    def selectors(self, annotations: Mapping[str, str]) -> list[str]:
        return annotation_selectors(NAMES, annotations, use_type=USE_TYPE, nouse_type=NOUSE_TYPE,
                                    use_uuid=USE_UUID, nouse_uuid=NOUSE_UUID)  # fmt: skip

    def quota_names(self) -> Sequence[QuotaNames]:
        return QUOTA_NAMES

    # --- node side -------------------------------------------------------------------------------

    def discover(self) -> list[DeviceInfo]:
        hint = (
            "is the Hygon DTK/hyhal installed and hy-smi mounted into the driver container "
            "(set TESSERA_HY_SMI to its path)? Use --backend mock on nodes without DCUs"
        )
        argv = [
            self.hy_smi,
            "--showproductname",
            "--showbus",
            "--showuniqueid",
            "--showmeminfo",
            "vram",
            "--showdriverversion",
        ]
        dcus = parse_hy_smi(run_tool(argv, timeout_s=self.timeout_s, hint=hint))
        node = self.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        compute_units = kfd_compute_units(self.sysfs_root)
        # /dev/kfd exists on every DCU host; /dev/mkfd only with newer drivers.
        extra_nodes = ["/dev/kfd", *(p for p in KFD_NODES[1:] if os.path.exists(os.path.join(self.dev_root, p[1:])))]
        devices: list[DeviceInfo] = []
        for dcu in dcus:
            card, render = drm_nodes(self.sysfs_root, dcu.bus_id, dcu.index)
            attrs: dict[str, int | bool | str] = {}
            cus = compute_units.get(dcu.bus_id.lower())
            if cus:
                attrs[ATTR_COMPUTE_UNITS] = cus
            devices.append(
                DeviceInfo(
                    index=dcu.index,
                    uuid=dcu.unique_id or device_uuid(node, dcu.bus_id, dcu.index),
                    product_name=f"Hygon {dcu.series}",
                    model=dcu.series,
                    memory_bytes=dcu.memory_mib * MIB,
                    driver_version=dcu.driver_version,
                    pci_bus_id=dcu.bus_id,
                    device_nodes=(*extra_nodes, f"/dev/dri/{card}", f"/dev/dri/{render}"),
                    extra_attributes=attrs,
                )
            )
        return devices

    def container_edits(self, shares: Sequence[Share], config: SharingConfig, layout: NodeLayout) -> ContainerEdits:
        ordered = sorted(shares, key=lambda s: s.device.index)
        if not ordered:
            return ContainerEdits()
        nodes: dict[str, DeviceNode] = {}
        for s in ordered:
            for path in s.device.device_nodes:
                nodes.setdefault(path, DeviceNode(path=path, permissions="rw" if "/dri/" in path else "rwm"))
        real = bool(nodes)
        mounts: list[Mount] = []
        if real:
            mounts = [Mount(self.hyhal_dir, "/opt/hyhal"), Mount(self.driver_dir, "/opt/hygondriver")]
        partial = [
            s
            for s in ordered
            if (s.memory_bytes is not None and s.memory_bytes < s.device.memory_bytes)
            or (s.cores is not None and 0 < s.cores < 100)
        ]
        if not partial:
            return ContainerEdits(env={ENFORCER_ENV: "none"}, device_nodes=tuple(nodes.values()), mounts=tuple(mounts))
        if len(ordered) > 1:
            raise ValueError(
                f"request {ordered[0].request}: a vdev is one per container, got {len(ordered)} devices with a "
                "memory or core limit; the webhook refuses such pods"
            )
        share = ordered[0]
        others = read_vdev_configs(layout)
        vdev = plan_vdev(share, others)
        directory = os.path.join(layout.claim_dir, "hygon-vdev-" + re.sub(r"[^A-Za-z0-9_.-]", "-", share.request))
        path = os.path.join(directory, f"vdev{vdev.vdev_id}.conf")
        # Read-only: the vdev file is the container's limit (memory, compute units); the runtime reads it.
        mounts.append(Mount(directory, VDEV_MOUNT, read_only=True))
        return ContainerEdits(
            env={ENFORCER_ENV: "hygon-vdev"},
            device_nodes=tuple(nodes.values()),
            mounts=tuple(mounts),
            files={path: vdev.render()},
        )


_VDEV_FILE = re.compile(r"vdev\d+\.conf")
_UUID_NS = uuid.UUID("8c3e1d6a-2f4b-4e5c-9a7d-1b2c3d4e5f60")


def device_uuid(node_name: str, bus_id: str, index: int) -> str:
    """A stable UUID for a DCU whose hy-smi shows no unique id: node name + PCI bus id."""
    return f"DCU-{uuid.uuid5(_UUID_NS, f'{node_name}/{bus_id.lower()}/{index}')}"


# --- vdev config -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VdevConfig:
    """One Hygon vdev config file (HAMi's dcu-vgpu-device-plugin format)."""

    pci_bus_id: str
    cu_mask: tuple[int, int]
    """Two 64-bit words: CUs 0-63 and 64-127."""
    cu_count: int
    memory_mib: int
    device_id: int
    vdev_id: int
    pipe_id: int

    def render(self) -> str:
        return (
            f"PciBusId: {self.pci_bus_id}\n"
            f"cu_mask: 0x{self.cu_mask[0]:016x}\n"
            f"cu_mask: 0x{self.cu_mask[1]:016x}\n"
            f"cu_count: {self.cu_count}\n"
            f"mem: {self.memory_mib} MiB\n"
            f"device_id: {self.device_id}\n"
            f"vdev_id: {self.vdev_id}\n"
            f"pipe_id: {self.pipe_id}\n"
            "enable: 1\n"
        )

    @classmethod
    def parse(cls, text: str) -> VdevConfig:
        """Read a rendered config back; ``ValueError`` for anything else."""
        fields: dict[str, list[str]] = {}
        for line in text.splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                fields.setdefault(key.strip(), []).append(value.strip())
        try:
            masks = [int(v, 16) for v in fields["cu_mask"]]
            return cls(
                pci_bus_id=fields["PciBusId"][0],
                cu_mask=(masks[0], masks[1] if len(masks) > 1 else 0),
                cu_count=int(fields["cu_count"][0]),
                memory_mib=int(fields["mem"][0].split()[0]),
                device_id=int(fields["device_id"][0]),
                vdev_id=int(fields["vdev_id"][0]),
                pipe_id=int(fields["pipe_id"][0]),
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"not a vdev config: {exc}") from None

    @property
    def mask(self) -> int:
        return self.cu_mask[0] | (self.cu_mask[1] << 64)


def read_vdev_configs(layout: NodeLayout) -> list[VdevConfig]:
    """The vdev configs of the node's other prepared claims, from ``layout.peer_files`` (pure)."""
    configs: list[VdevConfig] = []
    for path, content in sorted(layout.peer_files.items()):
        if not _VDEV_FILE.fullmatch(os.path.basename(path)) or "hygon-vdev-" not in path:
            continue
        try:
            configs.append(VdevConfig.parse(content))
        except ValueError:
            continue  # a foreign file: it holds nothing we must avoid
    return configs


def plan_vdev(share: Share, others: Sequence[VdevConfig]) -> VdevConfig:
    """The vdev config of ``share``: free CUs, vdev id and pipe id given the node's other vdevs.

    The CU count is the share's core percentage of the device's CUs (at least one; all CUs when the
    claim asked no cores); the mask takes the lowest free CUs. Raises ``ValueError`` when the device
    has not enough free CUs or ids left (the scheduler's ``cores`` accounting normally prevents it).
    """
    device = share.device
    total_cus = int(device.extra_attributes.get(ATTR_COMPUTE_UNITS, DEFAULT_COMPUTE_UNITS))
    total_cus = max(1, min(total_cus, MAX_COMPUTE_UNITS))
    cores = 100 if share.cores is None else share.cores
    cu_count = max(1, total_cus * cores // 100)
    same_device = [c for c in others if c.pci_bus_id.lower() == device.pci_bus_id.lower()]
    used = 0
    if share.cores is not None:  # a share without a core limit runs on all CUs, overlapping others
        for c in same_device:
            if c.cu_count < total_cus:  # vdevs on all CUs hold none exclusively
                used |= c.mask
    mask = 0
    picked = 0
    for bit in range(total_cus):
        if picked == cu_count:
            break
        if not used >> bit & 1:
            mask |= 1 << bit
            picked += 1
    if picked < cu_count:
        raise ValueError(
            f"DCU {device.index} ({device.pci_bus_id}) has {picked} free compute units, {cu_count} needed; "
            "its vdev configs disagree with the scheduler's accounting"
        )
    vdev_ids = {c.vdev_id for c in others}
    pipes = {c.pipe_id for c in same_device}
    vdev_id = next((i for i in range(MAX_VDEVS) if i not in vdev_ids), None)
    pipe_id = next((i for i in range(MAX_PIPES) if i not in pipes), None)
    if vdev_id is None or pipe_id is None:
        raise ValueError(f"no free vdev id (of {MAX_VDEVS}) or pipe id (of {MAX_PIPES}) left on this node")
    memory_mib = (share.memory_bytes or device.memory_bytes) // MIB
    return VdevConfig(
        pci_bus_id=device.pci_bus_id,
        cu_mask=(mask & (2**64 - 1), mask >> 64),
        cu_count=cu_count,
        memory_mib=memory_mib,
        device_id=device.index,
        vdev_id=vdev_id,
        pipe_id=pipe_id,
    )


# --- hy-smi parser and sysfs -----------------------------------------------------------------------


@dataclass(frozen=True)
class HyDcu:
    index: int
    series: str
    bus_id: str
    unique_id: str
    memory_mib: int
    driver_version: str


_LINE_RE = re.compile(r"^\s*(?:DCU|HCU|GPU)\[(\d+)\]\s*:\s*(.+?)\s*:\s*(.*?)\s*$")
_DRIVER_RE = re.compile(r"^\s*Driver version\s*:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_BUS_RE = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")


def parse_hy_smi(text: str) -> list[HyDcu]:
    """DCUs of a ``hy-smi --showproductname --showbus --showuniqueid --showmeminfo vram --showdriverversion``
    report: ``DCU[i] : <key>: <value>`` lines (rocm-smi layout). VRAM total may be in MiB or bytes."""
    if not text.strip():
        raise DiscoveryError("hy-smi printed nothing")
    fields: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        match = _LINE_RE.match(line)
        if match:
            fields.setdefault(int(match.group(1)), {})[match.group(2).strip().lower()] = match.group(3).strip()
    if not fields:
        raise DiscoveryError("hy-smi: no 'DCU[<i>] : <key>: <value>' line in the output")
    driver = _DRIVER_RE.search(text)
    version = normalise_version(driver.group(1)) if driver else ""
    dcus: list[HyDcu] = []
    for index in sorted(fields):
        f = fields[index]
        series = f.get("card series") or f.get("card model") or f.get("card sku") or ""
        if not series:
            raise DiscoveryError(f"hy-smi: DCU[{index}] has no Card Series (was --showproductname given?)")
        memory_mib = _vram_total_mib(f)
        if memory_mib is None or memory_mib <= 0:
            raise DiscoveryError(f"hy-smi: DCU[{index}] has no readable vram Total Memory")
        bus = f.get("pci bus", "")
        if bus and not _BUS_RE.match(bus):
            raise DiscoveryError(f"hy-smi: DCU[{index}] has an unreadable PCI Bus {bus!r}")
        unique = f.get("unique id", "")
        if unique.upper() in ("N/A", "NONE", "0X0"):
            unique = ""
        dcus.append(
            HyDcu(
                index=index,
                series=series.split()[-1] if series.lower().startswith("hygon") else series.replace(" ", "_"),
                bus_id=bus,
                unique_id=f"DCU-{unique}" if unique and not unique.upper().startswith("DCU-") else unique,
                memory_mib=memory_mib,
                driver_version=version,
            )
        )
    return dcus


def _vram_total_mib(fields: Mapping[str, str]) -> int | None:
    for key, value in fields.items():
        if not key.startswith("vram total memory") or "used" in key:
            continue
        digits = value.split()[0] if value.split() else ""
        if not digits.isdigit():
            return None
        number = int(digits)
        if "(b)" in key:
            return number // MIB
        if "(kib)" in key or "(kb)" in key:
            return number // 1024
        return number  # (MiB), the current hy-smi
    return None


def drm_nodes(sysfs_root: str, bus_id: str, index: int) -> tuple[str, str]:
    """``(cardN, renderDM)`` of the DCU at ``bus_id`` from sysfs; ``(card<index>, renderD<128+index>)``
    when sysfs does not tell (the kernel's numbering on a node with only DCUs as DRM devices)."""
    if bus_id:
        drm = os.path.join(sysfs_root, "bus", "pci", "devices", bus_id.lower(), "drm")
        try:
            entries = os.listdir(drm)
        except OSError:
            entries = []
        card = sorted(e for e in entries if re.fullmatch(r"card\d+", e))
        render = sorted(e for e in entries if re.fullmatch(r"renderD\d+", e))
        if card and render:
            return card[0], render[0]
    return f"card{index}", f"renderD{128 + index}"


def kfd_compute_units(sysfs_root: str) -> dict[str, int]:
    """CU count per PCI bus id (lower case) from the KFD topology nodes (``simd_count / simd_per_cu``)."""
    out: dict[str, int] = {}
    for path in glob.glob(os.path.join(sysfs_root, "class", "kfd", "kfd", "topology", "nodes", "*", "properties")):
        props: dict[str, int] = {}
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[1].isdigit():
                        props[parts[0]] = int(parts[1])
        except OSError:
            continue
        simds, per_cu = props.get("simd_count", 0), props.get("simd_per_cu", 0)
        if simds <= 0 or per_cu <= 0 or "location_id" not in props:
            continue
        location = props["location_id"]
        bus = f"{props.get('domain', 0):04x}:{location >> 8 & 0xFF:02x}:{location >> 3 & 0x1F:02x}.{location & 0x7:x}"
        out[bus] = simds // per_cu
    return out


VENDOR = Hygon.from_env()
"""The registry's instance, configured from the process environment (see :meth:`Hygon.from_env`)."""
