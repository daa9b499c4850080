"""``python -m isolation.install``: the init step that puts libvgpu.so on the host (HAMi #727)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from isolation import install
from isolation.env import LIBRARY_NAME, PRELOAD_FILE
from tessera_common import files

REPO = Path(__file__).resolve().parents[2]

# A process that maps the installed library, reports which version it runs, then waits for a line
# on stdin and reports again: what a container's workload does across a driver restart.
LOADER = textwrap.dedent(
    """
    import ctypes, sys
    lib = ctypes.CDLL(sys.argv[1])
    print(lib.tessera_version(), flush=True)
    sys.stdin.readline()
    maps = open("/proc/self/maps").read()
    mapped = [l for l in maps.splitlines() if sys.argv[1] in l]
    print(lib.tessera_version(), "deleted" if all(l.endswith("(deleted)") for l in mapped) else "live", flush=True)
    """
)


def _build_lib(tmp: Path, version: int) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler (cc) is needed to build the test libraries"
    src_dir = tmp / f"v{version}"
    src_dir.mkdir()
    c_file = src_dir / "lib.c"
    # Padding makes the two versions differ in size too, so a torn in-place copy would be visible.
    c_file.write_text(
        f"int tessera_version(void) {{ return {version}; }}\nconst char tessera_pad[{4096 * version}] = {{1}};\n"
    )
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(src_dir / LIBRARY_NAME), str(c_file)], check=True)
    return src_dir


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isolation.install", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.fixture
def libs(tmp_path: Path) -> tuple[Path, Path]:
    return _build_lib(tmp_path, 1), _build_lib(tmp_path, 2)


def test_fresh_install_writes_library_and_preload(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "host" / "usr-local-tessera"
    result = _run("--source", str(libs[0]), "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    lib = dest / LIBRARY_NAME
    assert lib.read_bytes() == (libs[0] / LIBRARY_NAME).read_bytes()
    assert stat.S_IMODE(lib.stat().st_mode) == 0o755
    preload = dest / PRELOAD_FILE
    assert preload.read_text() == f"{lib}\n"
    assert stat.S_IMODE(preload.stat().st_mode) == 0o644
    assert '"action": "installed"' in result.stdout
    assert not [p for p in os.listdir(dest) if p.startswith(files.TEMP_PREFIX)]


def test_preload_path_names_the_library_as_containers_see_it(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "dest"
    assert _run("--source", str(libs[0]), "--dest", str(dest), "--preload-path", "/opt/x/libvgpu.so").returncode == 0
    assert (dest / PRELOAD_FILE).read_text() == "/opt/x/libvgpu.so\n"


def test_running_process_keeps_its_library_across_an_upgrade(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "dest"
    assert _run("--source", str(libs[0]), "--dest", str(dest)).returncode == 0
    lib = dest / LIBRARY_NAME
    old_bytes = lib.read_bytes()
    old_inode = lib.stat().st_ino
    # What a container's bind mount does: keep the old inode reachable.
    with open(lib, "rb") as pinned:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOADER, str(lib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "1"

            result = _run("--source", str(libs[1]), "--dest", str(dest))
            assert result.returncode == 0, result.stderr
            assert '"action": "replaced"' in result.stdout

            proc.stdin.write("\n")
            proc.stdin.flush()
            # The running process still executes version 1 from the old (now unlinked) inode.
            assert proc.stdout.readline().split() == ["1", "deleted"]
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
        pinned.seek(0)
        assert pinned.read() == old_bytes, "the old inode was modified in place"
    assert lib.stat().st_ino != old_inode
    fresh = subprocess.run([sys.executable, "-c", LOADER, str(lib)], input="\n", capture_output=True, text=True)
    assert fresh.stdout.split()[:1] == ["2"], fresh.stderr


def test_in_place_copy_would_corrupt_the_pinned_file(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    """Control: the check above detects HAMi #727's failure mode (cp over a mapped file)."""
    dest = tmp_path / "dest"
    assert _run("--source", str(libs[0]), "--dest", str(dest)).returncode == 0
    lib = dest / LIBRARY_NAME
    old_bytes = lib.read_bytes()
    with open(lib, "rb") as pinned:
        shutil.copyfile(libs[1] / LIBRARY_NAME, lib)  # what a naive installer does
        assert pinned.read() != old_bytes


