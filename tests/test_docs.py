"""The repository stands alone and its docs are true: no reference to anything outside it, every
file the docs name exists, and every ``python -m webhook convert`` command they show runs as written
on the shipped files."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "isolation" / "README.md"]
OUTSIDE = re.compile(r"DESIGN \u00a7|\.\./sh[a]red|/work/sh[a]red|docs/development\.md")
"""References to what lies outside the repository (written so that this line does not match itself)."""


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode == 0 and listed.stdout:
        return [ROOT / line for line in listed.stdout.splitlines()]
    skip = {".git", ".venv", ".tools", "build", "node_modules", "__pycache__"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_nothing_refers_outside_the_repository() -> None:
    found = []
    for path in tracked_files():
        if path == Path(__file__) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_every_example_file_the_docs_name_exists() -> None:
    named = {m for doc in DOCS for m in re.findall(r"examples/[\w.-]+\.ya?ml", doc.read_text(encoding="utf-8"))}
    assert named, "the docs name no example file"
    missing = sorted(n for n in named if not (ROOT / n).is_file())
    assert not missing, missing


def convert_commands() -> list[str]:
    """The ``python -m webhook convert`` commands of the docs: lines of code blocks (up to a ``#``
    comment) and inline code spans (which may wrap); synopses with FILE or [options] are left out."""
    commands = []
    fence = re.compile(r"^```.*?^```", re.S | re.M)
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        candidates = [line.split("#")[0] for block in fence.findall(text) for line in block.splitlines()] + re.findall(
            r"`([^`]*)`", fence.sub("", text)
        )
        for candidate in candidates:
            command = " ".join(candidate.split())
            start = command.find("python -m webhook convert ")
            if start < 0 or "FILE" in command or "[" in command:
                continue
            commands.append(command[start:])
    return sorted(set(commands))


@pytest.mark.parametrize("command", convert_commands())
def test_convert_commands_in_the_docs_run_as_written(command: str) -> None:
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], command
    done = subprocess.run(
        [sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert done.stdout.strip(), command


def test_the_install_section_builds_and_loads_the_images_the_chart_asks_for() -> None:
    """The user guide's images are the chart's defaults (repository, tag = appVersion) and the
    Dockerfiles that exist; kind loads them as e2e/kind/run.sh does."""
    import yaml

    guide = (ROOT / "docs" / "user-guide.md").read_text(encoding="utf-8")
    values = yaml.safe_load((ROOT / "charts" / "tessera" / "values.yaml").read_text())
    version = yaml.safe_load((ROOT / "charts" / "tessera" / "Chart.yaml").read_text())["appVersion"]
    run_sh = (ROOT / "e2e" / "kind" / "run.sh").read_text(encoding="utf-8")
    for part in ("webhook", "driver"):
        image = f"{values[part]['image']['repository']}:{version}"
        assert values[part]["image"]["tag"] == "" and values[part]["image"]["pullPolicy"] == "IfNotPresent"
        assert f"docker build -f docker/{part}.Dockerfile" in guide and f"-t {image} ." in guide, image
        assert (ROOT / "docker" / f"{part}.Dockerfile").is_file()
        assert f'docker build -f docker/{part}.Dockerfile -t "tessera/{part}:$TAG" .' in run_sh
        assert f"registry.example.com/ml/tessera/$name:{version}" in guide
    assert "kind load docker-image --name <cluster> tessera/webhook:0.1.0 tessera/driver:0.1.0" in guide
    assert "kind load docker-image" in run_sh
    assert "ctr -n k8s.io images import" in guide
    assert "--set webhook.image.registry=" in guide and "--set driver.image.registry=" in guide
