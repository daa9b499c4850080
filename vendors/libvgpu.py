"""Container edits that put a CUDA-compatible workload under ``libvgpu.so`` (NVIDIA, Iluvatar CoreX).

One place says how a set of shares becomes what libvgpu enforces. Per request (one container):

* the **limits file** (``claims/<uid>/<request>.limits``, :mod:`isolation.limits`), written by the
  driver and mounted read-only at the fixed path libvgpu trusts (``/run/tessera/limits``): the
  limits come from there, never from the container's env;
* the **usage region** (``claims/<uid>/<request>.cache``), created empty by the driver and
  bind-mounted read-write *by itself* at its host path: the container cannot unlink or replace it,
  and the claim directory itself is not mounted;
* the **node directory** (``node/``) read-only, with the container's own **record**
  (``node/<uid>.<request>.rec``) bind-mounted read-write on top, and its **meta** file
  (``node/<uid>.<request>.meta``: priority and devices) for the other containers to read;
* the library and ``/etc/ld.so.preload`` read-only.

The isolation env (HAMi-core's names, :mod:`isolation.env`) is still written: it documents the
limits for the workload and is what libvgpu reads when run by hand, but inside the container the
limits file wins. ``TESSERA_LIMITS_FILE`` names the file's container path, which a runtime without
mount namespaces (the local harness) maps to the host file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from isolation import env as isolation_env
from isolation import limits as isolation_limits

from .base import ContainerEdits, Mount, NodeLayout, Share, SharingConfig

PRELOAD_TARGET = "/etc/ld.so.preload"


def record_name(claim_dir: str, request: str) -> str:
    """The container's record name in the node directory: ``<claim uid>.<request>`` (a request name has
    no dots, so the claim's files are the ones starting with ``<claim uid>.``)."""
    return f"{os.path.basename(os.path.normpath(claim_dir))}.{request}"


def container_edits(ordered: Sequence[Share], config: SharingConfig, layout: NodeLayout) -> ContainerEdits:
    """The edits for ``ordered`` shares (sorted by device index) of one request."""
    request = ordered[0].request.replace("/", "-")
    lib = os.path.join(layout.host_lib_dir, isolation_env.LIBRARY_NAME)
    preload = os.path.join(layout.host_lib_dir, isolation_env.PRELOAD_FILE)
    region = os.path.join(layout.claim_dir, f"{request}.cache")
    limits_path = os.path.join(layout.claim_dir, f"{request}.limits")
    name = record_name(layout.claim_dir, request)
    meta = os.path.join(layout.node_dir, f"{name}.meta")
    record = os.path.join(layout.node_dir, f"{name}.rec")
    limits = isolation_limits.Limits(
        region=region,
        devices=tuple(
            isolation_limits.DeviceLimits(
                uuid=s.device.uuid,
                memory_bytes=s.memory_bytes or 0,
                sm_percent=s.cores if s.cores is not None and 0 < s.cores < 100 else 0,
            )
            for s in ordered
        ),
        priority=1 if config.priority is None else config.priority,
        core_policy=config.core_limit_policy,
        oversubscribe=config.oversubscribe,
        node_dir=layout.node_dir,
        node_record=name,
    )
    env = isolation_env.container_env(
        [
            isolation_env.DeviceLimit(
                uuid=s.device.uuid, index=s.device.index, memory_bytes=s.memory_bytes, sm_percent=s.cores
            )
            for s in ordered
        ],
        shared_cache=region,
        priority=config.priority,
        core_policy=config.core_limit_policy,
        oversubscribe=config.oversubscribe,
    )
    env[isolation_env.LIMITS_FILE] = isolation_limits.CONTAINER_PATH
    mounts = (
        Mount(lib, lib, read_only=True),
        Mount(preload, PRELOAD_TARGET, read_only=True),
        Mount(limits_path, isolation_limits.CONTAINER_PATH, read_only=True),
        Mount(region, region, read_only=False),
        Mount(layout.node_dir, layout.node_dir, read_only=True),
        Mount(record, record, read_only=False),
    )
    return ContainerEdits(
        env=env,
        mounts=mounts,
        files={limits_path: limits.render(), meta: limits.render_meta()},
        writable_files=(region, record),
    )