def test_second_run_with_same_content_touches_nothing(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "dest"
    assert _run("--source", str(libs[0]), "--dest", str(dest)).returncode == 0
    before = {name: (dest / name).stat() for name in (LIBRARY_NAME, PRELOAD_FILE)}
    result = _run("--source", str(libs[0]), "--dest", str(dest))
    assert result.returncode == 0
    assert result.stdout.count('"action": "unchanged"') == 2
    for name, st in before.items():
        now = (dest / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_wrong_mode_is_repaired_by_rename(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "dest"
    assert _run("--source", str(libs[0]), "--dest", str(dest)).returncode == 0
    lib = dest / LIBRARY_NAME
    lib.chmod(0o600)
    inode = lib.stat().st_ino
    results = install.install(str(libs[0]), str(dest))
    assert [r.action for r in results] == ["replaced", "unchanged"]
    assert stat.S_IMODE(lib.stat().st_mode) == 0o755 and lib.stat().st_ino != inode


def test_leftovers_of_a_killed_installer_are_cleaned(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / f"{files.TEMP_PREFIX}abc123").write_bytes(b"half a library")
    (dest / LIBRARY_NAME).mkdir()  # a runtime created a directory where the file belongs
    (dest / "claims").mkdir()  # the driver's data is left alone
    assert _run("--source", str(libs[0]), "--dest", str(dest)).returncode == 0
    assert sorted(os.listdir(dest)) == sorted([LIBRARY_NAME, PRELOAD_FILE, "claims", install.LOCK_FILE])
    assert (dest / LIBRARY_NAME).is_file()


def test_non_empty_directory_in_the_way_is_refused(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "dest"
    (dest / LIBRARY_NAME).mkdir(parents=True)
    (dest / LIBRARY_NAME / "data").write_text("not ours")
    result = _run("--source", str(libs[0]), "--dest", str(dest))
    assert result.returncode == 1
    assert "non-empty directory" in result.stderr
    assert (dest / LIBRARY_NAME / "data").read_text() == "not ours"


def test_symlink_is_replaced_not_written_through(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    target = tmp_path / "elsewhere.so"
    target.write_bytes(b"\x7fELF someone else's file")
    (dest / LIBRARY_NAME).symlink_to(target)
    assert _run("--source", str(libs[0]), "--dest", str(dest)).returncode == 0
    assert not (dest / LIBRARY_NAME).is_symlink()
    assert target.read_bytes() == b"\x7fELF someone else's file"


def test_missing_or_broken_source_fails_with_a_clear_message(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run("--source", str(empty), "--dest", str(dest))
    assert result.returncode == 1 and "not found" in result.stderr and "make -C isolation" in result.stderr
    (empty / LIBRARY_NAME).write_text("not a library")
    result = _run("--source", str(empty), "--dest", str(dest))
    assert result.returncode == 1 and "not an ELF" in result.stderr
    assert not dest.exists() or not (dest / LIBRARY_NAME).exists()


def test_concurrent_installers_all_succeed(tmp_path: Path, libs: tuple[Path, Path]) -> None:
    dest = tmp_path / "dest"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "isolation.install", "--source", str(libs[i % 2]), "--dest", str(dest)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for i in range(6)
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    data = (dest / LIBRARY_NAME).read_bytes()
    assert data in ((libs[0] / LIBRARY_NAME).read_bytes(), (libs[1] / LIBRARY_NAME).read_bytes())
    assert not [p for p in os.listdir(dest) if p.startswith(files.TEMP_PREFIX)]
