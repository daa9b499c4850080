"""Huawei Ascend NPUs: HAMi's ``huawei.com/Ascend*`` resources, vNPU templates and soft split.

Admission
    ``huawei.com/<Word>`` (count), ``huawei.com/<Word>-memory`` (MiB) and ``huawei.com/<Word>-core``
    (percent, soft split only), where ``<Word>`` is a chip (``Ascend910A``, ``Ascend910B2``,
    ``Ascend910B3``, ``Ascend910B4``, ``Ascend910B4-1``, ``Ascend310P``) or a family the founding talk
    uses (``Ascend910`` = any 910, ``Ascend910B`` = any 910B). The name fixes the chip models
    (:attr:`DeviceAsk.models`). Memory on a named chip is rounded UP to the chip's vNPU templates as
    HAMi does (a request above the largest template gets the whole chip); a request larger than the
    whole chip is denied. Several NPUs in one container must be whole (vNPUs are one per container).
    Annotations: ``huawei.com/vnpu-mode: hami-core`` (soft split: only devices of nodes in that mode),
    ``hami.io/use-<Word>-uuid`` / ``hami.io/no-use-<Word>-uuid`` (UUID lists).

Node
    Discovery runs ``npu-smi info`` (no official Python binding exists on PyPI) and reads its table.
    The node runs in one vNPU mode (env ``TESSERA_ASCEND_VNPU_MODE``, published as the ``vnpuMode``
    attribute):

    ``template`` (default)
        A share is a hardware vNPU carved from a template. Its memory capacity accepts only the
        template sizes and the whole chip (``requestPolicy.validValues``), so the scheduler rounds a
        request up per chip; no ``cores`` capacity is published (the template fixes the AI cores in
        proportion to the memory on every supported chip). The container gets
        ``ASCEND_VISIBLE_DEVICES=<chip id>`` and ``ASCEND_VNPU_SPECS=<template>``: **the Ascend Docker
        Runtime** (the container's runtime class) creates the vNPU at container start and mounts its
        ``/dev/davinci<vnpu>``; we deliberately do not mount the physical ``/dev/davinci<N>``, which
        would expose the whole chip. Without that runtime no vNPU is created and nothing is limited.
        AI-CPU exhaustion (e.g. more than six 1-AI-CPU templates on a 910B2) is not accounted; the
        runtime refuses such a container at start.
    ``hami-core``
        Soft split by HAMi's ``hami-vnpu-core`` library (installed on the node under
        ``/usr/local/hami-vnpu-core``): any memory amount, and a ``cores`` capacity. The container gets
        the chip's device nodes, the driver mounts, ``/etc/ld.so.preload`` from hami-vnpu-core,
        ``NPU_MEM_QUOTA`` (MiB), ``NPU_PRIORITY`` (the cores value, as HAMi's plugin passes it), and the
        shared-region paths. Enforcement is hami-vnpu-core's, not ours.

    A whole chip needs no limit: device nodes, driver mounts, ``ASCEND_VISIBLE_DEVICES``. Simulated
    (mock) devices get the env only.
"""

from __future__ import annotations

import functools
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
    ConversionError,
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
    cel_string,
    split_list,
    uuid_selector,
)
from .common import (
    DEFAULT_TOOL_TIMEOUT_S,
    ENFORCER_ENV,
    Item,
    MemoryUnit,
    container_resources,
    env_setting,
    header_table,
    run_tool,
    share_ask,
    single,
    used_total_mib,
)

NAMES = VendorNames(vendor="ascend", device_word="npu")

RESOURCE_PREFIX = "huawei.com/"
MEMORY_SUFFIX = "-memory"
CORE_SUFFIX = "-core"

VNPU_MODE_ANNOTATION = "huawei.com/vnpu-mode"
VNPU_MODE_TEMPLATE = "template"
VNPU_MODE_HAMI_CORE = "hami-core"
VNPU_MODES = (VNPU_MODE_TEMPLATE, VNPU_MODE_HAMI_CORE)

VNPU_MODE_ENV = "TESSERA_ASCEND_VNPU_MODE"
"""Driver env: the node's vNPU mode (one of :data:`VNPU_MODES`); the chart sets it from ``vendors.ascend.vnpuMode``."""
NPU_SMI_ENV = "TESSERA_NPU_SMI"
"""Driver env: the path of ``npu-smi`` in the driver container."""

