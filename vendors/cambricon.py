"""Cambricon MLUs: HAMi's ``cambricon.com/vmlu`` with sMLU memory and core shares.

Admission
    ``cambricon.com/vmlu`` (count; ``cambricon.com/mlu``, HAMi's default count name, is accepted too),
    ``cambricon.com/mlu.smlu.vmemory`` and ``cambricon.com/mlu.smlu.vcore`` (percent of the MLU's
    compute). The unit of ``vmemory`` is a setting, :class:`Cambricon` ``(vmemory_unit=...)``:

    * ``"percent"`` (default): the talk's meaning and that of Cambricon's own dynamic-sMLU plugin, whose
      memory unit defaults to 1 % of the card (``vmemory: 20`` on a 23308 MiB MLU370-X4 is a 4660 MiB
      sMLU). The ask is a :attr:`DeviceAsk.memory_percent`, converted per device model by the webhook.
    * an integer number of MiB, e.g. ``256``: HAMi's current scheduler code (``vmemory x 256 MiB``).

    The webhook takes the setting from env ``TESSERA_CAMBRICON_VMEMORY_UNIT`` (``percent`` or MiB per
    unit) through :meth:`Cambricon.from_env`, which the registry's instance uses; a caller may also pass
    ``Cambricon(vmemory_unit=256)`` explicitly. Count alone is an exclusive whole MLU (HAMi's default
    ``vcore`` is 100). An sMLU is one per container, so several MLUs in one container are whole MLUs.
    Annotations: ``cambricon.com/use-mlutype`` / ``nouse-mlutype`` (type substring),
    ``cambricon.com/use-gpuuuid`` / ``nouse-gpuuuid`` (UUID lists).

Node
    Discovery runs ``cnmon`` (its default table: card, name, firmware, Bus-Id, Memory-Usage, the driver
    version in the header; no Python binding for CNDev exists on PyPI). The table shows no UUID, so a
    stable one is derived from the node name and the PCI bus id.

    Container edits (real devices): ``/dev/cambricon_dev<N>``, ``/dev/cambricon_ctl`` and, where the
    host has it, ``/dev/cambricon_ipcm<N>``; ``CAMBRICON_VISIBLE_DEVICES``. For an sMLU share:
    ``CAMBRICON_DSMLU_PROFILE=<card>_<vcore>_<vmemory units>`` (HAMi's profile string, memory units of
    1 % of the card or of the configured MiB) and the env-share settings ``CAMBRICON_SPLIT_ENABLE=1``,
    ``CAMBRICON_SPLIT_VISIBLE_DEVICES=<card>``, ``CAMBRICON_SPLIT_MEMS=<MiB>``. What enforces what:
    Cambricon's driver enforces an sMLU's memory and compute in hardware once an sMLU *instance* exists;
    Cambricon's dynamic-sMLU device plugin creates it through CNDev at allocation time. Tessera does
    not create sMLU instances (no CNDev binding), so on a real node the limits hold only where the
    Cambricon runtime creates the instance from the profile or honours the env-share settings;
    otherwise the share is accounted by the scheduler but not enforced on the device.
"""

from __future__ import annotations

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
    header_table,
    normalise_version,
    run_tool,
    single_share_ask,
    used_total_mib,
)

NAMES = VendorNames(vendor="cambricon", device_word="mlu")

RESOURCE_PREFIX = "cambricon.com/"
COUNT_RESOURCES = ("cambricon.com/vmlu", "cambricon.com/mlu")
MEMORY_RESOURCES = ("cambricon.com/mlu.smlu.vmemory",)
CORE_RESOURCES = ("cambricon.com/mlu.smlu.vcore",)
ALL_RESOURCES = frozenset(COUNT_RESOURCES + MEMORY_RESOURCES + CORE_RESOURCES)

