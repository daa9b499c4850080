"""The isolation env contract: limits in, environment variables out.

The names and formats are HAMi-core compatible, so a workload image that already knows HAMi-core
sees the same variables. The DRA driver writes them into the CDI spec through :func:`container_env`,
but inside a Tessera container ``libvgpu.so`` takes its limits from the driver's read-only limits
file (:mod:`isolation.limits`) and ignores these: a tenant can change its own environment. The env is
what libvgpu reads when it runs by hand, outside a container (``isolation/libvgpu/env.c``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MEMORY_LIMIT = "CUDA_DEVICE_MEMORY_LIMIT"
"""``CUDA_DEVICE_MEMORY_LIMIT_<i>=<MiB>m``; without suffix: all devices."""
SM_LIMIT = "CUDA_DEVICE_SM_LIMIT"
"""``CUDA_DEVICE_SM_LIMIT_<i>=<percent>``; 0 or unset: no limit."""
SHARED_CACHE = "CUDA_DEVICE_MEMORY_SHARED_CACHE"
"""Path of the container's shared region file."""
TASK_PRIORITY = "CUDA_TASK_PRIORITY"
"""0 high, 1 low (default)."""
CORE_POLICY = "GPU_CORE_UTILIZATION_POLICY"
"""``default`` | ``force`` | ``disable``."""
OVERSUBSCRIBE = "CUDA_OVERSUBSCRIBE"
"""``true``: allocations past physical free memory fall back to managed memory."""
DISABLE_CONTROL = "CUDA_DISABLE_CONTROL"
"""HAMi's opt-out of isolation; users may not set it (the webhook refuses it)."""
NODE_DIR = "TESSERA_NODE_DIR"
"""Formerly the node-wide region's directory; reserved (task priority now comes from the limits file)."""
LIMITS_FILE = "TESSERA_LIMITS_FILE"
"""Names the limits file where nothing is at its fixed container path (:mod:`isolation.limits`)."""
VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"

LIBRARY_NAME = "libvgpu.so"
PRELOAD_FILE = "ld.so.preload"

ISOLATION_ENV_PREFIXES: tuple[str, ...] = (MEMORY_LIMIT, SM_LIMIT)
"""Env names (and their ``_<i>`` forms) that only the system may set."""
ISOLATION_ENV_NAMES: frozenset[str] = frozenset(
    {
        MEMORY_LIMIT,
        SM_LIMIT,
        SHARED_CACHE,
        CORE_POLICY,
        OVERSUBSCRIBE,
        DISABLE_CONTROL,
        NODE_DIR,
        LIMITS_FILE,
        VISIBLE_DEVICES,
    }
)
"""``NVIDIA_VISIBLE_DEVICES`` is among them: which devices a container sees is the claim's business."""


def is_isolation_env(name: str) -> bool:
    """True for env names a user must not set in a container that gets a share."""
    if name in ISOLATION_ENV_NAMES:
        return True
    return any(name == p or name.startswith(p + "_") for p in ISOLATION_ENV_PREFIXES)


@dataclass(frozen=True)
class DeviceLimit:
    """The limit of one device visible in a container, in CUDA ordinal order."""

    uuid: str
    index: int
    """Host index of the device; the container's ordinal order follows it."""
    memory_bytes: int | None
    """``None``: no memory limit."""
    sm_percent: int | None
    """``None`` (or 100): no SM limit."""


def format_memory(memory_bytes: int) -> str:
    """Bytes as the contract's ``<MiB>m`` form, rounded down to whole MiB (at least 1)."""
    return f"{max(1, memory_bytes // (1024 * 1024))}m"


def container_env(
    limits: Sequence[DeviceLimit],
    *,
    shared_cache: str,
    priority: int | None = None,
    core_policy: str = "default",
    oversubscribe: bool = False,
) -> dict[str, str]:
    """The env of a container that gets ``limits``; ``_<i>`` follows ascending device index."""
    ordered = sorted(limits, key=lambda d: d.index)
    env: dict[str, str] = {VISIBLE_DEVICES: ",".join(d.uuid for d in ordered)}
    for i, dev in enumerate(ordered):
        if dev.memory_bytes is not None:
            env[f"{MEMORY_LIMIT}_{i}"] = format_memory(dev.memory_bytes)
        if dev.sm_percent is not None and 0 < dev.sm_percent < 100:
            env[f"{SM_LIMIT}_{i}"] = str(dev.sm_percent)
    env[SHARED_CACHE] = shared_cache
    env[TASK_PRIORITY] = str(1 if priority is None else priority)
    env[CORE_POLICY] = core_policy
    # Always set, so that a value a user slipped in (e.g. through envFrom, which admission cannot
    # see) is replaced: the runtime applies CDI env over the container's own.
    env[OVERSUBSCRIBE] = "true" if oversubscribe else "false"
    return env


def parse_memory(value: str) -> int | None:
    """Parse a limit as libvgpu does: digits with optional ``k``/``m``/``g`` suffix; ``None`` if malformed."""
    text = value.strip()
    if not text:
        return None
    factor = 1
    suffix = text[-1].lower()
    if suffix in "kmg":
        factor = {"k": 1024, "m": 1024**2, "g": 1024**3}[suffix]
        text = text[:-1]
    if not text.isdigit():
        return None
    return int(text) * factor


def limits_from_env(env: Mapping[str, str]) -> dict[int, int]:
    """Per-index memory limits in bytes as a container would read them (for tests and metrics)."""
    out: dict[int, int] = {}
    for key, value in env.items():
        if key.startswith(MEMORY_LIMIT + "_"):
            idx = key[len(MEMORY_LIMIT) + 1 :]
            parsed = parse_memory(value)
            if idx.isdigit() and parsed:
                out[int(idx)] = parsed
    return out