ATTR_VNPU_MODE = "vnpuMode"
ATTR_AI_CORES = "aiCores"
ATTR_TEMPLATES = "vnpuTemplates"

VISIBLE_DEVICES = "ASCEND_VISIBLE_DEVICES"
VNPU_SPECS = "ASCEND_VNPU_SPECS"
MEM_QUOTA = "NPU_MEM_QUOTA"
PRIORITY = "NPU_PRIORITY"
GLOBAL_SHM_PATH = "NPU_GLOBAL_SHM_PATH"
LOCAL_SHM_PATH = "NPU_LOCAL_SHM_PATH"

CONTROL_NODES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
DRIVER_MOUNTS = (
    "/usr/local/Ascend/driver/lib64",
    "/usr/local/Ascend/driver/version.info",
    "/usr/local/bin/npu-smi",
    "/etc/ascend_install.info",
)
HAMI_VNPU_CORE_DIR = "/usr/local/hami-vnpu-core"
HAMI_SHARED_REGION_DIR = "/usr/local/hami-shared-region"


@dataclass(frozen=True)
class Chip:
    """One Ascend chip as HAMi's device config describes it (memory in MiB)."""

    word: str
    """HAMi's CommonWord, the resource name after ``huawei.com/``."""
    model: str
    """Short model, the ``type`` attribute and npu-smi's Name column."""
    memory_mib: int
    ai_cores: int
    templates: tuple[tuple[str, int], ...]
    """vNPU templates (name, MiB), ascending."""

    def trim(self, memory_mib: int) -> tuple[int, str | None] | None:
        """Memory rounded up to a template (its name) or to the whole chip (``None``); ``None`` if too large."""
        for name, size in self.templates:
            if memory_mib <= size:
                return size, name
        if memory_mib <= self.memory_mib:
            return self.memory_mib, None
        return None

    def valid_memory_mib(self, total_mib: int) -> tuple[int, ...]:
        """The amounts a template-mode share may consume on a chip of ``total_mib``: templates, then whole."""
        return (*(size for _, size in self.templates if size < total_mib), total_mib)


CHIPS: Mapping[str, Chip] = {
    c.model: c
    for c in (
        Chip("Ascend910A", "910A", 32768, 30, (("vir02", 2184), ("vir04", 4369), ("vir08", 8738), ("vir16", 17476))),
        Chip(
            "Ascend910B2", "910B2", 65536, 24, (("vir03_1c_8g", 8192), ("vir06_1c_16g", 16384), ("vir12_3c_32g", 32768))
        ),
        Chip("Ascend910B3", "910B3", 65536, 20, (("vir05_1c_16g", 16384), ("vir10_3c_32g", 32768))),
        Chip("Ascend910B4", "910B4", 32768, 20, (("vir05_1c_8g", 8192), ("vir10_3c_16g", 16384))),
        Chip("Ascend910B4-1", "910B4-1", 65536, 20, (("vir05_1c_16g", 16384), ("vir10_3c_32g", 32768))),
        Chip("Ascend310P", "310P3", 24576, 8, (("vir01", 3072), ("vir02", 6144), ("vir04", 12288))),
    )
}
"""Chip table (HAMi chart's device config; 310P3's capacity, not its 21527 MiB allocatable)."""

FAMILIES: Mapping[str, tuple[str, ...]] = {
    "Ascend910": ("910A", "910B2", "910B3", "910B4", "910B4-1"),
    "Ascend910B": ("910B2", "910B3", "910B4", "910B4-1"),
    **{c.word: (c.model,) for c in CHIPS.values()},
}
"""Resource words and the chip models they select."""

QUOTA_NAMES = tuple(
    QuotaNames(f"{RESOURCE_PREFIX}{word}{MEMORY_SUFFIX}", f"{RESOURCE_PREFIX}{word}{CORE_SUFFIX}", 1, frozenset(models))
    for word, models in sorted(FAMILIES.items())
)
"""``huawei.com/<Word>-memory`` (MiB) and ``-core`` per chip, as HAMi names them, and per family word
(``Ascend910``, ``Ascend910B``), which covers every chip of the family."""

UNSUPPORTED = {
    "Ascend910C": "its two dies must be allocated as one module, which Tessera does not model yet",
}


