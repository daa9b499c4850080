"""The range of every figure over several runs of a benchmark.

Each benchmark module writes a markdown report (``.bench/<name>.md``). Given the reports of several
runs of one module, :func:`merge` lines them up and writes one report in which every number that
moved between runs reads ``low - high``: table rows are matched by their label with the numbers
taken out (a label such as "100 pods/s achieved for 20 s (1,999 claims)" matches across runs
whatever its figures), other lines by position. Lines whose words differ between runs (a target
"met" in one run and "MISSED" in another), or that some run lacks, are kept from every run that
has them, marked with the run.

``python -m bench.ranges REPORT...`` prints the merged report of the given runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _skeleton(line: str) -> str:
    return _NUMBER.sub("#", line)


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def _span(values: Sequence[str]) -> str:
    """``low - high`` in the writing of the runs (their decimals and separators), or the value when all agree."""
    if len(set(values)) == 1:
        return values[0]
    low = min(values, key=_value)
    high = max(values, key=_value)
    return low if _value(low) == _value(high) else f"{low} - {high}"


def merge_line(lines: Sequence[str]) -> str | None:
    """One line with the ranges of its numbers, or None when the lines differ in more than numbers."""
    if len({_skeleton(line) for line in lines}) != 1:
        return None
    columns = [_NUMBER.findall(line) for line in lines]
    parts = _NUMBER.split(lines[0])
    out = [parts[0]]
    for i, part in enumerate(parts[1:]):
        out.append(_span([numbers[i] for numbers in columns]))
        out.append(part)
    return "".join(out)


def _key(line: str) -> str:
    """A table row's label (first cell) without its numbers; other lines have none."""
    if not line.startswith("|"):
        return ""
    cells = line.split("|")
    return _skeleton(cells[1].strip()) if len(cells) > 2 else ""


def _find(lines: Sequence[str], index: int, key: str, occurrence: int) -> str | None:
    """The line of another run that stands for line ``index`` of the first: the same occurrence of the
    same row label, or the line at the same position."""
    if key:
        rows = [line for line in lines if _key(line) == key]
        return rows[occurrence] if occurrence < len(rows) else None
    return lines[index] if index < len(lines) else None


def merge(reports: Sequence[str]) -> str:
    """The reports of several runs of one benchmark as one, with ranges (see the module's docstring)."""
    if not reports:
        raise ValueError("no reports to merge")
    runs = [report.splitlines() for report in reports]
    seen: dict[str, int] = {}
    out: list[str] = []
    for i, line in enumerate(runs[0]):
        key = _key(line)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        found = [_find(lines, i, key, occurrence) for lines in runs]
        present = [match for match in found if match is not None]
        merged = merge_line(present) if len(present) == len(runs) else None
        if merged is not None:
            out.append(merged)
            continue
        for run, match in enumerate(found):
            if match is None:
                continue
            if match.startswith("|"):
                out.append(match.replace("| ", f"| run {run + 1}: ", 1))
            else:
                out.append(f"{match} [run {run + 1}]")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python -m bench.ranges REPORT.md [REPORT.md ...]", file=sys.stderr)
        return 2
    texts = []
    for path in argv:
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    sys.stdout.write(merge(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
