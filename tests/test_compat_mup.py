"""mutransfer.compat.mup against the real microsoft/mup 1.0: same numbers, and mup's faults fixed.

Each comparison builds the same model with both libraries from the same seed and compares what
mup promises: the init (every tensor, so its std too), the LR and weight decay of every
parameter, the optimizer's group structure (so state dicts are interchangeable) and 10 training
steps' losses. Where mup is wrong a test shows mup's behaviour beside ours.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mutransfer as mt
from mutransfer.compat import mup as ours

real = pytest.importorskip("mup")

VOCAB, SEQ = 32, 8


# ----------------------------------------------------------------------------------- models
def mlp(lib, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(6, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        lib.MuReadout(width, 4, output_mult=2.0),
    )


def cnn(lib, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.ConvTranspose2d(width, width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        lib.MuReadout(width, 4),
    )


class Block(nn.Module):
    """Pre-LN block; the attention's 1/d_head is the model's own code, as with mup."""

    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h, hd = self.ln1(x), d // self.heads
        q, k, v = (m(h).view(b, t, self.heads, hd).transpose(1, 2) for m in self.qkv())
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / hd)
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))

    def qkv(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        return self.q, self.k, self.v


class LM(nn.Module):
    """Embedding, a raw positional parameter, two blocks, a (tied or untied) µP readout."""

    def __init__(self, lib, d: int, tied: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.randn(1, SEQ, d) * 0.02)
        self.layers = nn.ModuleList([Block(d), Block(d)])
        self.ln = nn.LayerNorm(d)
        if tied:
            self.out = lib.MuSharedReadout(self.embed.weight, bias=bias)
        else:
            self.out = lib.MuReadout(d, VOCAB, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos[:, : x.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.out(self.ln(h))


def build(lib, factory, width: int = 32, base: int = 8, seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = factory(lib, width, **kw)
    with torch.device("meta"):
        base_model = factory(lib, base, **kw)
    lib.set_base_shapes(model, base_model)
    return model


OPTIMIZERS = {
    "adam": lambda lib, params: lib.MuAdam(params, lr=1e-2),
    "adamw": lambda lib, params: lib.MuAdamW(params, lr=1e-2, weight_decay=0.1),
    "sgd": lambda lib, params: lib.MuSGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3),
}


# ---------------------------------------------------------------------------------- helpers
def per_param(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]
    }


def group_sizes(opt: torch.optim.Optimizer) -> list[int]:
    return [len(g["params"]) for g in opt.param_groups]


def batch(kind: str, step: int):
    g = torch.Generator().manual_seed(100 + step)
    if kind == "mlp":
        return torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
    if kind == "cnn":
        return torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
    tokens = torch.randint(0, VOCAB, (4, SEQ + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def train(model: nn.Module, opt: torch.optim.Optimizer, kind: str, steps: int = 10) -> list[float]:
    losses = []
    x, y = batch(kind, 0)  # one batch, memorised: the loss must fall
    for _ in range(steps):
        loss = F.cross_entropy(model(x).flatten(0, -2), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_same_lrs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        for x, y in zip(a[name], b[name], strict=True):
            assert x == pytest.approx(y, rel=1e-12, abs=0.0), (name, a[name], b[name])


# -------------------------------------------------------------------------- same numbers
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("kind", ["mlp", "cnn", "lm"])
def test_same_init_lrs_and_losses_as_mup(kind: str, opt_name: str) -> None:
    factory = {"mlp": mlp, "cnn": cnn, "lm": LM}[kind]
    theirs_model, ours_model = build(real, factory), build(ours, factory)
    for (name, p), q in zip(theirs_model.named_parameters(), ours_model.parameters(), strict=True):
        assert torch.equal(p, q), name  # hence equal std per tensor
    theirs_opt = OPTIMIZERS[opt_name](real, theirs_model.parameters())
    ours_opt = OPTIMIZERS[opt_name](ours, ours_model.parameters())
    assert_same_lrs(per_param(theirs_model, theirs_opt), per_param(ours_model, ours_opt))
    assert group_sizes(ours_opt) == group_sizes(theirs_opt)
    theirs_losses = train(theirs_model, theirs_opt, kind)
    ours_losses = train(ours_model, ours_opt, kind)
    assert ours_losses == pytest.approx(theirs_losses, rel=1e-5, abs=1e-6)
    assert ours_losses[-1] < ours_losses[0]


def test_lrs_are_the_mup_table() -> None:
    """Not only equal to mup: the values are µP's (hidden LR / m_in under Adam, m = 4)."""
    model = build(ours, LM)
    lrs = per_param(model, ours.MuAdam(model.parameters(), lr=1.0, weight_decay=0.5))
    assert lrs["layers.0.q.weight"] == (0.25, 2.0)
    assert lrs["layers.0.proj.weight"] == (0.25, 2.0)  # fan-in 4d: m_in = 4 as well
    assert lrs["embed.weight"] == lrs["out.weight"] == lrs["pos"] == (1.0, 0.5)
    assert model.out.width_mult() == 4.0
    assert ours.plan_of(model)["out.weight"].multiplier == 1 / 4