@functools.lru_cache(maxsize=1024)
def _parse_word(resource: str) -> tuple[str, str] | None:
    """``huawei.com/Ascend910B3-memory`` -> (``Ascend910B3``, ``memory``); ``None`` when not Ascend."""
    if not resource.startswith(RESOURCE_PREFIX + "Ascend"):
        return None
    rest = resource[len(RESOURCE_PREFIX) :]
    if rest.endswith(MEMORY_SUFFIX):
        return rest[: -len(MEMORY_SUFFIX)], "memory"
    if rest.endswith(CORE_SUFFIX):
        return rest[: -len(CORE_SUFFIX)], "core"
    return rest, "count"


class Ascend:
    """Both sides of the Ascend vendor; ``vnpu_mode`` is the node's mode (node side only)."""

    names = NAMES
    real_backend = "npu-smi"

    def __init__(
        self,
        *,
        vnpu_mode: str = VNPU_MODE_TEMPLATE,
        npu_smi: str = "npu-smi",
        timeout_s: float = DEFAULT_TOOL_TIMEOUT_S,
        node_name: str | None = None,
    ) -> None:
        if vnpu_mode not in VNPU_MODES:
            raise ValueError(f"Ascend vNPU mode must be one of {list(VNPU_MODES)}, got {vnpu_mode!r}")
        self.vnpu_mode = vnpu_mode
        self.npu_smi = npu_smi
        self.timeout_s = timeout_s
        self.node_name = node_name
        self.mock_models: Mapping[str, MockModel] = {
            chip.model: MockModel(
                model=chip.model,
                product_name=f"Ascend {chip.model}",
                memory_mib=chip.memory_mib,
                architecture="DaVinci",
                extra_attributes=self._attributes(chip),
                memory_valid_mib=self._valid_memory(chip, chip.memory_mib),
                cores_shareable=vnpu_mode == VNPU_MODE_HAMI_CORE,
            )
            for chip in CHIPS.values()
        }

    @classmethod
    def from_env(cls) -> Ascend:
        """The node's settings: ``TESSERA_ASCEND_VNPU_MODE`` (template|hami-core), ``TESSERA_NPU_SMI``."""
        return cls(
            vnpu_mode=env_setting(VNPU_MODE_ENV, VNPU_MODE_TEMPLATE),
            npu_smi=env_setting(NPU_SMI_ENV, "npu-smi"),
        )

    # --- admission side --------------------------------------------------------------------------

    def owns_resource(self, resource_name: str) -> bool:
        return _parse_word(resource_name) is not None

    def parse(self, container: Mapping[str, Any]) -> DeviceAsk | None:
        resources = container_resources(container)
        ours = sorted(k for k in resources if self.owns_resource(k))
        if not ours:
            return None
        who = f"container {container.get('name')!r}"
        words: dict[str, dict[str, str]] = {}
        for name in ours:
            parsed = _parse_word(name)
            assert parsed is not None
            word, kind = parsed
            words.setdefault(word, {})
            if kind in words[word]:
                raise ConversionError(f"{who}: {words[word][kind]} and {name} both given; keep one")
            words[word][kind] = name
        if len(words) > 1:
            raise ConversionError(
                f"{who}: mixes Ascend resources of {', '.join(sorted(words))}; a container asks for one chip kind "
                f"(use huawei.com/Ascend910 for any 910)"
            )
        word, kinds = next(iter(words.items()))
        if word in UNSUPPORTED:
            raise ConversionError(f"{who}: huawei.com/{word} is not supported: {UNSUPPORTED[word]}")
        if word not in FAMILIES:
            raise ConversionError(
                f"{who}: unknown Ascend resource huawei.com/{word}; known: "
                f"{', '.join('huawei.com/' + w for w in sorted(FAMILIES))}"
            )
        models = FAMILIES[word]

        def item(kind: str) -> Item | None:
            return single(resources, [kinds[kind]], who, kind) if kind in kinds else None

        ask = share_ask(
            who,
            count=item("count"),
            memory=item("memory"),
            cores=item("core"),
            memory_unit=MemoryUnit(mib=1),
            models=models,
            consumed=ours,
            one_share_per_container=True,
            vendor_label="NPU",
            whole_device_cores=None,
        )
        if ask.count == 0 or ask.memory_mib is None:
            return ask
        chips = [CHIPS[m] for m in models]
        largest = max(chips, key=lambda c: c.memory_mib)
        if ask.memory_mib > largest.memory_mib:
            biggest_template = largest.templates[-1]
            raise ConversionError(
                f"{who}: {kinds['memory']}: {ask.memory_mib} MiB is more than a whole {largest.model} "
                f"({largest.memory_mib} MiB); the largest vNPU is {biggest_template[0]} ({biggest_template[1]} MiB), "
                f"or omit the memory for the whole chip"
            )
        if ask.cores is None and len(chips) == 1:
            trimmed = chips[0].trim(ask.memory_mib)
            assert trimmed is not None
            return DeviceAsk(
                count=ask.count,
                memory_mib=trimmed[0],
                models=ask.models,
                consumed_resources=ask.consumed_resources,
            )
        return ask

    def selectors(self, annotations: Mapping[str, str]) -> list[str]:
        out: list[str] = []
        mode = annotations.get(VNPU_MODE_ANNOTATION, "").strip()
        if mode:
            if mode not in VNPU_MODES:
                raise ConversionError(
                    f"annotation {VNPU_MODE_ANNOTATION} must be {VNPU_MODE_HAMI_CORE!r} (soft split) or "
                    f"{VNPU_MODE_TEMPLATE!r}, got {mode!r}"
                )
            attrs = f"device.attributes[{cel_string(NAMES.driver)}]"
            out.append(f"{attrs}.{ATTR_VNPU_MODE} == {cel_string(mode)}")
        for key in sorted(annotations):
            match = re.fullmatch(r"hami\.io/(no-)?use-(Ascend[0-9A-Za-z-]*)-uuid", key)
            if not match:
                continue
            uuids = split_list(annotations[key])
            if uuids:
                out.append(uuid_selector(NAMES, uuids, negate=bool(match.group(1))))
        return out

    def quota_names(self) -> Sequence[QuotaNames]:
        return QUOTA_NAMES

    # --- node side -------------------------------------------------------------------------------

    def _attributes(self, chip: Chip | None) -> dict[str, int | bool | str]:
        attrs: dict[str, int | bool | str] = {ATTR_VNPU_MODE: self.vnpu_mode}
        if chip is not None:
            attrs[ATTR_AI_CORES] = chip.ai_cores
            attrs[ATTR_TEMPLATES] = ",".join(name for name, _ in chip.templates)
        return attrs

    def _valid_memory(self, chip: Chip | None, total_mib: int) -> tuple[int, ...]:
        if self.vnpu_mode == VNPU_MODE_HAMI_CORE:
            return ()
        if chip is None:
            return (total_mib,)  # no known templates: whole chips only
        return chip.valid_memory_mib(total_mib)

    def discover(self) -> list[DeviceInfo]:
        hint = (
            "is the Ascend driver installed and npu-smi mounted into the driver container "
            "(set TESSERA_NPU_SMI to its path)? Use --backend mock on nodes without NPUs"
        )
        output = run_tool([self.npu_smi, "info"], timeout_s=self.timeout_s, hint=hint)
        chips = parse_npu_smi_info(output)
        node = self.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        devices: list[DeviceInfo] = []
        for c in chips:
            chip = CHIPS.get(c.name)
            devices.append(
                DeviceInfo(
                    index=c.device_id,
                    uuid=device_uuid(node, c.bus_id, c.device_id),
                    product_name=f"Ascend {c.name}",
                    model=c.name,
                    memory_bytes=c.memory_mib * MIB,
                    architecture="DaVinci",
                    driver_version=c.version,
                    pci_bus_id=c.bus_id,
                    device_nodes=(f"/dev/davinci{c.device_id}", *CONTROL_NODES),
                    extra_attributes=self._attributes(chip),
                    memory_valid_mib=self._valid_memory(chip, c.memory_mib),
                    cores_shareable=self.vnpu_mode == VNPU_MODE_HAMI_CORE,
                )
            )
        return devices

    def device_health(self) -> dict[str, str]:
        """``npu-smi info``'s Health column per chip: ``OK`` and ``Warning`` are healthy, anything else
        (``Alarm``, ``Critical``...) is reported."""
        output = run_tool([self.npu_smi, "info"], timeout_s=self.timeout_s, hint="npu-smi info failed")
        node = self.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        return {device_uuid(node, c.bus_id, c.device_id): chip_problem(c) for c in parse_npu_smi_info(output)}

    def container_edits(self, shares: Sequence[Share], config: SharingConfig, layout: NodeLayout) -> ContainerEdits:
        ordered = sorted(shares, key=lambda s: s.device.index)
        if not ordered:
            return ContainerEdits()
        real = any(s.device.device_nodes for s in ordered)
        env: dict[str, str] = {VISIBLE_DEVICES: ",".join(str(s.device.index) for s in ordered)}
        partial = [s for s in ordered if _is_partial(s)]
        if not partial:
            env[ENFORCER_ENV] = "none"
            return ContainerEdits(env=env, device_nodes=_nodes(ordered), mounts=_driver_mounts(real))
        if len(ordered) > 1:
            raise ValueError(
                f"request {ordered[0].request}: a vNPU is one per container, got {len(ordered)} devices with "
                "a memory or core limit; the webhook refuses such pods"
            )
        share = ordered[0]
        mode = str(share.device.extra_attributes.get(ATTR_VNPU_MODE, self.vnpu_mode))
        memory_mib = (share.memory_bytes or share.device.memory_bytes) // MIB
        if mode == VNPU_MODE_HAMI_CORE:
            env[ENFORCER_ENV] = "hami-vnpu-core"
            env[MEM_QUOTA] = str(memory_mib)
            if share.cores is not None:
                env[PRIORITY] = str(share.cores)
            env[GLOBAL_SHM_PATH] = f"/hami-shared-region/{share.device.index}_global_registry"
            env[LOCAL_SHM_PATH] = "/hami-vnpu-shmem/vnpu_local_shmem"
            mounts = [
                *_driver_mounts(real),
                Mount(layout.claim_dir, "/hami-vnpu-shmem", read_only=False),
            ]
            if real:
                mounts += [
                    Mount(HAMI_VNPU_CORE_DIR, "/hami-vnpu-core", read_only=True),
                    Mount(f"{HAMI_VNPU_CORE_DIR}/ld.so.preload", "/etc/ld.so.preload", read_only=True),
                    Mount(HAMI_SHARED_REGION_DIR, "/hami-shared-region", read_only=False),
                ]
            return ContainerEdits(env=env, device_nodes=_nodes(ordered), mounts=tuple(mounts))
        template = template_for(share.device, memory_mib)
        if template is None:
            env[ENFORCER_ENV] = "none"
            return ContainerEdits(env=env, device_nodes=_nodes(ordered), mounts=_driver_mounts(real))
        env[VNPU_SPECS] = template
        env[ENFORCER_ENV] = "ascend-vnpu-template"
        # The Ascend Docker Runtime creates the vNPU and mounts its device node; the physical chip's
        # node must not be mounted, or the container would see the whole chip.
        return ContainerEdits(env=env)


