"""Helpers shared by the vendor modules (NVIDIA uses the container-resource reader).

* admission: reading a container's vendor resources and turning HAMi's count/memory/cores triple into
  a :class:`~vendors.base.DeviceAsk` with the same rules and denials as NVIDIA (docs/webhook.md);
* node: running the vendor's management tool as a subprocess with a timeout, and reading the boxed
  tables those tools print (``| a | b |`` rows between ``+---+`` rules).

Pure functions except :func:`run_tool`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import ConversionError, DeviceAsk, DiscoveryError, parse_count

ENFORCER_ENV = "TESSERA_LIMIT_ENFORCER"
"""Env every non-NVIDIA share carries: which mechanism enforces its limits inside the container
(``libvgpu``, ``ascend-vnpu-template``, ``hami-vnpu-core``, ``cambricon-smlu``, ``hygon-vdev``, or
``none`` for a whole device, which needs no limit). Informational; nothing reads it to enforce."""

DEFAULT_TOOL_TIMEOUT_S = 15.0
"""How long discovery waits for a vendor tool before it gives up (the tools talk to the driver)."""


def container_resources(container: Mapping[str, Any]) -> dict[str, Any]:
    """A container's requests overlaid with its limits (limits win, as HAMi reads them)."""
    resources = container.get("resources") or {}
    merged: dict[str, Any] = {}
    for part in ("requests", "limits"):
        values = resources.get(part) if isinstance(resources, Mapping) else None
        if isinstance(values, Mapping):
            merged.update(values)
    return merged


@dataclass(frozen=True)
class Item:
    """One container resource: its name and raw value."""

    name: str
    value: Any


def single(resources: Mapping[str, Any], names: Sequence[str], who: str, what: str) -> Item | None:
    """The one resource of ``names`` the container sets, ``None`` if none; two of them is an error."""
    found = [Item(n, resources[n]) for n in names if n in resources]
    if len(found) > 1:
        raise ConversionError(f"{who}: {' and '.join(i.name for i in found)} both give the {what}; keep one of them")
    return found[0] if found else None


@dataclass(frozen=True)
class MemoryUnit:
    """How a vendor's memory resource is counted: ``mib`` MiB per unit, or a percentage of the device."""

    mib: int | None
    """MiB per unit; ``None`` means the value is a percentage of each device's memory."""

    @property
    def is_percent(self) -> bool:
        return self.mib is None

    def describe(self) -> str:
        return "percent of the device memory" if self.mib is None else f"units of {self.mib} MiB"


def share_ask(
    who: str,
    *,
    count: Item | None,
    memory: Item | None,
    cores: Item | None,
    memory_unit: MemoryUnit,
    models: tuple[str, ...] = (),
    consumed: Sequence[str],
    one_share_per_container: bool,
    vendor_label: str,
    whole_device_cores: int | None = 100,
) -> DeviceAsk:
    """HAMi's count/memory/cores triple as a :class:`DeviceAsk`, validated like NVIDIA's.

    * values must be whole non-negative numbers; cores and percentages at most 100;
    * memory or cores without a count mean one device (HAMi's default count);
    * memory or cores with a count of 0 is refused (nothing to apply them to);
    * ``one_share_per_container``: the vendor's own isolation gives a container at most one partial
      device (Ascend vNPU, Cambricon sMLU, Hygon vdev, Iluvatar vGPU); several devices must be whole;
    * no memory: the whole device's memory, and (``whole_device_cores``, 100 by default) all its
      compute unless cores were asked, so ``<count>: 1`` alone is an exclusive whole device as in HAMi.
    """
    memory_value = parse_count(memory.value, memory.name) if memory else 0
    cores_value = parse_count(cores.value, cores.name) if cores else 0
    if memory and memory_unit.is_percent and memory_value > 100:
        raise ConversionError(
            f"{who}: {memory.name} is a percentage of each {vendor_label}'s memory and must be between 0 and "
            f"100, got {memory.value!r}"
        )
    if cores and cores_value > 100:
        raise ConversionError(
            f"{who}: {cores.name} is a percentage of each {vendor_label}'s compute and must be at most 100, "
            f"got {cores.value!r}"
        )
    if count:
        number = parse_count(count.value, count.name)
    elif memory_value or cores_value:
        number = 1
    else:
        number = 0
    if number == 0:
        extras = [i.name for i in (memory, cores) if i is not None]
        if extras:
            raise ConversionError(
                f"{who}: {', '.join(extras)} set but no {vendor_label} requested; "
                f"set {count.name if count else 'the count resource'} to 1 or more, or remove them"
            )
        return DeviceAsk(count=0, models=models, consumed_resources=tuple(consumed))
    partial = bool(memory_value) or 0 < cores_value < 100
    if one_share_per_container and number > 1 and partial:
        raise ConversionError(
            f"{who}: a container gets at most one shared {vendor_label} (the vendor's isolation works on a "
            f"single device); ask for 1 with {', '.join(i.name for i in (memory, cores) if i)}, or for {number} "
            f"whole devices without them"
        )
    percent = memory_value if memory_unit.mib is None else 0
    mib = memory_value * memory_unit.mib if memory_unit.mib is not None else 0
    return DeviceAsk(
        count=number,
        memory_mib=mib or None,
        memory_percent=percent or None,
        cores=cores_value or (None if memory_value else whole_device_cores),
        models=models,
        consumed_resources=tuple(consumed),
    )