def test_optimizer_state_dict_moves_between_mup_and_ours() -> None:
    theirs_model, ours_model = build(real, LM), build(ours, LM)
    theirs_opt = real.MuAdamW(theirs_model.parameters(), lr=1e-2)
    train(theirs_model, theirs_opt, "lm", steps=2)
    ours_model.load_state_dict(theirs_model.state_dict())
    ours_opt = ours.MuAdamW(ours_model.parameters(), lr=1e-2)
    ours_opt.load_state_dict(copy.deepcopy(theirs_opt.state_dict()))  # torch shares tensors
    assert all("lr_scale" not in g for g in theirs_opt.state_dict()["param_groups"])
    ours.check_optimizer(ours_opt)  # the plan's lr_scale is back after loading mup's groups
    assert ours.scaled_lrs(ours_opt, 1.0)[0] == 0.25
    assert train(ours_model, ours_opt, "lm", 3) == pytest.approx(
        train(theirs_model, theirs_opt, "lm", 3), rel=1e-5
    )


INITS = {
    "normal_": lambda lib, t: lib.init.normal_(t, std=0.02),
    "uniform_": lambda lib, t: lib.init.uniform_(t, -0.1, 0.1),
    "trunc_normal_": lambda lib, t: lib.init.trunc_normal_(t, std=0.02),
    "xavier_uniform_": lambda lib, t: lib.init.xavier_uniform_(t),
    "xavier_normal_": lambda lib, t: lib.init.xavier_normal_(t, gain=2.0),
    "kaiming_normal_": lambda lib, t: lib.init.kaiming_normal_(t, a=0.1),
    "kaiming_uniform_fan_out": lambda lib, t: lib.init.kaiming_uniform_(t, mode="fan_out"),
}


@pytest.mark.parametrize("init", list(INITS))
def test_init_functions_draw_what_mup_draws(init: str) -> None:
    theirs_model, ours_model = build(real, mlp), build(ours, mlp)
    for name in ("0.weight", "2.weight", "4.weight"):  # input, hidden, readout
        p = dict(theirs_model.named_parameters())[name]
        q = dict(ours_model.named_parameters())[name]
        torch.manual_seed(1)
        INITS[init](real, p)
        torch.manual_seed(1)
        INITS[init](ours, q)
        assert torch.equal(p, q), name


def test_init_functions_accept_a_data_view() -> None:
    model = build(ours, mlp)
    hidden = model[2].weight
    ours.init.normal_(hidden.data, std=1.0)  # mup needs the parameter itself (p.infshape)
    assert hidden.std().item() == pytest.approx(0.5, rel=0.1)  # 1/sqrt(m_in), m_in = 4
    with pytest.raises(AssertionError):
        real.init.normal_(build(real, mlp)[2].weight.data)