def _is_partial(share: Share) -> bool:
    if share.cores is not None and share.cores < 100:
        return True
    return share.memory_bytes is not None and share.memory_bytes < share.device.memory_bytes


def _nodes(shares: Sequence[Share]) -> tuple[DeviceNode, ...]:
    nodes: dict[str, DeviceNode] = {}
    for s in shares:
        for path in s.device.device_nodes:
            nodes.setdefault(path, DeviceNode(path=path))
    return tuple(nodes.values())


def _driver_mounts(real: bool) -> tuple[Mount, ...]:
    return tuple(Mount(p, p, read_only=True) for p in DRIVER_MOUNTS) if real else ()


def template_for(device: DeviceInfo, memory_mib: int) -> str | None:
    """The vNPU template whose memory is the smallest at least ``memory_mib`` on this chip; ``None`` = whole."""
    chip = CHIPS.get(device.model)
    if chip is None:
        return None
    trimmed = chip.trim(memory_mib)
    return None if trimmed is None else trimmed[1]


_UUID_NS = uuid.UUID("0b0f3f7e-6a8e-4d44-9b1e-8a2f5b1c4d21")


def device_uuid(node_name: str, bus_id: str, device_id: int) -> str:
    """A stable, cluster-unique UUID for a chip npu-smi shows no UUID for: node name + PCI bus id."""
    return f"Ascend-{uuid.uuid5(_UUID_NS, f'{node_name}/{bus_id.lower()}/{device_id}')}"


