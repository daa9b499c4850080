"""Iluvatar CoreX GPUs: the talk's ``iluvatar.ai/gpu`` + ``vcuda-*`` and HAMi's per-chip names.

Admission
    Generic (the founding talk, Iluvatar's gpu-manager): ``iluvatar.ai/gpu`` (or ``iluvatar.ai/vgpu``)
    count, ``iluvatar.ai/vcuda-memory`` in units of 256 MiB, ``iluvatar.ai/vcuda-core`` in percent; any
    Iluvatar model. Per chip (HAMi's device config): ``iluvatar.ai/<CHIP>-vgpu``,
    ``iluvatar.ai/<CHIP>.vMem`` (256 MiB units), ``iluvatar.ai/<CHIP>.vCore`` (percent), which fix the
    model (``MR-V100``, ``MR-V50``, ``BI-V150``, ``BI-V100`` or any chip named that way). Same rules
    and denials as NVIDIA; as in HAMi, sharing applies to a container with one GPU only, so several
    GPUs in one container are whole GPUs. Annotations: ``hami.io/use-<CHIP>-uuid`` and
    ``hami.io/no-use-<CHIP>-uuid`` (UUID lists).

Node
    Discovery runs ``ixsmi`` (the nvidia-smi-like table: index, name, Bus-Id, Memory-Usage, driver
    version in the header) and ``ixsmi -L`` (UUIDs). No Python binding for IX-ML exists on PyPI.

    Container edits: ``/dev/iluvatar<N>`` renumbered from 0 in the container (as Iluvatar's device
    plugin does) and ``/dev/itrctl``, for real devices only; ``IX_VISIBLE_DEVICES`` (UUIDs). A share
    with a memory or core limit is enforced by Tessera's ``libvgpu.so`` through ``/etc/ld.so.preload``
    with the HAMi-core env contract (``CUDA_DEVICE_MEMORY_LIMIT_<i>``, ``CUDA_DEVICE_SM_LIMIT_<i>``, ...):
    CoreX implements the CUDA driver API, which is what the library intercepts, the way Iluvatar's
    own vcuda library hooks ``libcuda`` under gpu-manager. What is and is not verified: the env and
    mounts are tested here; the library itself is tested against the fake CUDA driver only, never on
    CoreX. CoreX reports utilisation through IX-ML (``libixml.so``), not ``libnvidia-ml.so.1``, so the
    SM limiter has no utilisation feedback on CoreX and the core limit there is unverified.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isolation import env as isolation_env

from . import libvgpu
from .base import (
    MIB,
    ContainerEdits,
    ConversionError,
    DeviceAsk,
    DeviceInfo,
    DeviceNode,
    DiscoveryError,
    MockModel,
    NodeLayout,
    QuotaNames,
    Share,
    SharingConfig,
    VendorNames,
    split_list,
    uuid_selector,
)
from .common import (
    DEFAULT_TOOL_TIMEOUT_S,
    ENFORCER_ENV,
    MemoryUnit,
    container_resources,
    env_setting,
    header_table,
    normalise_version,
    run_tool,
    share_ask,
    single,
    used_total_mib,
)

NAMES = VendorNames(vendor="iluvatar", device_word="gpu")

RESOURCE_PREFIX = "iluvatar.ai/"
COUNT_RESOURCES = ("iluvatar.ai/gpu", "iluvatar.ai/vgpu")
MEMORY_RESOURCES = ("iluvatar.ai/vcuda-memory",)
CORE_RESOURCES = ("iluvatar.ai/vcuda-core",)
MEMORY_UNIT = MemoryUnit(mib=256)
"""Each ``vcuda-memory`` / ``.vMem`` unit is 256 MiB."""

_CHIP_RE = re.compile(r"^iluvatar\.ai/([A-Za-z0-9][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*?)(-vgpu|\.vMem|\.vCore)$")
_CHIP_WORD_RE = re.compile(r"^[A-Z]{2}-V[0-9][0-9A-Za-z]*$")
_KINDS = {"-vgpu": "count", ".vMem": "memory", ".vCore": "cores"}

VISIBLE_DEVICES = "IX_VISIBLE_DEVICES"
CONTROL_NODE = "/dev/itrctl"
IXSMI_ENV = "TESSERA_IXSMI"
"""Driver env: the path of ``ixsmi`` in the driver container."""

MOCK_MODELS: Mapping[str, MockModel] = {
    m.model: m
    for m in (
        MockModel("MR-V100", "Iluvatar MR-V100", 32768, "Ivcore11"),
        MockModel("MR-V50", "Iluvatar MR-V50", 16384, "Ivcore11"),
        MockModel("BI-V100", "Iluvatar BI-V100", 32768, "Ivcore10"),
        MockModel("BI-V150", "Iluvatar BI-V150", 65536, "Ivcore11"),
    )
}
"""Simulated cards (memory as ixsmi reports it; the talk's MR-V100 shows 32768 MiB)."""

QUOTA_NAMES = (
    QuotaNames(MEMORY_RESOURCES[0], CORE_RESOURCES[0], memory_unit_mib=MEMORY_UNIT.mib or 1),
    *(
        QuotaNames(
            f"{RESOURCE_PREFIX}{chip}.vMem", f"{RESOURCE_PREFIX}{chip}.vCore", MEMORY_UNIT.mib or 1, frozenset({chip})
        )
        for chip in sorted(MOCK_MODELS)
    ),
)
"""HAMi's names: the generic ``vcuda-memory``/``vcuda-core`` for every chip, and ``<CHIP>.vMem``/``.vCore``
for the chips HAMi lists; memory in units of 256 MiB."""


@functools.lru_cache(maxsize=1024)
def _chip_resource(name: str) -> tuple[str, str] | None:
    match = _CHIP_RE.match(name)
    if not match:
        return None
    return match.group(1), _KINDS[match.group(2)]


class Iluvatar:
    """Both sides of the Iluvatar vendor."""

    names = NAMES
    real_backend = "ixsmi"
    mock_models = MOCK_MODELS

    def __init__(self, *, ixsmi: str = "ixsmi", timeout_s: float = DEFAULT_TOOL_TIMEOUT_S, dev_root: str = "/") -> None:
        self.ixsmi = ixsmi
        self.timeout_s = timeout_s
        self.dev_root = dev_root
        """Root under which discovery looks for optional device nodes (tests point it elsewhere)."""

    @classmethod
    def from_env(cls) -> Iluvatar:
        """The node's settings: ``TESSERA_IXSMI`` (path of ixsmi)."""
        return cls(ixsmi=env_setting(IXSMI_ENV, "ixsmi"))

    # --- admission side --------------------------------------------------------------------------

    def owns_resource(self, resource_name: str) -> bool:
        return resource_name.startswith(RESOURCE_PREFIX)

    def parse(self, container: Mapping[str, Any]) -> DeviceAsk | None:
        resources = container_resources(container)
        ours = sorted(k for k in resources if self.owns_resource(k))
        if not ours:
            return None
        who = f"container {container.get('name')!r}"
        generic = [k for k in ours if k in COUNT_RESOURCES + MEMORY_RESOURCES + CORE_RESOURCES]
        per_chip: dict[str, dict[str, str]] = {}
        for name in ours:
            if name in generic:
                continue
            parsed = _chip_resource(name)
            if parsed is None:
                raise ConversionError(
                    f"{who}: unknown Iluvatar resource {name}; use {', '.join(COUNT_RESOURCES + MEMORY_RESOURCES)}, "
                    f"{CORE_RESOURCES[0]} or iluvatar.ai/<CHIP>-vgpu, .vMem, .vCore"
                )
            chip, kind = parsed
            per_chip.setdefault(chip, {})[kind] = name
        if per_chip and generic:
            raise ConversionError(
                f"{who}: mixes generic Iluvatar resources ({', '.join(generic)}) with per-chip ones "
                f"({', '.join(n for kinds in per_chip.values() for n in kinds.values())}); use one form"
            )
        if len(per_chip) > 1:
            raise ConversionError(f"{who}: asks for several Iluvatar chips ({', '.join(sorted(per_chip))}); use one")
        if per_chip:
            chip, kinds = next(iter(per_chip.items()))
            count = single(resources, [kinds["count"]], who, "GPU count") if "count" in kinds else None
            memory = single(resources, [kinds["memory"]], who, "memory") if "memory" in kinds else None
            cores = single(resources, [kinds["cores"]], who, "cores") if "cores" in kinds else None
            models: tuple[str, ...] = (chip,)
        else:
            count = single(resources, COUNT_RESOURCES, who, "GPU count")
            memory = single(resources, MEMORY_RESOURCES, who, "memory")
            cores = single(resources, CORE_RESOURCES, who, "cores")
            models = ()
        return share_ask(
            who,
            count=count,
            memory=memory,
            cores=cores,
            memory_unit=MEMORY_UNIT,
            models=models,
            consumed=ours,
            one_share_per_container=True,
            vendor_label="Iluvatar GPU",
        )

    def selectors(self, annotations: Mapping[str, str]) -> list[str]:
        out: list[str] = []
        for key in sorted(annotations):
            match = re.fullmatch(r"hami\.io/(no-)?use-(.+)-uuid", key)
            if not match or not _CHIP_WORD_RE.match(match.group(2)):
                continue
            uuids = split_list(annotations[key])
            if uuids:
                out.append(uuid_selector(NAMES, uuids, negate=bool(match.group(1))))
        return out

    def quota_names(self) -> Sequence[QuotaNames]:
        return QUOTA_NAMES

    # --- node side -------------------------------------------------------------------------------

    def discover(self) -> list[DeviceInfo]:
        hint = (
            "is the Iluvatar CoreX driver installed and ixsmi mounted into the driver container "
            "(set TESSERA_IXSMI to its path)? Use --backend mock on nodes without Iluvatar GPUs"
        )
        table = parse_ixsmi(run_tool([self.ixsmi], timeout_s=self.timeout_s, hint=hint))
        uuids = parse_ixsmi_list(run_tool([self.ixsmi, "-L"], timeout_s=self.timeout_s, hint=hint))
        control = os.path.exists(os.path.join(self.dev_root, CONTROL_NODE.lstrip("/")))
        devices: list[DeviceInfo] = []
        for gpu in table:
            if gpu.index not in uuids:
                raise DiscoveryError(f"ixsmi -L lists no UUID for GPU {gpu.index}; the two outputs disagree")
            devices.append(
                DeviceInfo(
                    index=gpu.index,
                    uuid=uuids[gpu.index],
                    product_name=gpu.name,
                    model=short_model(gpu.name),
                    memory_bytes=gpu.memory_mib * MIB,
                    driver_version=gpu.driver_version,
                    pci_bus_id=gpu.bus_id,
                    device_nodes=(f"/dev/iluvatar{gpu.index}", *((CONTROL_NODE,) if control else ())),
                )
            )
        return devices

    def container_edits(self, shares: Sequence[Share], config: SharingConfig, layout: NodeLayout) -> ContainerEdits:
        ordered = sorted(shares, key=lambda s: s.device.index)
        if not ordered:
            return ContainerEdits()
        nodes: dict[str, DeviceNode] = {}
        for i, s in enumerate(ordered):
            for host in s.device.device_nodes:
                if host == CONTROL_NODE:
                    nodes.setdefault(host, DeviceNode(path=host))
                else:
                    nodes.setdefault(host, DeviceNode(path=f"/dev/iluvatar{i}", host_path=host))
        env: dict[str, str] = {VISIBLE_DEVICES: ",".join(s.device.uuid for s in ordered)}
        limited = any(
            (s.memory_bytes is not None and s.memory_bytes < s.device.memory_bytes)
            or (s.cores is not None and 0 < s.cores < 100)
            for s in ordered
        )
        if not limited:
            env[ENFORCER_ENV] = "none"
            return ContainerEdits(env=env, device_nodes=tuple(nodes.values()))
        edits = libvgpu.container_edits(ordered, config, layout)
        limits = dict(edits.env)
        limits.pop(isolation_env.VISIBLE_DEVICES, None)  # NVIDIA's; CoreX reads IX_VISIBLE_DEVICES
        env.update(limits)
        env[ENFORCER_ENV] = "libvgpu"
        return dataclasses.replace(edits, env=env, device_nodes=tuple(nodes.values()))


def short_model(product_name: str) -> str:
    """``Iluvatar MR-V100`` -> ``MR-V100``."""
    words = [w for w in product_name.split() if w.lower() not in ("iluvatar", "corex")]
    return words[0] if words else product_name


# --- ixsmi parsers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IxGpu:
    index: int
    name: str
    bus_id: str
    memory_mib: int
    driver_version: str


_DRIVER_RE = re.compile(r"Driver Version:\s*([0-9][0-9A-Za-z.\-]*)")
_GPU_ROW_RE = re.compile(r"^(\d+)\s+(\S.*)$")
_LIST_RE = re.compile(r"^GPU\s+(\d+):\s*(.*?)\s*\(UUID:\s*([^)\s]+)\s*\)\s*$")


def parse_ixsmi(text: str) -> list[IxGpu]:
    """GPUs of ``ixsmi``'s default table (two rows per GPU, as nvidia-smi prints them).

    Row one: ``GPU  Name | Bus-Id | Clock-SM  Clock-Mem``; row two: ``Fan Temp Perf Pwr:Usage/Cap |
    Memory-Usage | GPU-Util Compute M.``. Raises :class:`DiscoveryError` for output without that table.
    """
    table = header_table(text, "ixsmi", ["GPU", "Name"], "GPU", "GPU  Name | Bus-Id | ...")
    driver = _DRIVER_RE.search(text)
    version = normalise_version(driver.group(1)) if driver else ""
    gpus: list[IxGpu] = []
    body = table[1:]
    i = 0
    while i < len(body):
        row = body[i]
        match = _GPU_ROW_RE.match(row[0]) if row else None
        if not match or len(row) < 2 or row[0].split()[0] == "GPU":
            if row and row[0].startswith(("Processes", "GPU ")) and gpus:
                break
            i += 1
            continue
        if i + 1 >= len(body) or len(body[i + 1]) < 2:
            raise DiscoveryError(f"ixsmi: GPU {match.group(1)} has no memory row")
        memory = used_total_mib(body[i + 1][1])
        if memory is None or memory[1] <= 0:
            raise DiscoveryError(f"ixsmi: GPU {match.group(1)} has an unreadable Memory-Usage {body[i + 1][1]!r}")
        gpus.append(
            IxGpu(
                index=int(match.group(1)),
                name=match.group(2).strip(),
                bus_id=row[1],
                memory_mib=memory[1],
                driver_version=version,
            )
        )
        i += 2
    if not gpus:
        raise DiscoveryError("ixsmi: the GPU table lists no GPU")
    return gpus


def parse_ixsmi_list(text: str) -> dict[int, str]:
    """``ixsmi -L`` lines ``GPU 0: Iluvatar MR-V100 (UUID: GPU-...)`` -> {index: uuid}."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        match = _LIST_RE.match(line.strip())
        if match:
            out[int(match.group(1))] = match.group(3)
    if not out:
        raise DiscoveryError("ixsmi -L: no 'GPU <i>: <name> (UUID: ...)' line")
    return out


VENDOR = Iluvatar.from_env()
"""The registry's instance, configured from the process environment (see :meth:`Iluvatar.from_env`)."""