# ------------------------------------------------------------------ where mup is wrong
def test_tied_readout_keeps_the_embedding_init_mup_issue_55() -> None:
    theirs_model = build(real, LM, tied=True)
    ours_model = build(ours, LM, tied=True)
    torch.manual_seed(0)
    untouched = LM(ours, 32, tied=True).embed.weight.detach()
    # mup multiplies the shared embedding by sqrt(width_mult) = 2: its std grows with width
    torch.testing.assert_close(theirs_model.embed.weight.detach(), 2.0 * untouched)
    assert torch.equal(ours_model.embed.weight.detach(), untouched)
    theirs = dict(theirs_model.named_parameters())
    for name, q in ours_model.named_parameters():
        if name != "embed.weight":
            assert torch.equal(theirs[name], q), name
    # with mup's √m undone, everything else (LRs, multiplier, training) is the same
    with torch.no_grad():
        theirs_model.embed.weight.div_(2.0)
    theirs_opt = real.MuAdam(theirs_model.parameters(), lr=1e-2)
    ours_opt = ours.MuAdam(ours_model.parameters(), lr=1e-2)
    assert_same_lrs(per_param(theirs_model, theirs_opt), per_param(ours_model, ours_opt))
    assert train(ours_model, ours_opt, "lm") == pytest.approx(
        train(theirs_model, theirs_opt, "lm"), rel=1e-5
    )


def test_shared_readout_bias_has_the_vocabulary_size() -> None:
    x = batch("lm", 0)[0]
    theirs_model = build(real, LM, width=16, tied=True, bias=True)
    assert theirs_model.out.bias.shape == (16,)  # mup: the embedding dim, not the vocabulary
    with pytest.raises(RuntimeError, match="must match"):
        theirs_model(x)  # so mup's readout cannot run unless vocab == d
    ours_model = build(ours, LM, width=16, tied=True, bias=True)
    assert ours_model.out.bias.shape == (VOCAB,)
    assert ours_model(x).shape == (4, SEQ, VOCAB)


def test_deepcopy_keeps_the_parametrization() -> None:
    theirs_copy = copy.deepcopy(build(real, LM))
    with pytest.raises(AssertionError, match="infshape"):
        real.MuAdam(theirs_copy.parameters(), lr=1e-2)
    model = build(ours, LM)
    clone = copy.deepcopy(model)
    expected = per_param(model, ours.MuAdam(model.parameters(), lr=1e-2))
    assert per_param(clone, ours.MuAdam(clone.parameters(), lr=1e-2)) == expected
    x = batch("lm", 0)[0]
    assert torch.equal(clone(x), model(x))


def test_averaged_model_ema_runs() -> None:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    x = batch("lm", 0)[0]
    theirs_ema = AveragedModel(build(real, LM), multi_avg_fn=get_ema_multi_avg_fn(0.9))
    with pytest.raises(AssertionError, match="set_base_shapes"):
        theirs_ema(x)  # the copy's readout lost weight.infshape
    model = build(ours, LM)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    assert torch.equal(ema(x), model(x))
    opt = ours.MuAdam(model.parameters(), lr=1e-2)
    train(model, opt, "lm", steps=2)
    ema.update_parameters(model)
    assert ema(x).shape == model(x).shape
    assert ours.infshape_of(ema.module.layers[0].q.weight).width_mult() == 4.0


def test_to_empty_from_meta() -> None:
    with torch.device("meta"):
        theirs_model = LM(real, 32)
    real.set_base_shapes(theirs_model, LM(real, 8))
    theirs_model.to_empty(device="cpu")
    with pytest.raises(AssertionError, match="infshape"):
        real.MuAdam(theirs_model.parameters(), lr=1e-2)

    with torch.device("meta"):
        model, base = LM(ours, 32), LM(ours, 8)
    ours.set_base_shapes(model, base)
    model.to_empty(device="cpu")
    for name, p in model.named_parameters():  # an init written against mup.init
        if p.dim() >= 2:
            ours.init.normal_(p, std=0.02)
        else:
            nn.init.zeros_(p) if name.endswith("bias") else nn.init.ones_(p)
    assert model.layers[0].q.weight.std().item() == pytest.approx(0.01, rel=0.1)  # 0.02/√4
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.1)
    opt = ours.MuAdam(model.parameters(), lr=1e-2)
    assert per_param(model, opt)["layers.1.fc.weight"] == (1e-2 / 4, 0.0)
    losses = train(model, opt, "lm", steps=5)
    assert losses[-1] < losses[0]


