"""The process runtime's CDI handling: resolution by qualified ID, LD_PRELOAD, path mapping."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from e2e.kubelet.cdi import (
    CDIError,
    Edits,
    load_specs,
    map_value,
    namespace_argv,
    namespace_prefix,
    resolve,
    to_process,
)


def write_spec(cdi_dir: Path, lib_dir: Path) -> None:
    (lib_dir / "claims" / "u1").mkdir(parents=True)
    (lib_dir / "libvgpu.so").write_bytes(b"\x7fELF")
    (lib_dir / "ld.so.preload").write_text("/usr/local/tessera/libvgpu.so\n")
    spec = {
        "cdiVersion": "0.6.0",
        "kind": "k8s.nvidia.tessera.dev/claim",
        "containerEdits": {"env": ["FROM_SPEC=1"]},
        "devices": [
            {
                "name": "u1-gpu-0",
                "containerEdits": {
                    "env": [
                        "CUDA_DEVICE_MEMORY_LIMIT_0=1024m",
                        "CUDA_DEVICE_MEMORY_SHARED_CACHE=/usr/local/tessera/claims/u1/c.cache",
                    ],
                    "deviceNodes": [{"path": "/dev/nvidia0"}],
                    "mounts": [
                        {"hostPath": str(lib_dir / "libvgpu.so"), "containerPath": "/usr/local/tessera/libvgpu.so"},
                        {"hostPath": str(lib_dir / "ld.so.preload"), "containerPath": "/etc/ld.so.preload"},
                        {"hostPath": str(lib_dir / "claims" / "u1"), "containerPath": "/usr/local/tessera/claims/u1"},
                    ],
                },
            },
            {"name": "u1-gpu-1", "containerEdits": {"env": ["CUDA_DEVICE_MEMORY_LIMIT_0=2048m"]}},
        ],
    }
    (cdi_dir / "k8s.nvidia.tessera.dev-claim_u1.json").write_text(json.dumps(spec))


def test_edits_become_a_process(tmp_path: Path) -> None:
    cdi_dir, lib_dir = tmp_path / "cdi", tmp_path / "lib"
    cdi_dir.mkdir()
    lib_dir.mkdir()
    write_spec(cdi_dir, lib_dir)
    edits = resolve(["k8s.nvidia.tessera.dev/claim=u1-gpu-0"], load_specs(str(cdi_dir)))
    spec = to_process(edits, {"PATH": "/bin", "CUDA_DEVICE_MEMORY_LIMIT_0": "user"}, ["sh", "-c", "true"])
    assert spec.env["FROM_SPEC"] == "1"
    assert spec.env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1024m"  # CDI wins over the container's own env
    assert spec.env["LD_PRELOAD"] == str(lib_dir / "libvgpu.so")  # the preload file's path, mapped to the host
    assert spec.env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] == str(lib_dir / "claims" / "u1" / "c.cache")
    assert any("/dev/nvidia0" in note for note in spec.notes)
    # later devices' values win, as the runtime merges edits in order
    both = resolve(
        ["k8s.nvidia.tessera.dev/claim=u1-gpu-0", "k8s.nvidia.tessera.dev/claim=u1-gpu-1"], load_specs(str(cdi_dir))
    )
    assert to_process(both, {}, ["true"]).env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "2048m"


def test_unresolvable_ids_and_missing_preload(tmp_path: Path) -> None:
    cdi_dir, lib_dir = tmp_path / "cdi", tmp_path / "lib"
    cdi_dir.mkdir()
    lib_dir.mkdir()
    write_spec(cdi_dir, lib_dir)
    with pytest.raises(CDIError, match="unresolvable CDI devices"):
        resolve(["k8s.nvidia.tessera.dev/claim=nope"], load_specs(str(cdi_dir)))
    with pytest.raises(CDIError, match="fully qualified"):
        resolve(["u1-gpu-0"], load_specs(str(cdi_dir)))
    (lib_dir / "libvgpu.so").unlink()
    edits = resolve(["k8s.nvidia.tessera.dev/claim=u1-gpu-0"], load_specs(str(cdi_dir)))
    with pytest.raises(CDIError, match="does not exist"):
        to_process(edits, {}, ["true"])


def test_path_mapping_in_lists() -> None:
    mounts = [("/c/a", "/h/a"), ("/c", "/h/c")]
    assert map_value("/c/a/x:/c/y:/other", mounts) == "/h/a/x:/h/c/y:/other"
    assert map_value("/cx", mounts) == "/cx"
    assert map_value("plain", mounts) == "plain"


def test_mounts_are_made_real_in_a_mount_namespace(tmp_path: Path) -> None:
    """Where the harness can have a private mount namespace, a container's mounts are bind mounts at
    their container paths: read-only ones cannot be written, the host directories they come from are
    read-only, a file mounted by itself cannot be removed, and a read-write one can be written."""
    if namespace_prefix() is None:
        pytest.skip("no mount namespace here (neither root nor unprivileged user namespaces)")
    lib = tmp_path / "lib"
    (lib / "claims" / "u").mkdir(parents=True)
    (lib / "node").mkdir()
    for name in ("libvgpu.so", "claims/u/g.limits", "claims/u/g.cache", "node/u.g.rec", "node/u.g.meta"):
        (lib / name).write_text("x")
    mounts = [
        {"hostPath": str(lib / "libvgpu.so"), "containerPath": str(lib / "libvgpu.so"), "options": ["ro", "bind"]},
        {"hostPath": str(lib / "claims/u/g.limits"), "containerPath": "/run/tessera/limits", "options": ["ro"]},
        {"hostPath": str(lib / "claims/u/g.cache"), "containerPath": str(lib / "claims/u/g.cache"), "options": ["rw"]},
        {"hostPath": str(lib / "node"), "containerPath": str(lib / "node"), "options": ["ro"]},
        {"hostPath": str(lib / "node/u.g.rec"), "containerPath": str(lib / "node/u.g.rec"), "options": ["rw"]},
        {"hostPath": str(lib / "nowhere"), "containerPath": "/etc/vdev/docker/", "options": ["rw"]},
    ]
    spec = to_process(Edits(mounts=mounts), {"PATH": "/usr/bin:/bin"}, ["true"])
    paths = ["/run/tessera/limits", *(str(lib / n) for n in ("claims/u/g.limits", "claims/u/g.cache", "node/u.g.meta",
                                                             "node/u.g.rec", "libvgpu.so", "new"))]
    tries = (f"((echo y >>{p}) 2>/dev/null && echo W {p} || echo RO {p})" for p in paths)
    script = "cat /run/tessera/limits; " + "; ".join(tries)
    script += f"; rm -f {lib / 'claims/u/g.cache'} 2>/dev/null || echo KEPT"
    argv = namespace_argv(spec.mounts, ["sh", "-c", script])
    assert argv is not None
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("x", 1)[1].split("\n")
    writable = sorted(line[2:] for line in lines if line.startswith("W "))
    assert writable == [str(lib / "claims/u/g.cache"), str(lib / "node/u.g.rec")], out.stdout
    assert "KEPT" in out.stdout
    assert not os.path.exists("/run/tessera/limits"), "the host's /run is untouched"
    assert namespace_argv([m for m in spec.mounts if m[1] == "/etc/vdev/docker/"], ["true"]) is None, "mapped only"