USE_TYPE = "cambricon.com/use-mlutype"
NOUSE_TYPE = "cambricon.com/nouse-mlutype"
USE_UUID = "cambricon.com/use-gpuuuid"
NOUSE_UUID = "cambricon.com/nouse-gpuuuid"

VMEMORY_UNIT_ENV = "TESSERA_CAMBRICON_VMEMORY_UNIT"
CNMON_ENV = "TESSERA_CNMON"
"""Driver env: the path of ``cnmon`` in the driver container."""
PERCENT = "percent"

VISIBLE_DEVICES = "CAMBRICON_VISIBLE_DEVICES"
DSMLU_PROFILE = "CAMBRICON_DSMLU_PROFILE"
SPLIT_ENABLE = "CAMBRICON_SPLIT_ENABLE"
SPLIT_VISIBLE_DEVICES = "CAMBRICON_SPLIT_VISIBLE_DEVICES"
SPLIT_MEMS = "CAMBRICON_SPLIT_MEMS"
CONTROL_NODE = "/dev/cambricon_ctl"

MOCK_MODELS: Mapping[str, MockModel] = {
    m.model: m
    for m in (
        MockModel("MLU370-X4", "MLU370-X4", 23308, "MLUarch03"),
        MockModel("MLU370-S4", "MLU370-S4", 23308, "MLUarch03"),
        MockModel("MLU370-X8", "MLU370-X8", 46616, "MLUarch03"),
        MockModel("MLU290-M5", "MLU290-M5", 32768, "MLUarch02"),
    )
}
"""Simulated cards; the MLU370-X4's 23308 MiB is what cnmon shows in the founding talk."""