def test_pickled_model_needs_set_base_shapes_again() -> None:
    model = build(ours, LM)
    x = batch("lm", 0)[0]
    loaded = pickle.loads(pickle.dumps(model))
    assert torch.equal(loaded(x), model(x))  # the readout multiplier is a float on the module
    with pytest.raises(ours.MupCompatError, match="rescale_params=False"):
        ours.MuAdam(loaded.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in loaded.named_parameters()}
    with pytest.raises(RuntimeError, match="rescale_params=False"):
        ours.set_base_shapes(loaded, LM(ours, 8))  # rescaling twice would double the scales
    ours.set_base_shapes(loaded, LM(ours, 8), rescale_params=False)
    for name, p in loaded.named_parameters():
        assert torch.equal(p, before[name]), name
    assert per_param(loaded, ours.MuAdam(loaded.parameters(), lr=1e-2)) == per_param(
        model, ours.MuAdam(model.parameters(), lr=1e-2)
    )


def test_dataparallel_prefixes(tmp_path: Path) -> None:
    # a model wrapped in DataParallel against an unwrapped base works in both libraries
    torch.manual_seed(0)
    theirs_dp = nn.DataParallel(LM(real, 32))
    real.set_base_shapes(theirs_dp, LM(real, 8))
    torch.manual_seed(0)
    ours_dp = nn.DataParallel(LM(ours, 32))
    ours.set_base_shapes(ours_dp, LM(ours, 8))
    assert_same_lrs(
        per_param(theirs_dp, real.MuAdam(theirs_dp.parameters(), lr=1e-2)),
        per_param(ours_dp, ours.MuAdam(ours_dp.parameters(), lr=1e-2)),
    )
    x = batch("lm", 0)[0]
    assert torch.equal(ours_dp(x), theirs_dp(x))
    # base shapes saved from the wrapped model, used on an unwrapped one: mup strips the
    # *characters* of "module." (str.strip), so "module.embed.weight" becomes "bed.weight"
    path = str(tmp_path / "dp.bsh")
    real.save_base_shapes(theirs_dp, path)
    assert "module.embed.weight" in Path(path).read_text()
    with pytest.raises(AssertionError, match="bed.weight"):
        real.set_base_shapes(LM(real, 32), path)
    model = ours.set_base_shapes(LM(ours, 32), path)
    assert per_param(model, ours.MuAdam(model.parameters(), lr=1.0))["layers.0.q.weight"][0] == 0.25


def test_onecycle_keeps_the_ratios_with_scaled_lrs() -> None:
    theirs_model, model = build(real, LM), build(ours, LM)
    theirs_opt = real.MuAdam(theirs_model.parameters(), lr=1e-2)
    torch.optim.lr_scheduler.OneCycleLR(theirs_opt, max_lr=1e-2, total_steps=10)
    assert len({g["lr"] for g in theirs_opt.param_groups if g["params"]}) == 1  # µP erased

    opt = ours.MuAdam(model.parameters(), lr=1e-2)
    erased = ours.MuAdam(model.parameters(), lr=1e-2)
    torch.optim.lr_scheduler.OneCycleLR(erased, max_lr=1e-2, total_steps=10)
    with pytest.raises(mt.PlanError, match="scaled_lrs"):
        ours.check_optimizer(erased)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ours.scaled_lrs(opt, 1e-2), total_steps=10)
    ours.check_optimizer(opt)
    lrs = per_param(model, opt)
    assert lrs["layers.0.q.weight"][0] == pytest.approx(lrs["embed.weight"][0] / 4)


