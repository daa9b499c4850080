"""bench.ranges: the figures of several runs of a benchmark as ranges (docs/benchmarks.md quotes them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.ranges import merge, merge_line

RUN_1 = """# DRA driver benchmark

Machine: x86_64, 2 CPUs, load average 0.4 at the end.

| measurement | n | p50 (ms) | p99 (ms) | target |
|---|---|---|---|---|
| prepare, 1 device | 300 | 2.07 | 3.36 | p99 <= 10 ms: met |
| scrape, Tessera names (434 series) | 300 | 7.00 | 25.60 | p99 <= 50 ms: met |
| same, CPU time | 100 | 5.40 | 6.80 | |
| scrape, HAMi names (766 series) | 300 | 8.80 | 35.40 | p99 <= 50 ms: met |
| same, CPU time | 100 | 7.40 | 10.60 | |
| 100 pods/s achieved for 20 s (1,999 claims) | - | 0.71 | 1 | |
"""

RUN_2 = """# DRA driver benchmark

Machine: x86_64, 2 CPUs, load average 1.9 at the end.

| measurement | n | p50 (ms) | p99 (ms) | target |
|---|---|---|---|---|
| prepare, 1 device | 300 | 2.51 | 12.04 | p99 <= 10 ms: MISSED |
| scrape, Tessera names (434 series) | 300 | 15.00 | 32.80 | p99 <= 50 ms: met |
| same, CPU time | 100 | 11.80 | 12.90 | |
| scrape, HAMi names (766 series) | 300 | 20.60 | 55.90 | p99 <= 50 ms: met |
| same, CPU time | 100 | 11.90 | 16.50 | |
| 100 pods/s achieved for 20 s (2,003 claims) | - | 0.52 | 1 | |
"""


def test_numbers_that_moved_become_ranges_and_equal_ones_stay() -> None:
    assert merge_line(["| a (434 series) | 300 | 7.00 |", "| a (434 series) | 300 | 15.00 |"]) == (
        "| a (434 series) | 300 | 7.00 - 15.00 |"
    )
    assert merge_line(["load 0.4", "load 1.9", "load 1.2"]) == "load 0.4 - 1.9"
    assert merge_line(["1,999 claims", "2,003 claims"]) == "1,999 - 2,003 claims"
    assert merge_line(["p99 2.0 ms", "p99 2.00 ms"]) == "p99 2.0 ms"  # the same value written twice
    assert merge_line(["met", "MISSED"]) is None


def test_rows_match_by_label_and_occurrence_and_differing_words_keep_every_run() -> None:
    merged = merge([RUN_1, RUN_2]).splitlines()
    assert "Machine: x86_64, 2 CPUs, load average 0.4 - 1.9 at the end." in merged
    # the second "same, CPU time" row pairs with the second one of the other run, not the first
    assert merged.count("| same, CPU time | 100 | 5.40 - 11.80 | 6.80 - 12.90 | |") == 1
    assert merged.count("| same, CPU time | 100 | 7.40 - 11.90 | 10.60 - 16.50 | |") == 1
    assert "| 100 pods/s achieved for 20 s (1,999 - 2,003 claims) | - | 0.52 - 0.71 | 1 | |" in merged
    # a target met in one run and missed in the other: both rows, each marked with its run
    assert "| run 1: prepare, 1 device | 300 | 2.07 | 3.36 | p99 <= 10 ms: met |" in merged
    assert "| run 2: prepare, 1 device | 300 | 2.51 | 12.04 | p99 <= 10 ms: MISSED |" in merged
    assert merged[0] == "# DRA driver benchmark"


def test_a_row_missing_from_a_run_is_kept_and_marked(tmp_path: Path) -> None:
    shorter = "\n".join(line for line in RUN_2.splitlines() if "HAMi" not in line) + "\n"
    merged = merge([RUN_1, shorter])
    assert "| run 1: scrape, HAMi names (766 series) | 300 | 8.80 | 35.40 | p99 <= 50 ms: met |" in merged
    one, two = tmp_path / "1.md", tmp_path / "2.md"
    one.write_text(RUN_1)
    two.write_text(shorter)
    cli = subprocess.run([sys.executable, "-m", "bench.ranges", str(one), str(two)], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == merged
