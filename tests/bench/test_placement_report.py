"""bench.placement's report: which figures judge the spread evenness target."""

from __future__ import annotations

import pytest

from bench.placement import RUNS, SPREAD_RUN, Placement, Run, SpreadGaps, placement_report


def _run(jain_nodes: float, placed: int = 100, idle: float = 10.0) -> Run:
    sample = {"stranded": 0.1, "idle": idle, "jain_cards": 0.5, "jain_nodes": jain_nodes}
    return Run("", first_rejection=placed, placed_total=placed, samples=[sample] * 50, seconds=[0.001])


def _placement(spread_nodes: float) -> Placement:
    """One seed where every run is alike, except spread's node evenness (HAMi's is 0.9)."""
    runs = {key: [_run(0.9)] for _, key in RUNS}
    runs["first fit"] = [_run(0.9, placed=90, idle=5.0)]
    runs["spread"] = [_run(spread_nodes)]
    return Placement(1.0, 100, [1], runs, windows=[50])


def _gaps(nodes: list[float]) -> SpreadGaps:
    return SpreadGaps(len(nodes), {SPREAD_RUN[0]: [(0.0, g) for g in nodes]}, [])


def _spread_missed(missed: list[str]) -> list[str]:
    return [m for m in missed if m.startswith("spread")]


def test_without_many_seeds_the_placement_seeds_judge_spread() -> None:
    _, missed = placement_report(_placement(0.89))
    assert _spread_missed(missed) == ["spread node evenness at least HAMi's, mean over these 1 seeds: 0.8900 vs 0.9000"]
    _, missed = placement_report(_placement(0.91))
    assert _spread_missed(missed) == []


def test_many_seeds_judge_spread_and_the_placement_seeds_are_reported() -> None:
    lines, missed = placement_report(_placement(0.89), _gaps([0.002, -0.001, 0.001]))
    assert _spread_missed(missed) == []
    text = "\n".join(lines)
    assert "mean over these 1 seeds: 0.8900 vs 0.9000 (reported; the target is judged on 3 seeds)" in text
    assert "node evenness at least HAMi's, mean gap over 3 seeds: +0.0007 (standard error 0.0009) (met)" in text


def test_a_negative_mean_gap_over_many_seeds_misses_even_when_the_placement_seeds_pass() -> None:
    _, missed = placement_report(_placement(0.95), _gaps([0.001, -0.002, -0.002]))
    assert _spread_missed(missed) == [
        "spread node evenness at least HAMi's, mean gap over 3 seeds: -0.0010 (standard error 0.0010)"
    ]


def test_mean_and_standard_error_of_the_gaps() -> None:
    gaps = _gaps([0.001, 0.003])
    mean, se = gaps.mean_se(SPREAD_RUN[0], 1)
    assert mean == pytest.approx(0.002)
    assert se == pytest.approx(0.001)
    assert gaps.lines()[2] == f"| {SPREAD_RUN[0]} | 2 | +0.0000 (0.0000) | +0.0020 (0.0010) |"