# ----------------------------------------------------------------------------- base shapes
def test_bsh_files_round_trip_between_mup_and_ours(tmp_path: Path) -> None:
    theirs_file, ours_file = tmp_path / "theirs.bsh", tmp_path / "ours.bsh"
    with torch.device("meta"):
        base, delta = LM(real, 8), LM(real, 12)
    real.make_base_shapes(base, delta, savefile=str(theirs_file))
    with torch.device("meta"):
        base, delta = LM(ours, 8), LM(ours, 12)
    ours.make_base_shapes(base, delta, savefile=str(ours_file))
    assert ours_file.read_text() == theirs_file.read_text()  # byte for byte
    theirs_loaded = real.load_base_shapes(str(ours_file))
    assert {k: v.base_shape() for k, v in ours.load_base_shapes(theirs_file).items()} == {
        k: v.base_shape() for k, v in theirs_loaded.items()
    }

    torch.manual_seed(0)
    theirs_model = real.set_base_shapes(LM(real, 32), str(ours_file))
    torch.manual_seed(0)
    ours_model = ours.set_base_shapes(LM(ours, 32), str(theirs_file))
    for p, q in zip(theirs_model.parameters(), ours_model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert_same_lrs(
        per_param(theirs_model, real.MuSGD(theirs_model.parameters(), lr=0.1)),
        per_param(ours_model, ours.MuSGD(ours_model.parameters(), lr=0.1)),
    )
    # saving from a parametrized model gives the same file as mup's
    real.save_base_shapes(theirs_model, str(theirs_file))
    ours.save_base_shapes(ours_model, str(ours_file))
    assert ours_file.read_text() == theirs_file.read_text()


def test_base_at_model_width_needs_delta() -> None:
    """A model at base width: with delta the width dims are known (LR scales 1 but roles right)."""
    torch.manual_seed(0)
    model = ours.set_base_shapes(mlp(ours, 8), mlp(ours, 8), delta=mlp(ours, 16))
    assert ours.plan_of(model)["2.weight"].role == "hidden"
    lrs = per_param(model, ours.MuAdam(model.parameters(), lr=1.0))
    assert set(lrs.values()) == {(1.0, 0.0)}
    sp = ours.set_base_shapes(mlp(ours, 8), None)  # mup's "SP" setup: nothing scales
    assert sp[4].width_mult() == 1.0
    assert ours.plan_of(sp)["2.weight"].lr_scale == 1.0


# ---------------------------------------------------------------------------------- errors
def test_plain_linear_readout_is_refused_like_mup() -> None:
    def plain(lib, width):
        return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 4))

    with pytest.raises(AssertionError, match="MuReadout"):
        build(real, plain)
    with pytest.raises(ours.MupCompatError, match="'2' is an nn.Linear .* not a MuReadout"):
        build(ours, plain)


def test_parameter_of_no_parametrized_model() -> None:
    stray = nn.Linear(4, 4)
    with pytest.raises(ours.MupCompatError, match=r"belongs to no model .* set_base_shapes"):
        ours.MuAdam(stray.parameters(), lr=1e-2)
    with pytest.raises(ours.MupCompatError, match="set_base_shapes"):
        ours.MuReadout(4, 2)(torch.randn(1, 4))


def test_name_mismatch_is_explained() -> None:
    with pytest.raises(ours.MupCompatError, match=r"missing from the base: .*2\.weight"):
        ours.set_base_shapes(mlp(ours, 16), {"0.weight": [8, 6]})


def test_readouts_mup_cannot_scale_warn_and_keep_mup_lrs() -> None:
    class RawReadout(nn.Module):
        def __init__(self, lib, width: int) -> None:
            super().__init__()
            self.inp = nn.Linear(6, width)
            self.w_out = nn.Parameter(torch.randn(4, width) / width)

        def forward(self, x):
            return F.linear(self.inp(x), self.w_out)

    def conv_decoder(lib, width: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.ConvTranspose2d(width, 3, 3))

    cases = [(RawReadout, "'w_out' .RawReadout."), (conv_decoder, "'2.weight' .ConvTranspose2d.")]
    for factory, name in cases:
        with pytest.warns(UserWarning, match=f"{name} maps width .* no 1/width output multiplier"):
            model = build(ours, factory)
        theirs = build(real, factory)
        for opt in ("adam", "sgd"):
            assert_same_lrs(
                per_param(theirs, OPTIMIZERS[opt](real, theirs.parameters())),
                per_param(model, OPTIMIZERS[opt](ours, model.parameters())),
            )
        for p, q in zip(theirs.parameters(), model.parameters(), strict=True):
            assert torch.equal(p, q)


