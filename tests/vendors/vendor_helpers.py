"""Plain helpers for the vendor tests (importable: this directory is on sys.path under pytest)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Answer:
    """What a fake tool does for one argument string: print a fixture (or text), exit, sleep."""

    fixture: str | None = None
    text: str = ""
    exit_code: int = 0
    stderr: str = ""
    sleep_s: float = 0.0


def container(limits: Mapping[str, object], name: str = "main", **extra: object) -> dict[str, object]:
    return {"name": name, "image": "busybox", "resources": {"limits": dict(limits)}, **extra}
