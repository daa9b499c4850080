"""CDI for a process runtime: find devices by their fully qualified IDs, merge their edits, and turn
the edits into what a local process can use (pure, apart from reading the spec directory).

A CDI ID is ``<vendor>/<class>=<name>``; the spec whose ``kind`` is ``<vendor>/<class>`` in the CDI
directory (``*.json`` or ``*.yaml``) holds the device. Edits of the spec and of each device are
merged in order (env appended, later values win; mounts and device nodes appended).

A local process shares the host's filesystem, so: the ``/etc/ld.so.preload`` mount becomes
``LD_PRELOAD`` listing the libraries named in the mounted host file (each mapped to its host path);
every other mount maps its container path to its host path in env values and arguments; device
nodes are recorded, and a host that lacks them (no GPU) is reported, not failed. Where the harness
may have a private mount namespace (root, or unprivileged user namespaces), :func:`namespace_argv`
also makes the mounts real: bind mounts at their container paths, read-only where the spec says so,
and the host directories they come from read-only (a container sees nothing else of them).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

Obj = dict[str, Any]
PRELOAD_PATH = "/etc/ld.so.preload"


class CDIError(Exception):
    """A CDI device that cannot be resolved (the runtime's CreateContainerError)."""


@dataclass
class Edits:
    env: list[str] = field(default_factory=list)
    mounts: list[Obj] = field(default_factory=list)
    device_nodes: list[Obj] = field(default_factory=list)
    hooks: list[Obj] = field(default_factory=list)

    def merge(self, edits: Mapping[str, Any] | None) -> None:
        if not edits:
            return
        self.env.extend(str(e) for e in edits.get("env") or [])
        self.mounts.extend(dict(m) for m in edits.get("mounts") or [])
        self.device_nodes.extend(dict(d) for d in edits.get("deviceNodes") or [])
        self.hooks.extend(dict(h) for h in edits.get("hooks") or [])


def load_specs(cdi_dir: str) -> list[Obj]:
    specs: list[Obj] = []
    if not os.path.isdir(cdi_dir):
        return specs
    for entry in sorted(os.listdir(cdi_dir)):
        path = os.path.join(cdi_dir, entry)
        if not entry.endswith((".json", ".yaml", ".yml")) or entry.startswith("."):
            continue
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        try:
            spec = json.loads(text) if entry.endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CDIError(f"CDI spec {path} does not parse: {exc}") from exc
        if isinstance(spec, dict):
            spec["_path"] = path
            specs.append(spec)
    return specs


def resolve(ids: Iterable[str], specs: Sequence[Mapping[str, Any]]) -> Edits:
    """The merged edits for ``ids`` (in order); :class:`CDIError` names the first that is missing."""
    edits = Edits()
    used_specs: set[str] = set()
    for cdi_id in ids:
        kind, sep, name = cdi_id.partition("=")
        if not sep or "/" not in kind:
            raise CDIError(f"{cdi_id!r} is not a fully qualified CDI device name (vendor/class=name)")
        found = None
        for spec in specs:
            if spec.get("kind") != kind:
                continue
            device = next((d for d in spec.get("devices") or [] if d.get("name") == name), None)
            if device is not None:
                found = (spec, device)
                break
        if found is None:
            raise CDIError(f"unresolvable CDI devices {cdi_id}")
        spec, device = found
        path = str(spec.get("_path"))
        if path not in used_specs:
            used_specs.add(path)
            edits.merge(spec.get("containerEdits"))
        edits.merge(device.get("containerEdits"))
    return edits


@dataclass
class ProcessSpec:
    env: dict[str, str]
    argv: list[str]
    notes: list[str]
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    """(host path, container path, read-only) of the spec's mounts other than the preload file."""


def _map_path(value: str, mounts: Sequence[tuple[str, str]]) -> str:
    for container_path, host_path in mounts:
        base = container_path.rstrip("/")
        if value == container_path or (base and value == base):
            return host_path if value == container_path else host_path.rstrip("/") or "/"
        if value.startswith(base + "/"):
            return host_path.rstrip("/") + value[len(base) :]
    return value


def map_value(value: str, mounts: Sequence[tuple[str, str]]) -> str:
    """Map container paths inside an env value or argument (also in ``:``/``,`` lists) to host paths."""
    for sep in (":", ","):
        if sep in value and all(part.startswith("/") for part in value.split(sep) if part):
            return sep.join(_map_path(part, mounts) for part in value.split(sep))
    return _map_path(value, mounts)


def to_process(edits: Edits, base_env: Mapping[str, str], argv: Sequence[str]) -> ProcessSpec:
    """Apply the edits to a process: env (CDI values override), LD_PRELOAD, path mapping."""
    notes: list[str] = []
    mounts = sorted(
        (
            (str(m["containerPath"]), str(m["hostPath"]))
            for m in edits.mounts
            if m.get("containerPath") != PRELOAD_PATH and m.get("hostPath")
        ),
        key=lambda pair: -len(pair[0]),
    )
    env = dict(base_env)
    for entry in edits.env:
        key, _, value = entry.partition("=")
        env[key] = map_value(value, mounts)
    preload = []
    for m in edits.mounts:
        if m.get("containerPath") != PRELOAD_PATH:
            continue
        host_file = str(m.get("hostPath"))
        try:
            with open(host_file, encoding="utf-8") as fh:
                listed = fh.read().split()
        except OSError as exc:
            raise CDIError(f"the {PRELOAD_PATH} mount's host file {host_file} cannot be read: {exc}") from exc
        for lib in listed:
            host_lib = _map_path(lib, mounts)
            if not os.path.exists(host_lib):
                raise CDIError(f"{PRELOAD_PATH} names {lib} (host {host_lib}), which does not exist")
            preload.append(host_lib)
    if preload:
        existing = env.get("LD_PRELOAD")
        env["LD_PRELOAD"] = " ".join([*preload, *([existing] if existing else [])])
    for node in edits.device_nodes:
        path = str(node.get("hostPath") or node.get("path"))
        if not os.path.exists(path):
            notes.append(f"device node {path} is absent on this host (simulated devices)")
    for hook in edits.hooks:
        notes.append(f"hook {hook.get('hookName')} {hook.get('path')} not run by the process runtime")
    real = [
        (str(m["hostPath"]), str(m["containerPath"]), "ro" in (m.get("options") or []))
        for m in edits.mounts
        if m.get("containerPath") != PRELOAD_PATH and m.get("hostPath")
    ]
    return ProcessSpec(env, [map_value(a, mounts) if a.startswith("/") else a for a in argv], notes, real)


def spec_env(spec_path: str, base_env: Mapping[str, str]) -> dict[str, str]:
    """The env of a process given the first device of the CDI spec at ``spec_path``, run without a
    mount namespace: ``base_env`` with the spec's env over it, container paths in values mapped to
    the mounts' host paths (the limits file's name among them). The preload is left to the caller."""
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    edits = Edits()
    edits.merge(spec["devices"][0].get("containerEdits"))
    edits.mounts = [m for m in edits.mounts if m.get("containerPath") != PRELOAD_PATH]
    return to_process(edits, base_env, []).env


# A tmpfs is mounted here in the namespace for mounts whose container path lies under it (libvgpu's
# limits file): the one place a container path that does not exist on the host can be made.
RUN_DIR = "/run/tessera"


@functools.cache
def namespace_prefix() -> tuple[str, ...] | None:
    """The command prefix that runs a process in a private mount namespace here, as root or in an
    unprivileged user namespace; None where neither is allowed (then mounts are only mapped)."""
    if not shutil.which("unshare"):
        return None
    for prefix in (
        ("unshare", "--mount", "--propagation", "private"),
        ("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"),
    ):
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
            return prefix
    return None


def namespace_argv(mounts: Sequence[tuple[str, str, bool]], argv: Sequence[str]) -> list[str] | None:
    """``argv`` run with ``mounts`` (host path, container path, read-only) made real in a private mount
    namespace, as a container runtime would: first the host directories the mounted files come from,
    read-only (a container sees none of them), then each mount in path-depth order (as CDI sorts
    them), read-only or read-write as it says. Mounts at container paths that exist neither on the
    host nor under :data:`RUN_DIR` stay mapped only. None when there is nothing to mount or no
    namespace to be had. The command is exec'd: its PID is the process's."""
    prefix = namespace_prefix()
    usable = [
        (h, c, ro)
        for h, c, ro in mounts
        if os.path.exists(h) and (c == h or c.startswith(RUN_DIR + "/")) and ":" not in h + c
    ]
    if prefix is None or not usable:
        return None
    steps = ["set -e"]
    if any(c.startswith(RUN_DIR + "/") for _, c, _ in usable):
        steps += [
            # an empty directory on the host to mount on; without the right to make one, /run itself
            f"if [ ! -d {RUN_DIR} ] && ! mkdir {RUN_DIR} 2>/dev/null; then"
            f" mount -t tmpfs -o size=64k,mode=755 tessera-run /run; mkdir {RUN_DIR}; fi",
            f"mount -t tmpfs -o size=1m,mode=755 tessera {RUN_DIR}",
        ]
        for h, c, _ in usable:
            if c.startswith(RUN_DIR + "/"):
                q = shlex.quote(c)
                steps.append(f"mkdir -p {q}" if os.path.isdir(h) else f"mkdir -p $(dirname {q}); : >{q}")
    parents = {os.path.dirname(h) for h, _, _ in usable if os.path.isfile(h)}
    binds = sorted(
        [(0, p, p, True) for p in parents] + [(1, h, c, ro) for h, c, ro in usable],
        key=lambda m: (m[2].rstrip("/").count("/"), m[0]),
    )
    for _, h, c, ro in binds:
        # a bind takes the read-only flag of the mount its source is seen through: set it each time
        steps.append(f"mount --bind {shlex.quote(h)} {shlex.quote(c)}")
        steps.append(f"mount -o remount,bind,{'ro' if ro else 'rw'} {shlex.quote(c)}")
    steps.append('exec "$@"')
    return [*prefix, "sh", "-c", "\n".join(steps), "sh", *argv]