def single_share_ask(
    container: Mapping[str, Any],
    *,
    prefix: str,
    known: frozenset[str] | set[str],
    counts: Sequence[str],
    memories: Sequence[str],
    cores: Sequence[str],
    memory_unit: MemoryUnit,
    vendor: str,
    device_label: str,
) -> DeviceAsk | None:
    """The ask of a vendor whose resources are one count/memory/cores triple under ``prefix``.

    Names under ``prefix`` that are not ``known`` are refused; the rest as :func:`share_ask`, with at
    most one partial device per container (the vendor's isolation works on one device).
    """
    resources = container_resources(container)
    ours = sorted(k for k in resources if k.startswith(prefix))
    if not ours:
        return None
    who = f"container {container.get('name')!r}"
    unknown = [k for k in ours if k not in known]
    if unknown:
        raise ConversionError(f"{who}: unknown {vendor} resource {', '.join(unknown)}; use {', '.join(sorted(known))}")
    return share_ask(
        who,
        count=single(resources, counts, who, f"{device_label} count"),
        memory=single(resources, memories, who, "memory"),
        cores=single(resources, cores, who, "cores"),
        memory_unit=memory_unit,
        consumed=ours,
        one_share_per_container=True,
        vendor_label=device_label,
    )


# --- node side -------------------------------------------------------------------------------------


def run_tool(argv: Sequence[str], *, timeout_s: float, hint: str) -> str:
    """Run a vendor tool and return its stdout; :class:`DiscoveryError` saying what to check otherwise.

    ``hint`` is appended to every error (e.g. how to mount the tool into the driver container).
    """
    cmd = " ".join(argv)
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise DiscoveryError(f"{argv[0]} not found; {hint}") from None
    except PermissionError:
        raise DiscoveryError(f"{argv[0]} is not executable; {hint}") from None
    except subprocess.TimeoutExpired:
        raise DiscoveryError(f"{cmd} did not answer within {timeout_s:g} s; is the driver healthy? {hint}") from None
    stdout = proc.stdout.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", errors="replace").strip()
        lines = (stderr or stdout.strip() or "no output").splitlines()
        raise DiscoveryError(f"{cmd} exited with status {proc.returncode}: {lines[-1][:300]}; {hint}")
    if not stdout.strip():
        raise DiscoveryError(f"{cmd} printed nothing; {hint}")
    return stdout


_RULE_RE = re.compile(r"^\s*[+|][-=+|\s]*[+|]\s*$")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every ``| a | b |`` row of a boxed table, stripped; rule lines are skipped."""
    rows: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|") or _RULE_RE.match(line):
            continue
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def header_table(text: str, tool: str, first_words: Sequence[str], what: str, expected: str) -> list[list[str]]:
    """The rows of the tool's boxed table from its header row on (``rows[0]`` is the header).

    The header is the first row whose first cell starts with ``first_words``; :class:`DiscoveryError`
    when the output is empty or has no such table (``what`` names the devices, ``expected`` the header).
    """
    if not text.strip():
        raise DiscoveryError(f"{tool} printed nothing")
    rows = table_rows(text)
    words = list(first_words)
    header = next((i for i, r in enumerate(rows) if r and r[0].split()[: len(words)] == words), None)
    if header is None:
        raise DiscoveryError(f"{tool}: no {what} table found (expected a {expected!r} header)")
    return rows[header:]


_MEM_RE = re.compile(r"(\d+)\s*(MiB|MB|GiB|GB)?\s*/\s*(\d+)\s*(MiB|MB|GiB|GB)?", re.IGNORECASE)


def used_total_mib(cell: str) -> tuple[int, int] | None:
    """``"114MiB / 32768MiB"``, ``"0 MiB/ 23308 MiB"`` or ``"24082/ 65536"`` -> (used, total) in MiB."""
    match = _MEM_RE.search(cell)
    if not match:
        return None
    unit = (match.group(4) or match.group(2) or "").lower()
    factor = 1024 if unit.startswith("g") else 1
    return int(match.group(1)) * factor, int(match.group(3)) * factor


def normalise_version(text: str) -> str:
    """A version string as published: a leading ``v`` dropped (``v5.10.29`` -> ``5.10.29``)."""
    value = text.strip()
    return value[1:] if value[:1] in ("v", "V") and value[1:2].isdigit() else value


def env_setting(name: str, default: str) -> str:
    """A node-side setting from the driver's environment (the chart sets these), stripped."""
    return os.environ.get(name, default).strip() or default