HEALTHY_STATES = ("OK", "Warning")
"""npu-smi Health values that leave a chip in service (``Warning`` is a minor alarm)."""


def chip_problem(chip: NpuChip) -> str:
    """What is wrong with a chip by its Health column, ``""`` when nothing. Pure."""
    if chip.health in HEALTHY_STATES:
        return ""
    return f"npu-smi reports NPU {chip.npu_id} chip {chip.chip_id} ({chip.bus_id}) health {chip.health!r}"


# --- npu-smi info parser ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NpuChip:
    """One chip row pair of ``npu-smi info``."""

    npu_id: int
    chip_id: int
    device_id: int
    """Logical id: ``/dev/davinci<device_id>`` and the ``ASCEND_VISIBLE_DEVICES`` value."""
    name: str
    health: str
    bus_id: str
    memory_mib: int
    version: str


_VERSION_RE = re.compile(r"Version:\s*([0-9][0-9A-Za-z.]*)")
_BUS_RE = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")


def parse_npu_smi_info(text: str) -> list[NpuChip]:
    """The chips in ``npu-smi info`` output (Huawei's documented two-row-per-chip table).

    Row one: ``NPU  Name | Health | Power(W)  Temp(C)  Hugepages-Usage(page)``; row two: ``Chip
    [Device] | Bus-Id | AICore(%)  Memory-Usage(MB)  [HBM-Usage(MB)]``. Memory is the HBM total when
    the chip has HBM (910), else the memory total (310P). Raises :class:`DiscoveryError` when the
    output has no such table or a row cannot be read.
    """
    expected = "NPU Name | Health | ..."
    table = header_table(text, "npu-smi info", ["NPU", "Name"], "NPU", expected)
    if len(table) < 2 or not table[1][0].startswith("Chip"):
        raise DiscoveryError(f"npu-smi info: no NPU table found (expected a {expected!r} header)")
    version_match = _VERSION_RE.search(text)
    version = version_match.group(1) if version_match else ""
    has_hbm = "HBM-Usage" in " ".join(table[1])
    chips: list[NpuChip] = []
    current: tuple[int, str, str] | None = None
    next_logical = 0
    for row in table[2:]:
        first = row[0].split()
        if len(row) < 3 or not first or not first[0].isdigit():
            if row and row[0].startswith(("NPU", "No running")):
                break  # the process table follows the device table
            continue
        if len(first) >= 2 and not first[1].isdigit():
            current = (int(first[0]), first[1], row[1])  # NPU id, Name, Health
            continue
        if current is None:
            raise DiscoveryError(f"npu-smi info: chip row {' | '.join(row)!r} has no NPU row before it")
        bus = row[1]
        if not _BUS_RE.match(bus):
            raise DiscoveryError(f"npu-smi info: NPU {current[0]} has an unreadable Bus-Id {bus!r}")
        usages = re.findall(r"\d+\s*/\s*\d+", row[2])
        if not usages:
            raise DiscoveryError(f"npu-smi info: NPU {current[0]} has no memory usage in {row[2]!r}")
        pick = usages[-1] if has_hbm and len(usages) > 1 else usages[0]
        used_total = used_total_mib(pick)
        assert used_total is not None
        total = used_total[1]
        if has_hbm and total == 0 and len(usages) > 1:
            used_total = used_total_mib(usages[0])
            assert used_total is not None
            total = used_total[1]
        if total <= 0:
            raise DiscoveryError(f"npu-smi info: NPU {current[0]} reports no memory ({row[2]!r})")
        device_id = int(first[1]) if len(first) >= 2 else next_logical
        next_logical = device_id + 1
        chips.append(
            NpuChip(
                npu_id=current[0],
                chip_id=int(first[0]),
                device_id=device_id,
                name=current[1],
                health=current[2],
                bus_id=bus,
                memory_mib=total,
                version=version,
            )
        )
    if not chips:
        raise DiscoveryError("npu-smi info: the NPU table lists no chip")
    return chips


VENDOR = Ascend.from_env()
"""The registry's instance, configured from the process environment (see :meth:`Ascend.from_env`)."""
