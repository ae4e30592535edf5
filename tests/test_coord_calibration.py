"""The verdict's thresholds hold across seeds: correct µP passes, each broken variant fails at
the layer that has the fault, for every pair of seeds tried (3 steps, Adam and SGD, the
reference GPT and MLP; widths 32–256, and 64–512 for the GPT under SGD, which needs them).

This is the calibration behind ``Thresholds`` (see docs/coord-check.md for the numbers, and
``bench/coord_faults.py --only calibration`` for the full measurement): the largest slope of a
correct µP model stays well below the blow-up threshold (+0.25), the smallest slope of a faulty
layer well above it; every trained layer's own update of a correct model keeps a slope,
averaged over the steps, well above the ``lazy`` threshold (−0.75), while a readout whose LR
is divided by width stays near −1.
"""

from __future__ import annotations

import pytest

import mutransfer as mt
from mutransfer.coord import coord_check
from mutransfer.coord.verdict import EXPECTED, LEARNED, CoordReport, Thresholds, lazy_slope
from test_coord import (
    ATTENTION_SQRT,
    GPT_HIDDEN,
    HIDDEN_INIT_UNSCALED,
    HIDDEN_LR_UNSCALED,
    LAZY_READOUT,
    LAZY_READOUT_SGD,
    NO_READOUT_MULTIPLIER,
    WIDTHS,
    gpt,
    mlp,
)

pytestmark = pytest.mark.slow
SEED_PAIRS = [(0, 1), (2, 3), (4, 5)]
WIDE = (64, 128, 256, 512)
LAZY = Thresholds().lazy


def largest_unexplained_slope(report: CoordReport) -> float:
    return max(
        s
        for r in report.rows
        for s, status in zip(r.slopes, r.statuses, strict=True)
        if s is not None and status != EXPECTED
    )


def slowest_update(report: CoordReport) -> float:
    """The smallest, over trained layers, of their own update's slope averaged over steps."""
    means = [lazy_slope(r) for r in report.rows if r.quantity in LEARNED]
    return min(m for m in means if m is not None)


def faulty(report: CoordReport) -> set[tuple[str, str]]:
    return {r.key for r in report.culprits()}


CORRECT = [(gpt, "adam", WIDTHS), (gpt, "sgd", WIDE), (mlp, "adam", WIDTHS), (mlp, "sgd", WIDTHS)]


@pytest.mark.parametrize("seeds", SEED_PAIRS)
def test_mup_passes_with_margin(seeds: tuple[int, int]) -> None:
    for factory, optimizer, widths in CORRECT:
        report = coord_check(factory, widths, steps=3, seeds=seeds, optimizer=optimizer)
        assert report.ok, report.table()
        assert largest_unexplained_slope(report) < 0.2, report.table()
        # SGD's first updates of attention queries and keys shrink like 1/√width (measured
        # down to -0.63); Adam's updates are Θ(1) from the first step
        assert slowest_update(report) > (LAZY + 0.1 if optimizer == "sgd" else -0.3)


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

    init = coord_check(gpt, WIDTHS, steps=3, seeds=seeds, rules=HIDDEN_INIT_UNSCALED)
    assert {m for m, q in faulty(init) if q == "out"} >= GPT_HIDDEN


LAZY_CASES = [
    (gpt, "adam", WIDTHS, LAZY_READOUT, "lm_head"),
    (gpt, "sgd", WIDE, LAZY_READOUT_SGD, "lm_head"),
    (mlp, "adam", WIDTHS, LAZY_READOUT, "readout"),
    (mlp, "sgd", WIDTHS, LAZY_READOUT_SGD, "readout"),
]


@pytest.mark.parametrize("seeds", SEED_PAIRS)
def test_a_lazy_readout_fails_at_the_readout_alone(seeds: tuple[int, int]) -> None:
    for factory, optimizer, widths, rules, readout in LAZY_CASES:
        report = coord_check(
            factory, widths, steps=3, seeds=seeds, optimizer=optimizer, rules=rules
        )
        assert faulty(report) == {(readout, "update")}, report.table()
        mean = lazy_slope(report.row(readout, "update"))
        assert mean is not None and mean < LAZY - 0.1, report.table()
