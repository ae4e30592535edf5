"""The coordinate check gives the right verdict and names the faulty layer.

Widths 32–256, 3 steps, 2 seeds, one thread: each check takes well under a second. Robustness
across many seeds is in test_coord_calibration.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mutransfer as mt
from mutransfer.coord import CoordCheckError, coord_check, data_generator, default_batch, reinit
from mutransfer.coord.record import Recorder, attention_logits
from mutransfer.coord.verdict import (
    BLOWS_UP,
    EXPECTED,
    LAZY,
    NOISY,
    STABLE,
    VANISHES,
    ZERO,
    CoordReport,
    Thresholds,
    fit_series,
    fit_slope,
    judge,
    lazy_slope,
    series_slope,
)
from mutransfer.models import GPT, MLP, GPTConfig
from mutransfer.rules import RoleRule

WIDTHS = (32, 64, 128, 256)


def gpt(width: int) -> GPT:
    return GPT(GPTConfig(width=width, depth=2, n_heads=2, seq_len=16))


def mlp(width: int) -> MLP:
    return MLP(width=width, depth=3, in_features=16, num_classes=10)


def broken(role: str, rule: RoleRule, name: str, family: str = "adam") -> mt.Rules:
    """µP with one role's rule replaced: a few lines, as a user would write it."""
    table = {**mt.MUP.families[family], role: rule}
    return mt.MUP.with_(name=name, families={**mt.MUP.families, family: table})


HIDDEN_LR_UNSCALED = broken("hidden", RoleRule.make(init=-0.5, eps=-1), "hidden-lr-unscaled")
NO_READOUT_MULTIPLIER = broken("output", RoleRule(), "no-readout-multiplier")
ATTENTION_SQRT = mt.MUP.with_(name="attention-1/sqrt(d)", attention="sp")
# the readout's LR divided by width once more than µP's (Adam: 1/m instead of 1; SGD: 1 instead
# of m): it learns too slowly at large width, and nothing grows
LAZY_READOUT = broken("output", RoleRule.make(multiplier=-1, lr=-1), "readout-lr-divided-by-width")
LAZY_READOUT_SGD = broken("output", RoleRule.make(multiplier=-1), "readout-lr-divided", "sgd")
# hidden weights drawn with the base width's std at every width (1/√base_fan_in, not 1/√fan_in)
HIDDEN_INIT_UNSCALED = broken("hidden", RoleRule.make(lr=-1, eps=-1), "hidden-init-unscaled")

GPT_HIDDEN = {
    f"blocks.{i}.{m}" for i in range(2) for m in ("attn.q", "attn.k", "attn.v", "attn.o")
} | {f"blocks.{i}.mlp.{m}" for i in range(2) for m in ("fc", "proj")}


def culprit_keys(report: CoordReport) -> set[tuple[str, str]]:
    return {r.key for r in report.culprits()}


# --------------------------------------------------------------------------------- verdicts
def test_sp_gpt_fails_and_names_every_hidden_layer() -> None:
    report = coord_check(gpt, WIDTHS, steps=3, seeds=2, rules="sp")
    assert not report.ok
    updates = {m for m, q in culprit_keys(report) if q == "update"}
    assert updates >= GPT_HIDDEN  # every hidden layer's own update grows with width
    assert all(q in ("update", "logits", "Δlogits") for _, q in culprit_keys(report))
    assert "At fault: " in report.summary() and "blocks.0.attn.q (update" in report.summary()


