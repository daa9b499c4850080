"""``make -C isolation abi-check``: libvgpu's and the fake driver's CUDA/NVML declarations against the
toolkit's headers. Each kind of drift is made on purpose in a copy of ``isolation/`` (never in the
tree) and must fail the check, naming what differs; the tree itself must pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .fakegpu import ROOT

ISOLATION = ROOT / "isolation"
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"

pytestmark = pytest.mark.skipif(
    not (CUDA_INCLUDE / "cudaTypedefs.h").is_file(),
    reason=f"no CUDA toolkit headers in {CUDA_INCLUDE} (the check skips itself there too)",
)


def _nvml_include() -> str:
    found = sorted(ROOT.glob(".venv/lib/python3*/site-packages/nvidia/cu*/include/nvml.h"))
    found = [CUDA_INCLUDE / "nvml.h", *found]
    return next((str(p.parent) for p in found if p.is_file()), "")


def abi_check(tree: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(tree), "abi-check", f"B={tmp_path / 'build'}", f"NVML_INC={_nvml_include()}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def copy_with(tmp_path: Path, path: str, old: str, new: str) -> Path:
    """A copy of ``isolation/`` (sources only) with ``old`` replaced by ``new`` once in ``path``."""
    tree = tmp_path / "isolation"
    shutil.copytree(ISOLATION, tree, ignore=shutil.ignore_patterns("build", "__pycache__"))
    file = tree / path
    text = file.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    file.write_text(text.replace(old, new))
    return tree


def test_the_tree_matches_the_toolkit(tmp_path: Path) -> None:
    done = abi_check(ISOLATION, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"abi-check: \d+ CUDA layouts and constants of include/cuabi.h equal the toolkit's", done.stdout)
    assert re.search(r"the wrappers of libvgpu and the \d+ entry points of the fake driver have", done.stdout)
    if _nvml_include():
        assert "NVML layouts and constants of include/cuabi.h equal" in done.stdout


@pytest.mark.parametrize(
    ("path", "old", "new", "named"),
    [
        # a wrapper's size argument narrowed: what libvgpu exports is no longer cuMemAlloc_v2
        (
            "libvgpu/wrappers.h",
            "W CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size);",
            "W CUresult cuMemAlloc_v2(CUdeviceptr *p, unsigned int size);",
            "cuMemAlloc_v2",
        ),
        # a _ptsz variant, which cuda.h declares only in the driver's own view: the PFN_ type catches it
        (
            "libvgpu/wrappers.h",
            "W CUresult cuStreamSynchronize_ptsz(CUstream s);",
            "W CUresult cuStreamSynchronize_ptsz(CUcontext s);",
            "cuStreamSynchronize_ptsz",
        ),
        # a pointer type libvgpu calls through
        (
            "libvgpu/wrappers.h",
            "typedef CUresult (*cuDeviceGetCount_t)(int *);",
            "typedef CUresult (*cuDeviceGetCount_t)(unsigned int *);",
            "cuDeviceGetCount",
        ),
        # the fake driver's definition of an entry point
        (
            "tests/fake/fake_cuda.c",
            "EXPORT CUresult cuMemFree_v2(CUdeviceptr p)",
            "EXPORT CUresult cuMemFree_v2(void *p)",
            "cuMemFree_v2",
        ),
        # a constant of our own header
        ("include/cuabi.h", "CUDA_ERROR_NOT_PERMITTED = 800,", "CUDA_ERROR_NOT_PERMITTED = 801,", "NOT_PERMITTED"),
        # a struct layout of our own header
        (
            "include/cuabi.h",
            "typedef struct CUmemAccessDesc_st { CUmemLocation location; int flags; } CUmemAccessDesc;",
            "typedef struct CUmemAccessDesc_st { CUmemLocation location; long flags; } CUmemAccessDesc;",
            "CUmemAccessDesc",
        ),
    ],
    ids=["wrapper", "wrapper-ptsz", "called-pointer-type", "fake-driver", "constant", "layout"],
)
def test_a_signature_changed_on_purpose_fails_the_check(
    tmp_path: Path, path: str, old: str, new: str, named: str
) -> None:
    tree = copy_with(tmp_path, path, old, new)
    done = abi_check(tree, tmp_path)
    assert done.returncode != 0, f"the check passed with {new!r} in {path}:\n{done.stdout}"
    assert named in done.stderr, done.stderr[-3000:]


def test_an_nvml_wrapper_changed_on_purpose_fails_the_check(tmp_path: Path) -> None:
    if not _nvml_include():
        pytest.skip("no nvml.h in the toolkit or .venv (make setup installs nvidia-nvml-dev)")
    tree = copy_with(
        tmp_path,
        "libvgpu/wrappers.h",
        "W nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m);",
        "W nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_t *m);",
    )
    done = abi_check(tree, tmp_path)
    assert done.returncode != 0 and "nvmlDeviceGetMemoryInfo_v2" in done.stderr, done.stderr[-3000:]
