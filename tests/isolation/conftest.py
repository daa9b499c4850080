"""Build libvgpu, the fakes and the tools once per session (make is a no-op when up to date)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fakegpu import ROOT, FakeNode


@pytest.fixture(scope="session", autouse=True)
def _built() -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "isolation"), "all"], check=True, timeout=600)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FakeNode]:
    yield FakeNode(tmp_path, ["16GiB/132sm", "16GiB/16sm"])
