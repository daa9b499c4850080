"""The image definitions (no Docker engine here: their structure, their build context, and their helpers)."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from . import helm

DOCKER = helm.REPO / "docker"
IMAGES = {"webhook": "webhook", "driver": "dra_driver"}


def _stages(text: str) -> list[list[str]]:
    """Instructions per build stage (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _copies(text: str) -> list[str]:
    """Build-context sources of COPY instructions (not --from copies)."""
    out = []
    for stage in _stages(text):
        for line in stage:
            parts = line.split()
            if parts[0].upper() == "COPY" and not any(p.startswith("--from=") for p in parts):
                out += [p for p in parts[1:-1] if not p.startswith("--")]
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the simple patterns used here (last match wins, ! re-includes)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path, pat + "/*"):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_non_root_runtime(image: str) -> None:
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    final = stages[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    entry = [line for line in final if line.upper().startswith("ENTRYPOINT ")]
    assert entry and f'"-m", "{IMAGES[image]}"' in entry[-1]
    assert not any(re.search(r"\b(gcc|make|pip install)\b", line) for line in final)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_context_has_what_the_image_copies(image: str) -> None:
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    patterns = [
        line.strip()
        for line in (DOCKER / f"{image}.Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in _copies(text):
        path = source.rstrip("/")
        assert (helm.REPO / path).exists(), f"{image}: COPY {source} but the repository has no {path}"
        assert not _ignored(path, patterns), f"{image}: COPY {source} is excluded by the .dockerignore"
    for heavy in (".venv", ".tools", ".git", "isolation/build"):
        assert _ignored(heavy, patterns), f"{image}: {heavy} would be sent to the builder"


def test_driver_image_builds_and_carries_libvgpu() -> None:
    stages = _stages((DOCKER / "driver.Dockerfile").read_text())
    lib_stage = [s for s in stages if any("make -C isolation" in line for line in s)]
    assert lib_stage, "libvgpu.so is built with make -C isolation"
    assert any("check-glibc" in line for line in lib_stage[0])
    assert any(line.startswith("COPY --from=libvgpu") and "libvgpu.so" in line for line in stages[-1])


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_python_stage_builds_from_the_copied_files_only(image: str, tmp_path: Path) -> None:
    """What the python-build stage does, on exactly the files it copies: the wheel has every module."""
    for source in _copies((DOCKER / f"{image}.Dockerfile").read_text()):
        if source.startswith("docker/"):
            continue
        src = helm.REPO / source.rstrip("/")
        dest = tmp_path / "ctx" / source.rstrip("/")
        if src.is_dir():
            shutil.copytree(
                src, dest, ignore=shutil.ignore_patterns("__pycache__", "build", "*.so", "*.o"), dirs_exist_ok=True
            )
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"),
         str(tmp_path / "ctx")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "w").glob("tessera-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("webhook/cli.py", "webhook/server.py", "dra_driver/cli.py", "dra_driver/__main__.py",
                   "isolation/install.py", "isolation/env.py", "vendors/nvidia.py", "kubeapi/__init__.py",
                   "tessera_common/files.py", "tessera_common/logfmt.py"):  # fmt: skip
        assert module in names, f"{module} missing from the image's wheel"


def _shared_lib(tmp_path: Path, body: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed"
    src = tmp_path / "lib.c"
    src.write_text(body)
    out = tmp_path / "lib.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out


def test_check_glibc_refuses_a_library_needing_a_newer_glibc(tmp_path: Path) -> None:
    lib = _shared_lib(tmp_path, '#include <dlfcn.h>\nvoid *f(void) { return dlsym(RTLD_NEXT, "x"); }\n')
    script = str(DOCKER / "check-glibc.sh")
    needs = subprocess.run(["objdump", "-T", str(lib)], capture_output=True, text=True, check=True).stdout
    versions = sorted({tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)", needs)})
    assert versions, "the test library references versioned glibc symbols"
    newest = ".".join(map(str, versions[-1]))
    ok = subprocess.run(["sh", script, str(lib), newest], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    if versions[-1] > (2, 17):
        old = subprocess.run(["sh", script, str(lib), "2.17"], capture_output=True, text=True)
        assert old.returncode == 1 and f"GLIBC_{newest}" in old.stderr
    older = ".".join(map(str, (versions[-1][0], versions[-1][1] - 1)))
    too_old = subprocess.run(["sh", script, str(lib), older], capture_output=True, text=True)
    assert too_old.returncode == 1
