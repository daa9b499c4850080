"""Container edits that put a CUDA-compatible workload under ``libvgpu.so`` (NVIDIA, Iluvatar CoreX).

One place says how a set of shares becomes the isolation env (``isolation/env.py``) and the mounts
of the isolation contract (isolation/README.md): the library and ``/etc/ld.so.preload`` read-only,
the claim directory (the container's shared region) and the node directory (task priority across
containers) read-write.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from isolation import env as isolation_env

from .base import Mount, NodeLayout, Share, SharingConfig

NODE_DIR_NAME = "node"
PRELOAD_TARGET = "/etc/ld.so.preload"


def env_and_mounts(
    ordered: Sequence[Share], config: SharingConfig, layout: NodeLayout
) -> tuple[dict[str, str], tuple[Mount, ...]]:
    """The isolation env and mounts for ``ordered`` shares (sorted by device index) of one request."""
    request = ordered[0].request.replace("/", "-")
    lib = os.path.join(layout.host_lib_dir, isolation_env.LIBRARY_NAME)
    preload = os.path.join(layout.host_lib_dir, isolation_env.PRELOAD_FILE)
    node_dir = os.path.join(layout.host_lib_dir, NODE_DIR_NAME)
    env = isolation_env.container_env(
        [
            isolation_env.DeviceLimit(
                uuid=s.device.uuid, index=s.device.index, memory_bytes=s.memory_bytes, sm_percent=s.cores
            )
            for s in ordered
        ],
        shared_cache=os.path.join(layout.claim_dir, f"{request}.cache"),
        node_dir=node_dir,
        priority=config.priority,
        core_policy=config.core_limit_policy,
        oversubscribe=config.oversubscribe,
    )
    mounts = (
        Mount(lib, lib, read_only=True),
        Mount(preload, PRELOAD_TARGET, read_only=True),
        Mount(layout.claim_dir, layout.claim_dir, read_only=False),
        Mount(node_dir, node_dir, read_only=False),
    )
    return env, mounts