# ------------------------------------------------------------------ mup's names and p.infshape
def _defined_names(module) -> set[str]:
    """The public names a mup module defines itself (not the ones it merely imports)."""
    return {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and str(getattr(v, "__module__", "")).startswith("mup")
    }


@pytest.mark.parametrize(
    "submodule", ["", ".shape", ".infshape", ".init", ".layer", ".optim", ".coord_check"]
)
def test_every_name_mup_defines_exists(submodule: str) -> None:
    import importlib

    theirs = importlib.import_module(f"mup{submodule}")
    mine = importlib.import_module(f"mutransfer.compat.mup{submodule}")
    names = _defined_names(theirs) | ({"FDICT"} if submodule == ".coord_check" else set())
    assert names, "mup's module defines nothing? the comparison would be vacuous"
    missing = sorted(n for n in names if not hasattr(mine, n))
    assert not missing
    for n in names:  # a function stays a function, a class a class
        assert callable(getattr(mine, n)) == callable(getattr(theirs, n)), n
        assert isinstance(getattr(mine, n), type) == isinstance(getattr(theirs, n), type), n


def test_p_infshape_reads_as_under_mup() -> None:
    theirs, model = build(real, LM), build(ours, LM)
    for (name, p), q in zip(theirs.named_parameters(), model.parameters(), strict=True):
        mine = q.infshape
        assert [(d.base_dim, d.dim) for d in mine] == [(d.base_dim, d.dim) for d in p.infshape]
        assert mine.ninf() == p.infshape.ninf(), name
        assert mine.width_mult() == p.infshape.width_mult(), name
    assert hasattr(model.layers[0].q.weight, "infshape")
    assert not hasattr(nn.Linear(2, 2).weight, "infshape")  # as for a model mup never saw
    # and where mup's is gone, it still reads: a deepcopy (EMA), to_empty from meta
    clone = copy.deepcopy(model)
    assert clone.layers[1].fc.weight.infshape.width_mult() == 4.0
    assert not hasattr(copy.deepcopy(theirs).layers[1].fc.weight, "infshape")
    with torch.device("meta"):
        empty = LM(ours, 32)
    ours.set_base_shapes(empty, LM(ours, 8))
    empty.to_empty(device="cpu")
    assert empty.layers[0].q.weight.infshape.ninf() == 2


