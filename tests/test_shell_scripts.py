"""Every shell script of the repository passes shellcheck (installed by `make setup` from PyPI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def scripts() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "*.sh", ".ci/run"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    return listed.stdout.split()


def test_every_shell_script_passes_shellcheck() -> None:
    # the virtual environment's bin first: `make setup` puts shellcheck there
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    shellcheck = shutil.which("shellcheck", path=search)
    assert shellcheck is not None, "shellcheck is missing: run `make setup` (it comes with the dev extras)"
    found = scripts()
    assert ".ci/run" in found and "e2e/kind/run.sh" in found
    result = subprocess.run([shellcheck, *found], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
