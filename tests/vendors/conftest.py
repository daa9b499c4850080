"""Shared helpers for the vendor tests: recorded tool outputs and fake tools run as real processes."""

from __future__ import annotations

import shlex
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from .vendor_helpers import FIXTURES, Answer

ToolFactory = Callable[[str, Mapping[str, Answer]], str]


@pytest.fixture
def fake_tool(tmp_path: Path) -> ToolFactory:
    """Write an executable shell script named ``name`` that answers per argument string (``*`` = any)."""

    def make(name: str, answers: Mapping[str, Answer]) -> str:
        lines = ["#!/bin/sh", 'case "$*" in']
        for args, answer in answers.items():
            body: list[str] = []
            if answer.sleep_s:
                body.append(f"sleep {answer.sleep_s}")
            if answer.fixture:
                body.append(f"cat {shlex.quote(str(FIXTURES / answer.fixture))}")
            if answer.text:
                body.append(f"printf '%s' {shlex.quote(answer.text)}")
            if answer.stderr:
                body.append(f"echo {shlex.quote(answer.stderr)} >&2")
            body.append(f"exit {answer.exit_code}")
            pattern = "*" if args == "*" else shlex.quote(args)
            lines.append(f"  {pattern}) {'; '.join(body)} ;;")
        lines += ["esac", 'echo unexpected arguments: "$*" >&2', "exit 64", ""]
        path = tmp_path / name
        path.write_text("\n".join(lines), encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return str(path)

    return make


@pytest.fixture
def dev_root(tmp_path: Path) -> Callable[..., str]:
    """A fake ``/`` holding the given device node paths as plain files (existence checks only)."""

    made: list[str] = []

    def make(*paths: str) -> str:
        root = tmp_path / f"root{len(made)}"
        made.append(str(root))
        for p in paths:
            target = root / p.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        root.mkdir(exist_ok=True)
        return str(root)

    return make
