"""The verdict's thresholds hold across seeds: correct µP passes, each broken variant fails at
the layer that has the fault, for every pair of seeds tried (widths 32–256, 3 steps, Adam).

This is the calibration behind ``Thresholds`` (see docs/coord-check.md for the numbers): the
largest slope of a correct µP model stays well below the blow-up threshold (0.25), the
smallest slope of a faulty layer well above it.
"""

from __future__ import annotations

import pytest

import mutransfer as mt
from mutransfer.coord import coord_check
from mutransfer.coord_verdict import EXPECTED, CoordReport
from test_coord import (
    ATTENTION_SQRT,
    GPT_HIDDEN,
    HIDDEN_LR_UNSCALED,
    NO_READOUT_MULTIPLIER,
    WIDTHS,
    gpt,
    mlp,
)

pytestmark = pytest.mark.slow
SEED_PAIRS = [(0, 1), (2, 3), (4, 5)]


def largest_unexplained_slope(report: CoordReport) -> float:
    return max(
        s
        for r in report.rows
        for s, status in zip(r.slopes, r.statuses, strict=True)
        if s is not None and status != EXPECTED
    )


def faulty(report: CoordReport) -> set[tuple[str, str]]:
    return {r.key for r in report.culprits()}


@pytest.mark.parametrize("seeds", SEED_PAIRS)
def test_mup_passes_with_margin(seeds: tuple[int, int]) -> None:
    for factory, optimizer in ((gpt, "adam"), (mlp, "adam"), (mlp, "sgd")):
        report = coord_check(factory, WIDTHS, steps=3, seeds=seeds, optimizer=optimizer)
        assert report.ok, report.table()
        assert largest_unexplained_slope(report) < 0.2, report.table()


@pytest.mark.parametrize("seeds", SEED_PAIRS)
def test_broken_variants_fail_at_the_faulty_layer(seeds: tuple[int, int]) -> None:
    hidden = coord_check(gpt, WIDTHS, steps=3, seeds=seeds, rules=HIDDEN_LR_UNSCALED)
    assert {m for m, q in faulty(hidden) if q == "update"} == GPT_HIDDEN

    readout = coord_check(gpt, WIDTHS, steps=3, seeds=seeds, rules=NO_READOUT_MULTIPLIER)
    assert faulty(readout) == {("lm_head", "out"), ("lm_head", "update")}

    attention = coord_check(gpt, WIDTHS, steps=3, seeds=seeds, rules=ATTENTION_SQRT)
    assert faulty(attention) <= {("blocks.0.attn", "Δlogits"), ("blocks.1.attn", "Δlogits")}
    assert ("blocks.0.attn", "Δlogits") in faulty(attention)
    # the weakest fault still clears the threshold by a margin
    assert max(s for s in attention.row("blocks.0.attn", "Δlogits").slopes if s) > 0.3

    sp = coord_check(mlp, WIDTHS, steps=3, seeds=seeds, rules=mt.SP)
    assert {("body.2", "update"), ("readout", "update")} <= faulty(sp)