def test_mup_gpt_passes_with_the_known_shrinkage_explained() -> None:
    report = coord_check(gpt, WIDTHS, steps=3, seeds=2)
    assert report.ok, report.table()
    readout = report.row("lm_head", "out")
    assert readout.statuses[0] == EXPECTED and readout.verdict == STABLE
    assert math.isclose(readout.slopes[0] or 0.0, -0.5, abs_tol=0.1)  # 1/√width at init
    assert report.row("blocks.0.attn", "logits").statuses[0] == EXPECTED
    assert "explained: " in report.table()


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_mup_mlp_passes(optimizer: str) -> None:
    report = coord_check(mlp, WIDTHS, steps=3, seeds=2, optimizer=optimizer)
    assert report.ok, report.table()
    if optimizer == "adam":  # SGD's updates shrink a little at t=1 below width ~128
        assert not report.vanishing(), report.table()


def test_hidden_lr_not_scaled_is_flagged_at_the_hidden_layers() -> None:
    report = coord_check(gpt, WIDTHS, steps=3, seeds=2, rules=HIDDEN_LR_UNSCALED)
    assert not report.ok
    updates = {m for m, q in culprit_keys(report) if q == "update"}
    assert updates == GPT_HIDDEN  # exactly the hidden layers: not embeddings, norms, readout
    report_mlp = coord_check(mlp, WIDTHS, steps=3, seeds=2, rules=HIDDEN_LR_UNSCALED)
    assert ("body.2", "update") in culprit_keys(report_mlp)
    assert ("body.0", "update") not in culprit_keys(report_mlp)


def test_missing_readout_multiplier_is_flagged_at_the_readout() -> None:
    report = coord_check(gpt, WIDTHS, steps=3, seeds=2, rules=NO_READOUT_MULTIPLIER)
    assert not report.ok
    assert culprit_keys(report) == {("lm_head", "out"), ("lm_head", "update")}
    assert report.row("lm_head", "out").statuses[0] == BLOWS_UP  # wrong from the start


def test_attention_scaled_by_sqrt_d_is_flagged_at_the_attention_logits() -> None:
    report = coord_check(gpt, WIDTHS, steps=3, seeds=2, rules=ATTENTION_SQRT)
    assert not report.ok
    assert culprit_keys(report) == {("blocks.0.attn", "Δlogits"), ("blocks.1.attn", "Δlogits")}


def test_a_tied_readout_is_judged_as_a_readout() -> None:
    def tied(width: int) -> GPT:
        return GPT(GPTConfig(width=width, depth=2, n_heads=2, seq_len=16, tie_embeddings=True))

    # embedding σ 0.02 as GPT-2 and nanoGPT draw it: with the reference σ = 1, the tied readout
    # starts with logits of RMS ≈ 8 at the base width, a saturated softmax
    options = {"role_init_std": {"input": 0.02}}
    report = coord_check(tied, WIDTHS, steps=3, seeds=2, parametrize_kwargs=options)
    assert report.ok, report.table()
    # one tensor, two roles: the embedding is an input, the same weight read out is a readout
    assert report.row("wte", "out").roles == ["input"]
    readout = report.row("lm_head", "out")
    assert readout.roles == ["output"]
    assert readout.statuses[0] == EXPECTED and readout.verdict == STABLE  # 1/√width, explained
    assert math.isclose(readout.slopes[0] or 0.0, -0.5, abs_tol=0.1)


def test_readout_lr_divided_by_width_fails_at_the_readout() -> None:
    report = coord_check(gpt, WIDTHS, steps=3, seeds=2, rules=LAZY_READOUT)
    assert not report.ok and not report.blowing_up()  # nothing grows: it fails all the same
    assert culprit_keys(report) == {("lm_head", "update")}
    mean = lazy_slope(report.row("lm_head", "update"))
    assert mean is not None and mean < -0.85  # ~ -1: one factor of width
    assert "1 layer learns too slowly" in report.summary()
    # under SGD, with a readout bias: the bias's update (Θ(1)) is kept apart from ΔW·x
    sgd = coord_check(mlp, WIDTHS, steps=3, seeds=2, optimizer="sgd", rules=LAZY_READOUT_SGD)
    assert not sgd.ok and culprit_keys(sgd) == {("readout", "update")}
    assert sgd.row("readout", "Δbias").verdict == STABLE