def test_model_code_that_reads_p_infshape_inits_as_under_mup() -> None:
    """A typical mup-era init: std / sqrt(fan-in width multiplier) for matrix-like weights."""

    def init(model: nn.Module) -> None:
        for p in model.parameters():
            if hasattr(p, "infshape") and p.infshape.ninf() == 2:
                nn.init.normal_(p, std=0.02 / p.infshape.width_mult() ** 0.5)

    theirs, model = build(real, LM), build(ours, LM)
    torch.manual_seed(5)
    init(theirs)
    torch.manual_seed(5)
    init(model)
    for p, q in zip(theirs.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert model.layers[0].q.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_muadam_on_the_parameters_of_a_model_no_longer_referenced() -> None:
    import gc

    theirs_params = list(build(real, LM).parameters())
    params = list(build(ours, LM).parameters())
    gc.collect()  # the models are gone; only their parameters are left
    theirs_opt = real.MuAdam(theirs_params, lr=1e-2, weight_decay=0.1)
    opt = ours.MuAdam(params, lr=1e-2, weight_decay=0.1)
    assert group_sizes(opt) == group_sizes(theirs_opt)
    for g, h in zip(opt.param_groups, theirs_opt.param_groups, strict=True):
        assert (g["lr"], g["weight_decay"]) == (h["lr"], h["weight_decay"])
        assert all(torch.equal(p, q) for p, q in zip(g["params"], h["params"], strict=True))
    assert params[4].infshape.width_mult() == 4.0  # layers.0.q.weight
    sgd = ours.MuSGD(params, lr=0.1)
    assert [g["lr"] for g in sgd.param_groups] == [
        g["lr"] for g in real.MuSGD(theirs_params, lr=0.1).param_groups
    ]


def test_apply_infshapes_as_under_mup() -> None:
    """mup's workaround for a deepcopy: apply the original's infshapes to the copy."""
    theirs = build(real, LM)
    theirs_copy = copy.deepcopy(theirs)
    real.apply_infshapes(theirs_copy, real.get_infshapes(theirs))
    model = build(ours, LM)
    plain = LM(ours, 32)  # never given to set_base_shapes
    ours.apply_infshapes(plain, ours.get_infshapes(model))
    assert_same_lrs(
        per_param(theirs_copy, real.MuAdam(theirs_copy.parameters(), lr=1e-2)),
        per_param(plain, ours.MuAdam(plain.parameters(), lr=1e-2)),
    )
    assert plain.out.width_mult() == theirs_copy.out.width_mult() == 4.0
    # mup's own InfShape objects are accepted too (e.g. from mup.load_base_shapes)
    other = LM(ours, 32)
    ours.apply_infshapes(other, real.get_infshapes(theirs))
    assert ours.plan_of(other)["layers.0.q.weight"].lr_scale == 0.25
    missing = r"no infshape for pos, layers\.0\.ln1\.weight, .* \.\.\. \(infshapes must name"
    with pytest.raises(ours.MupCompatError, match=missing):
        ours.apply_infshapes(LM(ours, 32), {"embed.weight": ours.get_infshapes(model)["pos"]})


def test_process_param_groups_as_under_mup() -> None:
    model = LM(ours, 8)
    ps = list(model.parameters())
    cases = [
        (ps, {"lr": 0.1}),
        (ps, {"lr": 0.1, "weight_decay": 0.01}),
        ([{"params": ps[:3], "lr": 1.0}, {"params": ps[3:], "weight_decay": 0.5}], {"lr": 0.1}),
    ]
    for params, kwargs in cases:
        mine = ours.process_param_groups(copy.copy(params), **kwargs)
        theirs = real.optim.process_param_groups(copy.deepcopy(params), **kwargs)
        assert [{k: v for k, v in g.items() if k != "params"} for g in mine] == [
            {k: v for k, v in g.items() if k != "params"} for g in theirs
        ]
        assert [len(g["params"]) for g in mine] == [len(g["params"]) for g in theirs]
    with pytest.raises(TypeError, match="no learning rate"):
        ours.process_param_groups(ps)


def test_lr_zero_is_accepted() -> None:
    model = build(ours, LM)
    for make in (ours.MuSGD, ours.MuAdam, ours.MuAdamW):
        opt = make(model.parameters(), lr=0.0)
        assert {g["lr"] for g in opt.param_groups} == {0.0}
        assert {g["lr_scale"] for g in opt.param_groups if g["params"]} != {1.0}  # plan's


def test_migration_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    path = Path(__file__).parents[1] / "examples" / "migrate_from_mup.py"
    result = runpy.run_path(str(path))["main"](steps=40)
    assert "hidden.weight" in capsys.readouterr().out  # the plan table is printed
    losses = result["losses"]
    assert losses[-1] < 0.8 * losses[0]
    assert result["ema_loss"] < losses[0]
    hidden, rest = result["lrs"][:2]  # OneCycleLR kept the µP ratio (m = 8) to the end
    assert hidden == pytest.approx(rest / 8)


def test_mup_module_layout_without_mup_or_pandas() -> None:
    """``from mup.x import y`` becomes ``from mutransfer.compat.mup.x import y``; importing the
    compat layer needs neither mup nor pandas."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mutransfer.compat import mup\n"
        "from mutransfer.compat.mup.optim import MuAdam, MuAdamW, MuSGD\n"
        "from mutransfer.compat.mup.layer import MuReadout, MuSharedReadout\n"
        "from mutransfer.compat.mup.shape import set_base_shapes, make_base_shapes\n"
        "from mutransfer.compat.mup.infshape import InfShape, InfDim\n"
        "from mutransfer.compat.mup.init import kaiming_normal_\n"
        "assert 'mup' not in sys.modules and 'pandas' not in sys.modules\n"
        "from mutransfer.compat.mup.coord_check import get_coord_data, plot_coord_data\n"
        "assert mup.coord_check.get_coord_data is mup.get_coord_data is get_coord_data\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
