"""Prometheus text exposition (0.0.4): parse with the reference client's parser, and check what it
lets pass: every sample line well formed, HELP and TYPE for every family, no series twice, names that
follow the Prometheus naming conventions (for our own names; HAMi's are HAMi's)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"')
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
UNITS = ("_bytes", "_seconds", "_percent", "_ratio", "_total", "_info", "_count", "_sum", "_bucket", "_created")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def samples(text: str) -> list[Sample]:
    """Every sample, as the reference parser reads it (it raises on what it cannot parse)."""
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append(Sample(s.name, dict(s.labels), float(s.value)))
    return out


def series(text: str, name: str, **labels: str) -> list[Sample]:
    return [s for s in samples(text) if s.name == name and labels.items() <= s.labels.items()]


def value(text: str, name: str, **labels: str) -> float:
    found = series(text, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {len(found)} series: {found}"
    return found[0].value


def names(text: str) -> set[str]:
    return {s.name for s in samples(text)}


def check_exposition(text: str, *, own_prefixes: tuple[str, ...] = ("tessera_",)) -> None:
    """Raise AssertionError naming the first line or name that breaks the format or the conventions."""
    samples(text)
    helps: set[str] = set()
    types: dict[str, str] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"line {number}: second HELP for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name in helps, f"line {number}: TYPE of {name} before its HELP"
            types[name] = kind
            continue
        assert not line.startswith("#"), f"line {number}: unknown comment {line!r}"
        match = SAMPLE.match(line)
        assert match, f"line {number}: not a sample line: {line!r}"
        name, _, body, raw = match.groups()
        float(raw)  # NaN and +Inf parse too
        pairs = LABEL.findall(body or "")
        rebuilt = ",".join(f'{k}="{v}"' for k, v in pairs)
        assert rebuilt == (body or ""), f"line {number}: malformed labels: {body!r}"
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"line {number}: a label twice"
        family = next((f for f in (name, re.sub(r"_(count|sum|bucket)$", "", name)) if f in types), None)
        assert family is not None, f"line {number}: sample {name} has no TYPE"
        key = (name, tuple(sorted(pairs)))
        assert key not in seen, f"line {number}: series {name}{{{body}}} twice"
        seen.add(key)
    for name, kind in types.items():
        assert NAME.match(name), name
        if not name.startswith(own_prefixes):
            continue
        assert SNAKE.match(name), f"{name}: not snake_case"
        assert "__" not in name and not name.endswith("_"), name
        if kind == "counter":
            assert name.endswith("_total"), f"{name}: a counter is named _total"
        if kind == "gauge":
            assert not name.endswith("_total"), f"{name}: _total is for counters"
        if any(w in name for w in ("memory", "bytes")) and not name.endswith(("_info",)):
            assert name.endswith("_bytes"), f"{name}: memory in bytes, named _bytes"
        if "cores" in name and not name.endswith("_info"):
            assert name.endswith(("_percent", "_ratio")), f"{name}: cores are a percentage, say so"
    for s in samples(text):
        for label in s.labels:
            assert SNAKE.match(label), f"{s.name}: label {label} not snake_case"