def test_hidden_init_not_scaled_fails_at_initialisation() -> None:
    report = coord_check(gpt, WIDTHS, steps=3, seeds=2, rules=HIDDEN_INIT_UNSCALED)
    assert not report.ok
    wrong_at_init = {m for m, q in culprit_keys(report) if q == "out"}
    assert wrong_at_init >= GPT_HIDDEN
    assert all(report.row(m, "out").statuses[0] == BLOWS_UP for m in GPT_HIDDEN)


# --------------------------------------------------------------------- any model, any form
class TinyResNet(nn.Module):
    """A user's own model: an input layer, one pre-norm residual block, a readout."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Linear(8, width)
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.down(F.gelu(self.up(self.norm(h))))
        return self.head(h)


def test_custom_model_passes_under_mup_and_fails_under_sp() -> None:
    assert coord_check(TinyResNet, WIDTHS, steps=3, seeds=2).ok
    report = coord_check(TinyResNet, WIDTHS, steps=3, seeds=2, rules="sp")
    assert {("up", "update"), ("down", "update")} <= culprit_keys(report)


def test_factory_may_return_model_and_plan() -> None:
    calls = []

    def factory(width: int):
        if not torch.empty(0).is_meta:  # a probe on meta (is this a pair?) builds nothing
            calls.append(width)
        model = TinyResNet(width)
        plan = mt.parametrize(model, TinyResNet, "mup", base_width=32, seed=len(calls))
        return model, plan

    report = coord_check(factory, (32, 64, 128), steps=2, seeds=2)
    assert report.ok
    assert calls == [32, 32, 64, 64, 128, 128]  # called again per seed: its own init is checked
    assert report.settings["rules"] == "mup"


def test_depth_mode_flags_the_residual_stream_without_depth_rules() -> None:
    def by_depth(depth: int) -> GPT:
        return GPT(GPTConfig(width=32, depth=depth, n_heads=2, seq_len=16))

    with torch.device("meta"):
        delta = GPT(GPTConfig(width=64, depth=2, n_heads=2, seq_len=16))
    options = {"delta": delta}
    plain = coord_check(
        by_depth, vary="depth", depths=[2, 4, 8], steps=2, seeds=2, parametrize_kwargs=options
    )
    # the residual stream (block outputs, pooled across depths) grows with depth
    assert ("blocks.*", "out") in culprit_keys(plain)
    assert plain.row("blocks.*", "out").verdict == BLOWS_UP
    completep = mt.MUP.with_(name="completep", residual_depth_exponent=-1.0)
    scaled = coord_check(
        by_depth,
        vary="depth",
        depths=[2, 4, 8],
        steps=2,
        seeds=2,
        rules=completep,
        parametrize_kwargs=options,
    )
    assert scaled.ok, scaled.table()
    branch = scaled.row("blocks.*.mlp", "out")
    assert branch.statuses[0] == EXPECTED and math.isclose(branch.slopes[0] or 0, -1, abs_tol=0.1)


def test_worker_threads_give_the_same_report() -> None:
    # two threads train different sizes/seeds at once; attention logits are routed per thread
    serial = coord_check(gpt, (32, 64, 128), steps=2, seeds=3)
    threaded = coord_check(gpt, (32, 64, 128), steps=2, seeds=3, workers=2)
    assert threaded.values == serial.values
    assert [r.key for r in threaded.rows] == [r.key for r in serial.rows]


def test_a_model_the_plan_initialises_entirely_is_built_without_its_default_init() -> None:
    real_builds = []

    def factory(width: int) -> nn.Module:
        if not torch.empty(0).is_meta:
            real_builds.append(width)
        return mlp(width)

    report = coord_check(factory, WIDTHS, steps=2, seeds=2)
    assert report.ok
    assert real_builds == []  # built on meta, given memory, initialised by reinit alone
    assert report.values == coord_check(mlp, WIDTHS, steps=2, seeds=2).values


class Offset(nn.Module):
    """A frozen gain no ``reset_parameters`` restores, and a buffer: values only the
    constructor sets, which a build on meta would lose."""

    def __init__(self, width: int, buffer: bool) -> None:
        super().__init__()
        self.inp, self.hidden, self.out = (
            nn.Linear(8, width),
            nn.Linear(width, width),
            nn.Linear(width, 3),
        )
        self.gain = nn.Parameter(torch.full((width,), 2.0), requires_grad=False)
        if buffer:
            self.register_buffer("shift", torch.full((width,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert torch.equal(self.gain, torch.full_like(self.gain, 2.0)), "gain lost"
        shift = getattr(self, "shift", None)
        assert shift is None or torch.equal(shift, torch.full_like(shift, 0.5)), "buffer lost"
        return self.out(F.relu(self.hidden(F.relu(self.inp(x)) * self.gain)))


@pytest.mark.parametrize("buffer", [False, True])
def test_values_only_the_constructor_sets_survive(buffer: bool) -> None:
    data = (torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
    report = coord_check(lambda w: Offset(w, buffer), WIDTHS, steps=2, seeds=2, data=data)
    assert report.values


# ----------------------------------------------------------------------------- recording
def test_update_term_is_delta_w_times_the_current_input() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x = torch.randn(5, 4)
    old = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    # (tensor, factor) pairs: θ_old − θ_new = factor · tensor (here factor 2, as for plain SGD)
    deltas = {
        id(p): ((o - p.detach()) / 2, 2.0) for p, o in zip(model.parameters(), old, strict=True)
    }
    recorder = Recorder(model)
    recorder.begin(deltas)
    model(x)
    got = recorder.end()
    recorder.remove()
    h = torch.tanh(model[0](x))
    first = model[0]

    def rms(t: torch.Tensor) -> float:
        return t.pow(2).mean().sqrt().item()

    # the weight's ΔW·x and the bias's part (Δb added at every position) are kept apart
    change = F.linear(h, model[2].weight - old[2])
    assert math.isclose(got[("2", "update")], rms(change), rel_tol=1e-5)
    change0 = F.linear(x, first.weight - old[0])
    assert math.isclose(got[("0", "update")], rms(change0), rel_tol=1e-5)
    bias_change = F.linear(h, torch.zeros_like(old[2]), model[2].bias - old[3])
    assert math.isclose(got[("2", "Δbias")], rms(bias_change), rel_tol=1e-5)
    assert not model[0]._forward_hooks  # hooks removed


def test_attention_logits_respect_the_causal_mask() -> None:
    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    logits, valid = attention_logits(q, k, is_causal=True, scale=0.5)
    assert valid is not None and valid.sum() == 15  # 5 + 4 + ... + 1 positions per head
    assert torch.allclose(logits, 0.5 * q @ k.transpose(-2, -1))


def test_sdpa_is_restored_after_the_check_even_on_error() -> None:
    original = F.scaled_dot_product_attention

    def failing(width: int) -> GPT:
        if width > 32:
            raise RuntimeError("boom")
        return gpt(width)

    with pytest.raises(RuntimeError, match="boom"):
        coord_check(failing, (32, 64), steps=1, seeds=1)
    assert F.scaled_dot_product_attention is original


def test_default_data_is_small_and_deterministic() -> None:
    x, y = default_batch(gpt(32), torch.Generator().manual_seed(0))
    assert x.shape == (2, 8) and y.shape == (2, 8)
    x2, _ = default_batch(gpt(64), torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)  # the same data at every width
    features, labels = default_batch(mlp(32), torch.Generator().manual_seed(0))
    assert features.shape == (4, 16) and int(labels.max()) < 10


def test_data_as_a_batch_a_callable_or_batches() -> None:
    x, y = torch.randn(4, 16), torch.randint(0, 10, (4,))
    as_batch = coord_check(mlp, (32, 64), steps=1, seeds=1, data=(x, y))
    as_list = coord_check(mlp, (32, 64), steps=1, seeds=1, data=[(x, y), (x + 1, y)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    as_loader = coord_check(mlp, (32, 64), steps=1, seeds=1, data=loader)
    as_callable = coord_check(mlp, (32, 64), steps=1, seeds=1, data=lambda g: (x, y))
    assert as_batch.values == as_list.values == as_loader.values == as_callable.values


def test_data_and_init_draw_from_different_streams() -> None:
    # same seed for both would make the first input equal the first weight row (up to scale)
    model = mlp(32)
    plan = mt.parametrize(model, mlp, base_width=32, delta=mlp(64), init=False)
    reinit(plan, model, seed=0)
    features, _ = default_batch(model, data_generator(0))
    row = model.body[0].weight[0]
    cosine = F.cosine_similarity(features[0], row, dim=0).abs().item()
    assert cosine < 0.9


def test_reinit_matches_plan_init_bit_for_bit() -> None:
    model = gpt(64)
    plan = mt.parametrize(model, gpt, base_width=32, zero_init=["*.attn.q.weight"], init=False)
    reinit(plan, model, seed=3)
    fast = {n: p.detach().clone() for n, p in model.named_parameters()}
    plan.init_(model, seed=3)
    for name, p in model.named_parameters():
        assert torch.equal(fast[name], p), name


def test_user_rng_state_is_left_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    coord_check(mlp, (32, 64), steps=1, seeds=1)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------- verdicts
def test_slope_fit_and_special_series() -> None:
    assert math.isclose(fit_slope([32, 64, 128], [1.0, 2.0, 4.0]), 1.0)
    sizes = [32, 64, 128]
    assert series_slope(sizes, [[0.0], [0.0], [0.0]]) == (None, ZERO)
    assert series_slope(sizes, [[1.0], [math.nan], [1.0]]) == (math.inf, BLOWS_UP)
    slope, status = series_slope(sizes, [[1.0, 2.0], [2.0, 4.0], [4.0, 8.0]])
    assert status is None and math.isclose(slope or 0, 1.0)


def synthetic(
    series: dict[tuple[str, str], Callable[[int, int, int], float]],
    *,
    seeds: int = 1,
    steps: int = 2,
    roles: dict[str, list[str]] | None = None,
    strict: bool = False,
) -> CoordReport:
    """A report judged from made-up RMS values ``series[key](width, step, seed)``."""
    sizes = [32, 64, 128, 256]
    values = {
        key: {
            (t, i, j): fn(n, t, j)
            for t in range(steps + 1)
            for i, n in enumerate(sizes)
            for j in range(seeds)
        }
        for key, fn in series.items()
    }
    return judge(
        sizes=sizes,
        seeds=list(range(seeds)),
        steps=steps,
        values=values,
        losses={},
        order={k: i for i, k in enumerate(values)},
        context={"roles": roles or {}, "vary": "width", "attention": "mup"},
        settings={"vary": "width"},
        thresholds=Thresholds(),
        strict=strict,
    )


def test_judge_on_synthetic_series() -> None:
    report = synthetic(
        {
            ("grows", "update"): lambda n, t, j: float(n),
            ("flat", "out"): lambda n, t, j: 1.0,
            ("slow", "update"): lambda n, t, j: 1.0 / n,  # one factor of width too many
            ("incoherent", "update"): lambda n, t, j: n**-0.5,  # µP's own worst shrinkage
            ("shrinks", "out"): lambda n, t, j: n**-0.6,
            ("head", "out"): lambda n, t, j: n**-0.5,
        },
        roles={"head": ["output"]},
    )
    verdicts = {r.module: r.verdict for r in report.rows}
    assert verdicts == {
        "grows": BLOWS_UP,
        "flat": STABLE,
        "slow": LAZY,
        "incoherent": VANISHES,
        "shrinks": VANISHES,
        "head": STABLE,
    }
    assert report.row("head").notes  # the readout's 1/√width is explained, not flagged
    assert [r.module for r in report.culprits()] == ["grows", "slow"]  # what fails, in order
    assert not report.ok
    assert report.summary().startswith("FAIL: 1 series blows up with width; 1 layer learns")
    assert "slow (update: slope -1.00 on average over the steps)" in report.summary()
    clone = CoordReport.from_json(report.to_json())
    assert clone.rows == report.rows and clone.values == report.values
    assert clone.strict == report.strict and clone.ok == report.ok


@pytest.mark.parametrize("strict", [False, True])
def test_the_printed_verdict_is_the_outcome(strict: bool) -> None:
    # an update that shrinks at step 1 only (it catches up later) and an activation that shrinks:
    # warnings by default, failures when strict — and the words say so either way
    report = synthetic(
        {
            ("late", "update"): lambda n, t, j: n**-1.0 if t == 1 else 1.0,
            ("shrinks", "out"): lambda n, t, j: n**-0.6,
        },
        strict=strict,
    )
    assert report.row("late", "update").verdict == VANISHES  # not LAZY: it keeps up at t=2
    assert report.ok is not strict
    summary, table = report.summary(), report.table()
    first = summary.splitlines()[0]
    assert first.startswith("FAIL: 2 series shrink with width (strict)" if strict else "PASS: ")
    assert table.startswith("coord check [FAIL]" if strict else "coord check [PASS]")
    assert ("warning: 2 series shrink" in summary) is not strict
    assert report.to_dict()["ok"] is report.ok


def test_a_slope_within_its_own_scatter_is_not_a_blow_up() -> None:
    jitter = [1.0, 2.2, 0.8, 2.0]  # a noisy series: the points do not follow a power law
    sizes = [32, 64, 128, 256]
    report = synthetic(
        {
            ("noisy", "update"): lambda n, t, j: jitter[(sizes.index(n) + j) % 4] * n**0.3,
            ("clean", "update"): lambda n, t, j: (1.0 + 0.1 * j) * n**0.3,
        },
        seeds=2,
    )
    noisy, clean = report.row("noisy", "update"), report.row("clean", "update")
    assert clean.verdict == BLOWS_UP
    assert all(e is not None and e < 1e-9 for e in clean.errors[1:])  # on its line exactly
    assert all(s is not None and s > 0.25 for s in noisy.slopes[1:])
    assert noisy.statuses[1:] == [NOISY, NOISY] and noisy.verdict == STABLE
    assert "?" in report.table()
    fit = fit_series(
        sizes, [[jitter[(i + j) % 4] * n**0.3 for j in range(2)] for i, n in enumerate(sizes)]
    )
    assert fit.slope is not None and fit.error is not None and fit.slope < 2 * fit.error


# --------------------------------------------------------------------------------- errors
def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(CoordCheckError, match="at least two different positive sizes"):
        coord_check(mlp, [64], steps=1)
    with pytest.raises(CoordCheckError, match="steps must be at least 1"):
        coord_check(mlp, WIDTHS, steps=0)
    with pytest.raises(CoordCheckError, match="needs depths="):
        coord_check(mlp, vary="depth")
    with pytest.raises(CoordCheckError, match="must return an nn.Module"):
        coord_check(lambda w: "not a model", (32, 64), steps=1)
    with pytest.raises(CoordCheckError, match="pass parametrize_kwargs=\\{'delta'"):
        coord_check(lambda d: MLP(32, depth=d), vary="depth", depths=[2, 4], steps=1)
    with pytest.raises(CoordCheckError, match="no default data for a model starting with Conv2d"):
        coord_check(lambda w: nn.Sequential(nn.Conv2d(3, w, 3), nn.Flatten()), (8, 16), steps=1)
