"""What a pod that holds or asks for a device share may not do (docs/webhook.md, Denials), pure.

A share is enforced inside the container (the isolation library the runtime mounts read-only and
preloads, the limits the driver writes) and from the node (the driver's files, the watchdog). Each
check below refuses a pod setting that would let one of its containers step around that:

* ``privileged``: sees every device node of the node, none of it limited;
* capabilities ``SYS_ADMIN`` (can unmount or cover the read-only preload and limits mounts),
  ``SYS_MODULE`` (loads kernel code) or ``ALL`` added to any container, init and ephemeral included;
* ``hostPID`` / ``hostIPC``: the node's process and IPC namespaces, where the other tenants of the
  device and the driver live;
* a ``hostPath`` volume on, under or above one of Tessera's host directories (the isolation library
  and the per-claim limits and usage files, the CDI specs, the driver's plugin and registration
  sockets): a tenant could replace what other containers load or talk to the driver as the kubelet;
* ``spec.nodeName`` (bypasses the scheduler that allocates the shares);
* isolation env (``CUDA_DEVICE_MEMORY_LIMIT*``, ...) and an ``LD_PRELOAD`` naming libvgpu.

The same checks run whatever opt-out the pod carries: an opt-out only skips conversion.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

from isolation import env as isolation_env
from vendors.base import ConversionError

ESCAPE_CAPABILITIES = frozenset({"ALL", "SYS_ADMIN", "SYS_MODULE"})
"""Capabilities (without ``CAP_``, upper case) refused in a pod that uses shares."""
LD_PRELOAD = "LD_PRELOAD"

_RUN_ALIAS = ("/var/run", "/run")
"""``/var/run`` is a symlink to ``/run`` on every current distribution: both spell the same directory."""


def canonical_host_path(path: str) -> str:
    """``path`` as the node resolves it, as far as admission can tell: normalised (``//``, ``.``,
    trailing ``/``), with ``/var/run`` written ``/run``. Other symlinks on the node cannot be seen."""
    text = "/" + posixpath.normpath("/" + path).lstrip("/")
    old, new = _RUN_ALIAS
    if text == old or text.startswith(old + "/"):
        text = new + text[len(old) :]
    return text


def overlaps(path: str, directory: str) -> bool:
    """True when mounting ``path`` exposes ``directory`` or part of it (same, inside, or above it)."""
    a, b = canonical_host_path(path), canonical_host_path(directory)
    return a == b or a == "/" or b == "/" or a.startswith(b + "/") or b.startswith(a + "/")


def holds_share(spec: Mapping[str, Any]) -> bool:
    """True when the pod references resource claims (its own or any container's): whether a claim is
    Tessera's cannot be told at admission without reading it, so every claim counts."""
    if spec.get("resourceClaims"):
        return True
    for key in ("initContainers", "containers", "ephemeralContainers"):
        items = spec.get(key)
        for container in items if isinstance(items, list) else ():
            resources = container.get("resources") if isinstance(container, Mapping) else None
            if isinstance(resources, Mapping) and resources.get("claims"):
                return True
    return False


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _escape_capabilities(container: Mapping[str, Any]) -> list[str]:
    sc = container.get("securityContext")
    caps = sc.get("capabilities") if isinstance(sc, Mapping) else None
    added = caps.get("add") if isinstance(caps, Mapping) else None
    found = []
    for cap in added if isinstance(added, list) else ():
        name = cap.upper().removeprefix("CAP_") if isinstance(cap, str) else ""
        if name in ESCAPE_CAPABILITIES:
            found.append(cap)
    return found


def check_pod(
    spec: Mapping[str, Any],
    containers: Iterable[tuple[str, Mapping[str, Any]]],
    sharing: Set[str],
    host_dirs: Sequence[str],
) -> None:
    """Refuse (:class:`ConversionError`, saying what to change) a pod that uses shares and would let a
    container get around them. ``containers``: ``(name, container)`` of every container, init and
    ephemeral included; ``sharing``: names of the containers that get shares (empty when the pod only
    references claims); ``host_dirs``: Tessera's directories on the node."""
    if sharing and spec.get("nodeName"):
        raise ConversionError(
            f"the pod sets spec.nodeName={_short(spec.get('nodeName'))}, which bypasses the scheduler that "
            f"allocates devices; remove nodeName and use a nodeSelector or node affinity instead"
        )
    for field, what in (
        ("hostPID", "the node's process namespace, where it could see and signal the processes of the other "
         "tenants of the device and of the Tessera driver"),
        ("hostIPC", "the node's IPC namespace, shared with the node's other processes"),
    ):  # fmt: skip
        if spec.get(field) is True:
            raise ConversionError(
                f"the pod sets {field}: true and uses shared devices; its containers would run in {what}: "
                f"remove {field}, or run that part in a pod of its own without devices"
            )
    volumes = spec.get("volumes")
    for volume in volumes if isinstance(volumes, list) else ():
        host_path = volume.get("hostPath") if isinstance(volume, Mapping) else None
        path = host_path.get("path") if isinstance(host_path, Mapping) else None
        if not isinstance(path, str):
            continue
        for directory in host_dirs:
            if overlaps(path, directory):
                raise ConversionError(
                    f"volume {_short(volume.get('name'))} mounts host path {_short(path)}, which is or holds "
                    f"Tessera's directory {directory} on the node (the isolation library and every container's "
                    f"limits, the CDI specs, or the driver's sockets), and the pod uses shared devices: remove "
                    f"the volume or mount a path outside Tessera's directories"
                )
    for name, container in containers:
        sc = container.get("securityContext")
        if isinstance(sc, Mapping) and sc.get("privileged") is True:
            # A privileged container sees every device node of the host, so in a pod that uses
            # shares it could reach the shared devices without the isolation library (HAMi v2.10
            # refuses these pods too).
            role = "gets a device share" if name in sharing else "is in a pod that uses shared devices"
            raise ConversionError(
                f"container {name!r} is privileged and {role}; a privileged container sees every device "
                f"of the node, so the limits cannot be enforced: drop securityContext.privileged, or run "
                f"the privileged part in a pod of its own"
            )
        caps = _escape_capabilities(container)
        if caps:
            raise ConversionError(
                f"container {name!r} adds capability {', '.join(caps)} in a pod that uses shared devices; with "
                f"it a container can unmount the isolation library or its limits (SYS_ADMIN), load kernel "
                f"code (SYS_MODULE), or both (ALL): remove it from securityContext.capabilities.add, or run "
                f"that part in a pod of its own without devices"
            )
    for name, container in containers:
        env = container.get("env")
        for item in env if isinstance(env, list) else ():
            env_name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(env_name, str):
                continue
            if isolation_env.is_isolation_env(env_name):
                raise ConversionError(
                    f"container {name!r} sets {env_name}, which only Tessera sets in a pod that uses "
                    f"shared devices (the limits come from the claim); remove it from the pod"
                )
            value = item.get("value")
            if env_name == LD_PRELOAD and isinstance(value, str) and "libvgpu" in value:
                raise ConversionError(
                    f"container {name!r} preloads {_short(value)}; Tessera injects its isolation "
                    f"library itself, remove libvgpu from LD_PRELOAD"
                )


def added_ephemeral_containers(pod: Mapping[str, Any], old: Any) -> list[str]:
    """Names of the ephemeral containers in ``pod`` that ``old`` (the pod before the update) lacks."""

    def names(obj: Any) -> list[str]:
        spec = obj.get("spec") if isinstance(obj, Mapping) else None
        items = spec.get("ephemeralContainers") if isinstance(spec, Mapping) else None
        return [
            str(c.get("name")) if isinstance(c, Mapping) else "?" for c in (items if isinstance(items, list) else ())
        ]

    before = set(names(old))
    return [n for n in names(pod) if n not in before]