def parse_vmemory_unit(value: str | int) -> MemoryUnit:
    """``"percent"`` or a positive whole number of MiB per unit (``256``, ``"256"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        mib = value
    else:
        text = str(value).strip().lower()
        if text in (PERCENT, "%"):
            return MemoryUnit(mib=None)
        if not text.isdigit():
            raise ValueError(f"Cambricon vmemory unit must be 'percent' or MiB per unit such as 256, got {value!r}")
        mib = int(text)
    if mib <= 0:
        raise ValueError(f"Cambricon vmemory unit must be at least 1 MiB, got {value!r}")
    return MemoryUnit(mib=mib)


class Cambricon:
    """Both sides of the Cambricon vendor; ``vmemory_unit`` is how ``mlu.smlu.vmemory`` is counted."""

    names = NAMES
    real_backend = "cnmon"
    mock_models = MOCK_MODELS

    def __init__(
        self,
        *,
        vmemory_unit: str | int = PERCENT,
        cnmon: str = "cnmon",
        timeout_s: float = DEFAULT_TOOL_TIMEOUT_S,
        node_name: str | None = None,
        dev_root: str = "/",
    ) -> None:
        self.memory_unit = parse_vmemory_unit(vmemory_unit)
        self.cnmon = cnmon
        self.timeout_s = timeout_s
        self.node_name = node_name
        self.dev_root = dev_root

    @classmethod
    def from_env(cls) -> Cambricon:
        """Settings from env: ``TESSERA_CAMBRICON_VMEMORY_UNIT`` (percent|MiB), ``TESSERA_CNMON``."""
        return cls(
            vmemory_unit=env_setting(VMEMORY_UNIT_ENV, PERCENT),
            cnmon=env_setting(CNMON_ENV, "cnmon"),
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
            memory_unit=self.memory_unit,
            vendor="Cambricon",
            device_label="MLU",
        )

    def selectors(self, annotations: Mapping[str, str]) -> list[str]:
        return annotation_selectors(NAMES, annotations, use_type=USE_TYPE, nouse_type=NOUSE_TYPE,
                                    use_uuid=USE_UUID, nouse_uuid=NOUSE_UUID)  # fmt: skip

    def quota_names(self) -> Sequence[QuotaNames]:
        """HAMi's names, the memory counted in the configured ``vmemory`` unit (MiB when it is a percentage:
        a percentage of each card does not add up across cards)."""
        return (QuotaNames(MEMORY_RESOURCES[0], CORE_RESOURCES[0], memory_unit_mib=self.memory_unit.mib or 1),)

    # --- node side -------------------------------------------------------------------------------

    def discover(self) -> list[DeviceInfo]:
        hint = (
            "is the Cambricon driver installed and cnmon mounted into the driver container "
            "(set TESSERA_CNMON to its path)? Use --backend mock on nodes without MLUs"
        )
        cards = parse_cnmon(run_tool([self.cnmon], timeout_s=self.timeout_s, hint=hint))
        node = self.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        devices: list[DeviceInfo] = []
        for card in cards:
            ipcm = f"/dev/cambricon_ipcm{card.index}"
            nodes = [f"/dev/cambricon_dev{card.index}", CONTROL_NODE]
            if os.path.exists(os.path.join(self.dev_root, ipcm.lstrip("/"))):
                nodes.append(ipcm)
            devices.append(
                DeviceInfo(
                    index=card.index,
                    uuid=device_uuid(node, card.bus_id),
                    product_name=card.name,
                    model=card.name,
                    memory_bytes=card.memory_mib * MIB,
                    driver_version=card.driver_version,
                    pci_bus_id=card.bus_id,
                    device_nodes=tuple(nodes),
                    extra_attributes={"firmwareVersion": card.firmware} if card.firmware else {},
                )
            )
        return devices

    def device_health(self) -> dict[str, str]:
        """``cnmon``'s Ecc-Error column per card: any error count is reported."""
        cards = parse_cnmon(run_tool([self.cnmon], timeout_s=self.timeout_s, hint="cnmon failed"))
        node = self.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        return {device_uuid(node, card.bus_id): card_problem(card) for card in cards}

    def container_edits(self, shares: Sequence[Share], config: SharingConfig, layout: NodeLayout) -> ContainerEdits:
        ordered = sorted(shares, key=lambda s: s.device.index)
        if not ordered:
            return ContainerEdits()
        nodes: dict[str, DeviceNode] = {}
        for s in ordered:
            for path in s.device.device_nodes:
                nodes.setdefault(path, DeviceNode(path=path))
        env: dict[str, str] = {VISIBLE_DEVICES: ",".join(str(s.device.index) for s in ordered)}
        partial = [
            s
            for s in ordered
            if (s.memory_bytes is not None and s.memory_bytes < s.device.memory_bytes)
            or (s.cores is not None and 0 < s.cores < 100)
        ]
        if not partial:
            env[ENFORCER_ENV] = "none"
            return ContainerEdits(env=env, device_nodes=tuple(nodes.values()))
        if len(ordered) > 1:
            raise ValueError(
                f"request {ordered[0].request}: an sMLU is one per container, got {len(ordered)} devices with "
                "a memory or core limit; the webhook refuses such pods"
            )
        share = ordered[0]
        device_mib = share.device.memory_bytes // MIB
        memory_mib = (share.memory_bytes or share.device.memory_bytes) // MIB
        env[DSMLU_PROFILE] = smlu_profile(share.device.index, share.cores, memory_mib, device_mib, self.memory_unit)
        env[SPLIT_ENABLE] = "1"
        env[SPLIT_VISIBLE_DEVICES] = str(share.device.index)
        env[SPLIT_MEMS] = str(memory_mib)
        env[ENFORCER_ENV] = "cambricon-smlu"
        return ContainerEdits(env=env, device_nodes=tuple(nodes.values()))


