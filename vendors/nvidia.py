"""NVIDIA GPUs: HAMi's ``nvidia.com/*`` resources and Volcano's ``volcano.sh/vgpu-*``, enforced by libvgpu."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from isolation import env as isolation_env

from . import libvgpu
from .base import (
    ATTR_NUMA_NODE,
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
    annotation_selectors,
    parse_count,
)
from .common import container_resources

NAMES = VendorNames(vendor="nvidia", device_word="gpu")

# Container resources (HAMi defaults, plus the talk's `gpucore` spelling and Volcano's names).
COUNT_RESOURCES = ("nvidia.com/gpu", "volcano.sh/vgpu-number")
MEMORY_RESOURCES = ("nvidia.com/gpumem", "volcano.sh/vgpu-memory")
"""MiB per device."""
MEMORY_PERCENT_RESOURCES = ("nvidia.com/gpumem-percentage",)
CORE_RESOURCES = ("nvidia.com/gpucores", "nvidia.com/gpucore", "volcano.sh/vgpu-cores")
"""Percent of each device's SM time."""
PRIORITY_RESOURCES = ("nvidia.com/priority",)
PRIORITY_ENV = isolation_env.TASK_PRIORITY
"""The seed pods also give the priority as this container env; it moves into the opaque config."""

QUOTA_NAMES = (QuotaNames(MEMORY_RESOURCES[0], CORE_RESOURCES[0]),)
"""``limits.nvidia.com/gpumem`` (MiB) and ``limits.nvidia.com/gpucores`` (percent per GPU), HAMi's defaults."""

ALL_RESOURCES = frozenset(
    COUNT_RESOURCES + MEMORY_RESOURCES + MEMORY_PERCENT_RESOURCES + CORE_RESOURCES + PRIORITY_RESOURCES
)

# Pod annotations a user sets (HAMi).
USE_TYPE = "nvidia.com/use-gputype"
NOUSE_TYPE = "nvidia.com/nouse-gputype"
USE_UUID = "nvidia.com/use-gpuuuid"
NOUSE_UUID = "nvidia.com/nouse-gpuuuid"
NUMA_BIND = "nvidia.com/numa-bind"

# Simulated cards for the mock backend (data from public spec sheets).
MOCK_MODELS: Mapping[str, MockModel] = {
    m.model: m
    for m in (
        MockModel("H200", "NVIDIA H200", 143771, "Hopper", "9.0"),
        MockModel("H100", "NVIDIA H100 80GB HBM3", 81559, "Hopper", "9.0"),
        MockModel("A100", "NVIDIA A100-SXM4-80GB", 81920, "Ampere", "8.0"),
        MockModel("A800", "NVIDIA A800 80GB PCIe", 81920, "Ampere", "8.0"),
        MockModel("L4", "NVIDIA L4", 23034, "Ada Lovelace", "8.9"),
        MockModel("T4", "Tesla T4", 15360, "Turing", "7.5"),
        MockModel("RTX4090", "NVIDIA GeForce RTX 4090", 24564, "Ada Lovelace", "8.9"),
    )
}

_CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def _first(resources: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any] | None:
    for name in names:
        if name in resources:
            return name, resources[name]
    return None


def _env_value(container: Mapping[str, Any], name: str) -> str | None:
    for item in container.get("env") or []:
        if isinstance(item, Mapping) and item.get("name") == name:
            if "valueFrom" in item:
                raise ConversionError(
                    f"container {container.get('name')!r}: {name} must be a literal value (0 or 1), not valueFrom"
                )
            return str(item.get("value", ""))
    return None