def smlu_profile(card: int, cores: int | None, memory_mib: int, device_mib: int, unit: MemoryUnit) -> str:
    """HAMi's ``<card>_<vcore>_<vmemory units>``: units of 1 % of the card or of ``unit.mib``, rounded down.

    Rounding down keeps the sMLU within what the scheduler accounted (``20 %`` of 23308 MiB is an
    sMLU of 20 x 233 = 4660 MiB, as in the talk). No cores asked means the whole compute (100).
    """
    step = max(1, device_mib // 100) if unit.mib is None else unit.mib
    units = max(1, memory_mib // step)
    return f"{card}_{100 if cores is None else cores}_{units}"


_UUID_NS = uuid.UUID("5d1c2f43-0a7e-4b8f-9c3d-7e6f1a2b3c4d")


def device_uuid(node_name: str, bus_id: str) -> str:
    """A stable, cluster-unique UUID for an MLU (cnmon's table shows none): node name + PCI bus id."""
    return f"MLU-{uuid.uuid5(_UUID_NS, f'{node_name}/{bus_id.lower()}')}"


# --- cnmon parser ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MluCard:
    index: int
    name: str
    firmware: str
    bus_id: str
    memory_mib: int
    driver_version: str
    ecc_errors: int | None = None
    """The Ecc-Error column (``None`` where cnmon shows ``N/A``)."""


_DRIVER_RE = re.compile(r"Driver\s+(v?[0-9][0-9A-Za-z.\-]*)")
_CARD_ROW_RE = re.compile(r"^(\d+)\s+(\S+)\s+(\S+)(?:\s+(\S+))?$")


def parse_cnmon(text: str) -> list[MluCard]:
    """Cards of ``cnmon``'s default table (Cambricon's documented two-row-per-card layout).

    Row one: ``Card  VF  Name  Firmware | Bus-Id | Util  Ecc-Error``; row two: ``Fan  Temp
    Pwr:Usage/Cap | Memory-Usage | Mode  Compute-Mode``. Raises :class:`DiscoveryError` when the output
    has no such table or a card's memory cannot be read (an sMLU container view shows ``N/A``).
    """
    table = header_table(text, "cnmon", ["Card", "VF"], "MLU", "Card  VF  Name  Firmware | Bus-Id | ...")
    driver = _DRIVER_RE.search(text)
    version = normalise_version(driver.group(1)) if driver else ""
    cards: list[MluCard] = []
    body = table[1:]
    i = 0
    while i < len(body):
        row = body[i]
        match = _CARD_ROW_RE.match(row[0]) if row else None
        if not match or len(row) < 2:
            if row and row[0].startswith(("Processes", "sMLU Info", "Card ")) and cards:
                break
            i += 1
            continue
        index, _vf, name, firmware = match.groups()
        if i + 1 >= len(body) or len(body[i + 1]) < 2:
            raise DiscoveryError(f"cnmon: card {index} has no memory row")
        memory = used_total_mib(body[i + 1][1])
        if memory is None or memory[1] <= 0:
            raise DiscoveryError(
                f"cnmon: card {index} has an unreadable Memory-Usage {body[i + 1][1]!r} "
                "(inside an sMLU container cnmon shows N/A; run discovery on the host)"
            )
        cards.append(
            MluCard(
                index=int(index),
                name=name,
                firmware=normalise_version(firmware or ""),
                bus_id=row[1],
                memory_mib=memory[1],
                driver_version=version,
                ecc_errors=_ecc_errors(row[2] if len(row) > 2 else ""),
            )
        )
        i += 2
    if not cards:
        raise DiscoveryError("cnmon: the MLU table lists no card")
    return cards


def _ecc_errors(cell: str) -> int | None:
    """The last word of the ``Util  Ecc-Error`` cell: a count, or ``None`` for ``N/A``."""
    words = cell.split()
    return int(words[-1]) if words and words[-1].isdigit() else None


def card_problem(card: MluCard) -> str:
    """What is wrong with a card by its Ecc-Error column, ``""`` when nothing. Pure."""
    if card.ecc_errors:
        return f"cnmon reports {card.ecc_errors} ECC errors on MLU {card.index} ({card.bus_id})"
    return ""


VENDOR = Cambricon.from_env()
"""The registry's instance, configured from the process environment (see :meth:`Cambricon.from_env`)."""