class _Nvidia:
    names = NAMES
    real_backend = "nvml"
    mock_models = MOCK_MODELS

    # --- admission side ------------------------------------------------------------------------

    def owns_resource(self, resource_name: str) -> bool:
        return resource_name in ALL_RESOURCES

    def parse(self, container: Mapping[str, Any]) -> DeviceAsk | None:
        resources = container_resources(container)
        ours = sorted(k for k in resources if k in ALL_RESOURCES)
        env_priority = _env_value(container, PRIORITY_ENV)
        if not ours:
            return None
        who = f"container {container.get('name')!r}"

        count_item = _first(resources, COUNT_RESOURCES)
        mem_item = _first(resources, MEMORY_RESOURCES)
        pct_item = _first(resources, MEMORY_PERCENT_RESOURCES)
        core_item = _first(resources, CORE_RESOURCES)
        prio_item = _first(resources, PRIORITY_RESOURCES)

        memory = parse_count(mem_item[1], mem_item[0]) if mem_item else 0
        percent = parse_count(pct_item[1], pct_item[0]) if pct_item else 0
        cores = parse_count(core_item[1], core_item[0]) if core_item else 0
        if pct_item and percent > 100:
            raise ConversionError(f"{who}: {pct_item[0]} must be between 0 and 100, got {pct_item[1]!r}")
        if core_item and cores > 100:
            raise ConversionError(
                f"{who}: {core_item[0]} is a percentage of each GPU and must be at most 100, got {core_item[1]!r}"
            )

        if count_item:
            count = parse_count(count_item[1], count_item[0])
        elif memory or percent or cores:
            count = 1  # HAMi's defaultGPUNum
        else:
            count = 0
        if count == 0:
            extras = [k for k in ours if k not in COUNT_RESOURCES]
            if extras:
                raise ConversionError(
                    f"{who}: {', '.join(extras)} set but no GPU requested; "
                    f"set {COUNT_RESOURCES[0]} to 1 or more, or remove them"
                )
            return DeviceAsk(count=0, consumed_resources=tuple(ours))

        priority: int | None = None
        if prio_item:
            p = parse_count(prio_item[1], prio_item[0])
            if p not in (0, 1):
                raise ConversionError(f"{who}: {prio_item[0]} must be 0 (high) or 1 (low), got {prio_item[1]!r}")
            priority = p
        consumed_env: tuple[str, ...] = ()
        if env_priority is not None:
            if env_priority.strip() not in ("0", "1"):
                raise ConversionError(f"{who}: {PRIORITY_ENV} must be 0 (high) or 1 (low), got {env_priority!r}")
            env_p = int(env_priority)
            if priority is not None and env_p != priority:
                raise ConversionError(
                    f"{who}: {PRIORITY_ENV}={env_p} disagrees with {PRIORITY_RESOURCES[0]}={priority}; keep one"
                )
            priority = env_p
            consumed_env = (PRIORITY_ENV,)

        if memory:
            percent = 0  # gpumem wins over gpumem-percentage (HAMi)
        # No memory given: the whole card's memory. With no cores either, the whole card (HAMi:
        # a plain `nvidia.com/gpu: 1` is exclusive, cores 100).
        whole_memory = not (memory or percent)
        return DeviceAsk(
            count=count,
            memory_mib=memory or None,
            memory_percent=percent or None,
            cores=cores or (100 if whole_memory else None),
            priority=priority,
            consumed_resources=tuple(ours),
            consumed_env=consumed_env,
        )

    def selectors(self, annotations: Mapping[str, str]) -> list[str]:
        return annotation_selectors(NAMES, annotations, use_type=USE_TYPE, nouse_type=NOUSE_TYPE,
                                    use_uuid=USE_UUID, nouse_uuid=NOUSE_UUID)  # fmt: skip

    def match_attributes(self, annotations: Mapping[str, str]) -> list[str]:
        value = annotations.get(NUMA_BIND, "").strip().lower()
        if value in ("", "false"):
            return []
        if value == "true":
            return [ATTR_NUMA_NODE]
        raise ConversionError(f'annotation {NUMA_BIND} must be "true" or "false", got {annotations[NUMA_BIND]!r}')

    def quota_names(self) -> Sequence[QuotaNames]:
        return QUOTA_NAMES

    # --- node side -----------------------------------------------------------------------------

    def discover(self) -> list[DeviceInfo]:
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - dependency is declared
            raise DiscoveryError("nvidia-ml-py is not installed; install it or use --backend mock") from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise DiscoveryError(
                f"cannot initialise NVML ({exc}); is the NVIDIA driver installed and libnvidia-ml.so.1 "
                "visible to the driver container? Use --backend mock on nodes without GPUs"
            ) from exc
        try:
            driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
            devices: list[DeviceInfo] = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(pynvml.nvmlDeviceGetName(handle))
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                pci = pynvml.nvmlDeviceGetPciInfo(handle)
                try:
                    numa: int | None = int(pynvml.nvmlDeviceGetNumaNodeId(handle))
                except (pynvml.NVMLError, AttributeError):
                    numa = None
                dev_minor = int(pynvml.nvmlDeviceGetMinorNumber(handle))
                devices.append(
                    DeviceInfo(
                        index=index,
                        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                        product_name=name,
                        model=short_model(name),
                        memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                        architecture=_architecture(pynvml, handle),
                        compute_capability=f"{major}.{minor}",
                        driver_version=driver_version,
                        pci_bus_id=_text(pci.busId),
                        numa_node=numa,
                        device_nodes=(f"/dev/nvidia{dev_minor}", *_CONTROL_NODES),
                    )
                )
            return devices
        except pynvml.NVMLError as exc:
            raise DiscoveryError(f"NVML query failed: {exc}") from exc
        finally:
            pynvml.nvmlShutdown()

    def container_edits(self, shares: Sequence[Share], config: SharingConfig, layout: NodeLayout) -> ContainerEdits:
        ordered = sorted(shares, key=lambda s: s.device.index)
        if not ordered:
            return ContainerEdits()
        nodes: dict[str, DeviceNode] = {}
        for s in ordered:
            for path in s.device.device_nodes:
                nodes.setdefault(path, DeviceNode(path=path))
        return dataclasses.replace(libvgpu.container_edits(ordered, config, layout), device_nodes=tuple(nodes.values()))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _architecture(pynvml: Any, handle: Any) -> str:
    names = {
        2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing",
        7: "Ampere", 8: "Ada Lovelace", 9: "Hopper", 10: "Blackwell",
    }  # fmt: skip
    try:
        return names.get(int(pynvml.nvmlDeviceGetArchitecture(handle)), "")
    except Exception:  # older drivers do not answer; the attribute is informational
        return ""


def short_model(product_name: str) -> str:
    """``NVIDIA H200 141GB HBM3e`` -> ``H200``; ``Tesla T4`` -> ``T4``; ``NVIDIA GeForce RTX 4090`` -> ``RTX4090``."""
    words = [w for w in product_name.replace("-", " ").split() if w not in ("NVIDIA", "Tesla", "GeForce", "Quadro")]
    if not words:
        return product_name
    if words[0] == "RTX" and len(words) > 1:
        return "RTX" + words[1]
    return words[0]


VENDOR = _Nvidia()
