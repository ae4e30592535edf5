"""``mutransfer.compat.mup.coord_check`` against the real microsoft/mup 1.0: the same DataFrame.

Every comparison runs mup's ``get_coord_data`` and ours on the same models (built by each
library from the same seed) and data, from the same global RNG state, and checks the frames
(columns, rows, dtypes, values within 1e-6) and the global RNG state they leave behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.compat import mup as ours
from mutransfer.compat.mup import coord_check as ours_cc
from test_compat_mup import LM, Block, batch, mlp

real = pytest.importorskip("mup")
pd = pytest.importorskip("pandas")
from mup import coord_check as real_cc  # noqa: E402  (needs mup, skipped above without it)

ALL_STATS = {name: name for name in ours_cc.FDICT}


# ----------------------------------------------------------------------------------- models
def dropout_mlp(lib, width: int) -> nn.Sequential:
    """An MLP whose dropout makes every forward pass draw from the global RNG."""
    return nn.Sequential(
        nn.Linear(6, width),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(width, width),
        nn.ReLU(),
        lib.MuReadout(width, 4),
    )


class Pair(nn.Module):
    """Returns a tuple holding a nested tuple, as attention blocks often do."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h = self.lin(x)
        return h, (2 * h, torch.relu(h))


class Named(nn.Module):
    """Returns a dict holding a list, as Hugging Face modules return ModelOutputs."""

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return {"h": torch.tanh(x), "parts": [x[:, :2], x[:, 2:]]}


class Structured(nn.Module):
    def __init__(self, lib, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(6, width)
        self.pair = Pair(width)
        self.named = Named()
        self.out = lib.MuReadout(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, (double, _) = self.pair(self.inp(x))
        return self.out(self.named(h + double)["h"])


class DictLM(nn.Module):
    """Hugging Face's calling convention: ``model(**batch)`` returns ``{"loss", "logits"}``."""

    def __init__(self, lib, width: int) -> None:
        super().__init__()
        self.lm = LM(lib, width)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.lm(input_ids)
        return {"loss": F.cross_entropy(logits.flatten(0, 1), labels.flatten()), "logits": logits}


class WideVocab(nn.Module):
    """A transformer whose logits have 2**20 elements (8 × 64 tokens × 2048)."""

    vocab = 2048

    def __init__(self, lib, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(self.vocab, width)
        self.block = Block(width)
        self.out = lib.MuReadout(width, self.vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(self.embed(x)))


def lazy(lib, factory, width: int, base: int = 8) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        model = factory(lib, width)
        with torch.device("meta"):
            base_model = factory(lib, base)
        return lib.set_base_shapes(model, base_model)

    return make


def models_of(lib, factory, widths, base: int = 8) -> dict[int, Callable[[], nn.Module]]:
    return {w: lazy(lib, factory, w, base) for w in widths}


def mlp_batches(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch("mlp", i) for i in range(n)]


def lm_batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x, y.flatten()) for x, y in (batch("lm", i) for i in range(n))]


# ---------------------------------------------------------------------------------- helpers
def run(cc, models, data, **kwargs) -> tuple[Any, torch.Tensor]:
    """``cc.get_coord_data`` from a fixed global RNG state; the frame and the state after."""
    kwargs.setdefault("show_progress", False)
    kwargs.setdefault("cuda", False)
    torch.manual_seed(1234)
    df = cc.get_coord_data(models, data, **kwargs)
    return df, torch.get_rng_state()


def compare(factory, data, widths=(16, 32), base: int = 8, **kwargs) -> Any:
    """Run both libraries; assert the same frame and the same RNG state after; return ours."""
    theirs, theirs_rng = run(real_cc, models_of(real, factory, widths, base), data, **kwargs)
    mine, mine_rng = run(ours_cc, models_of(ours, factory, widths, base), data, **kwargs)
    assert_same_frame(mine, theirs)
    assert torch.equal(mine_rng, theirs_rng), "the global RNG state differs from mup's"
    return mine


def assert_same_frame(mine: Any, theirs: Any) -> None:
    assert list(mine.columns) == list(theirs.columns)
    assert len(mine) == len(theirs) > 0
    pd.testing.assert_frame_equal(
        mine.reset_index(drop=True),
        theirs.reset_index(drop=True),
        check_exact=False,
        rtol=1e-6,
        atol=0.0,
    )


# ---------------------------------------------------------------------- the same frame
def test_default_frame_is_mups_with_dropout_and_the_root_row() -> None:
    df = compare(dropout_mlp, mlp_batches(), widths=(64, 16, 32))  # mup keeps the dict order
    assert list(df.columns) == ["width", "module", "t", "l1", "optimizer", "lr"]
    assert list(dict.fromkeys(df["width"])) == [64, 16, 32]
    assert "" in set(df["module"])  # the root (an nn.Sequential) is recorded, as in mup
    assert not any(":" in m for m in df["module"])  # no update rows
    assert set(df["optimizer"]) == {"sgd"} and set(df["lr"]) == {0.1}


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_every_statistic_input_and_param_dicts_two_seeds(optimizer: str) -> None:
    df = compare(
        LM,
        lm_batches(),
        optimizer=optimizer,
        nseeds=2,
        flatten_output=True,
        output_fdict=ALL_STATS,
        input_fdict={"custom": lambda x: x.float().abs().max()},  # token ids are integers
        param_fdict={"std": "std"},
        filter_module_by_name=lambda n: n in ("", "embed", "layers.1.fc", "out"),
    )
    assert {"l1", "l2", "covoffdiagl2", "custom", "std"} <= set(df.columns)
    assert {"embed:in[0]", "out:param[weight]", ":param[pos]"} <= set(df["module"])


def test_tuple_and_dict_outputs_recorded_as_mup_records_them() -> None:
    df = compare(Structured, mlp_batches(), nsteps=2, output_fdict={"l1": "l1", "l2": "l2"})
    names = set(df["module"])
    assert {"pair:out[0]", "pair:out[1][0]", "pair:out[1][1]"} <= names
    assert {"named:out[h]", "named:out[parts][0]", "named:out[parts][1]"} <= names
    assert "pair" not in names and "named" not in names


def test_dict_in_out() -> None:
    data = [{"input_ids": x, "labels": y} for x, y in (batch("lm", i) for i in range(3))]
    df = compare(DictLM, data, dict_in_out=True, optimizer="adam")
    assert {":out[loss]", ":out[logits]"} <= set(df["module"])  # the root's dict output


def test_mup_false_and_filters() -> None:
    compare(
        dropout_mlp,
        mlp_batches(),
        mup=False,
        optimizer="adam",
        lr=1e-2,
        filter_trainable_by_name=lambda n: not n.startswith("0."),
        filter_module_by_name=lambda n: n != "2",
    )


@pytest.mark.parametrize("lossfn", ["mse", "nll"])
def test_other_losses(lossfn: str) -> None:
    compare(mlp, mlp_batches(), lossfn=lossfn, nsteps=2)


# ------------------------------------------------------------ one width, lr=0, fix_data
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_width_and_lr_zero(optimizer: str) -> None:
    df = compare(mlp, mlp_batches(), widths=(32,), lr=0.0, optimizer=optimizer)
    assert set(df["width"]) == {32} and set(df["lr"]) == {0.0}
    by_t = df.pivot_table(index="module", columns="t", values="l1")
    # LR 0: no update, the same batch: every step records the same values
    assert (by_t[1] == by_t[2]).all() and (by_t[2] == by_t[3]).all()


def first_layer_inputs(df: Any, width: int) -> list[float]:
    rows = df[(df.module == "0:in[0]") & (df.width == width)].sort_values("t")
    return rows["l1"].tolist()


def test_fix_data_false_draws_a_new_batch_per_step() -> None:
    data = mlp_batches(4)
    expected = [x.abs().mean().item() for x, _ in data[:3]]
    kw = {"input_fdict": {"l1": "l1"}, "filter_module_by_name": lambda n: n == "0"}
    fresh = compare(mlp, data, fix_data=False, **kw)
    for width in (16, 32):
        assert first_layer_inputs(fresh, width) == pytest.approx(expected, rel=1e-6)
    fixed = compare(mlp, data, **kw)  # the default: the first batch at every step
    assert first_layer_inputs(fixed, 16) == pytest.approx([expected[0]] * 3, rel=1e-6)


def test_shuffling_loader_uses_the_rng_as_mup_does() -> None:
    """A shuffling DataLoader is iterated afresh per model (drawing from the global RNG), and
    dropout draws at every forward: same frame and same RNG state afterwards as mup."""
    g = torch.Generator().manual_seed(7)
    dataset = torch.utils.data.TensorDataset(
        torch.randn(32, 6, generator=g), torch.randint(0, 4, (32,), generator=g)
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True)
    compare(dropout_mlp, loader, fix_data=False, nseeds=2, optimizer="adam")
    compare(dropout_mlp, loader, nseeds=2)


def test_float32_rms_of_a_million_logits_matches_mup() -> None:
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, WideVocab.vocab, (8, 65), generator=g)
    data = [(tokens[:, :-1], tokens[:, 1:].flatten())]
    df = compare(
        WideVocab,
        data,
        widths=(32,),
        nsteps=2,
        optimizer="adam",
        flatten_output=True,
        output_fdict={"l2": "l2", "l1": "l1"},
        filter_module_by_name=lambda n: n == "out",
    )
    assert len(df) == 2
    assert all(math.isfinite(v) and v > 0 for v in df["l2"])


# --------------------------------------------------------------------- mup's helper names
@pytest.mark.filterwarnings("ignore:.*degrees of freedom")  # std of one element: nan
def test_statistics_helpers_match_mups() -> None:
    assert list(ours_cc.FDICT) == list(real_cc.FDICT)
    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (5,), (3, 7), (2, 3, 4)]:
        x = torch.randn(shape, generator=g)
        torch.testing.assert_close(ours_cc.cov(x), real_cc.cov(x), rtol=0, atol=0)
        torch.testing.assert_close(ours_cc.covoffdiag(x), real_cc.covoffdiag(x), rtol=0, atol=0)
        for name in ours_cc.FDICT:
            mine, theirs = ours_cc.FDICT[name](x).item(), real_cc.FDICT[name](x).item()
            assert mine == theirs or (math.isnan(mine) and math.isnan(theirs)), (name, shape)
    converted = ours_cc.convert_fdict({"a": "l2", "b": abs})
    assert converted["a"] is ours_cc.FDICT["l2"] and converted["b"] is abs
    with pytest.raises(ours.MupCompatError, match="unknown statistic 'l3'.*l1, l2"):
        ours_cc.convert_fdict({"x": "l3"})


def test_private_get_coord_data_with_an_optimizer_factory() -> None:
    """Code that calls mup's ``_get_coord_data`` with its own optimizer runs too."""

    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    frames = []
    for cc, lib in ((real_cc, real), (ours_cc, ours)):
        torch.manual_seed(0)
        frames.append(
            cc._get_coord_data(
                models_of(lib, mlp, (16, 32)), mlp_batches(), sgd, cuda=False, show_progress=False
            )
        )
    assert_same_frame(frames[1], frames[0])


# ------------------------------------------------------------------------------ plotting
def test_plot_defaults_are_mups(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    df, _ = run(ours_cc, models_of(ours, mlp, (16, 32, 64)), mlp_batches(), nseeds=2)
    path = tmp_path / "coord.png"
    fig = ours.plot_coord_data(df, save_to=str(path), suptitle="µP MLP")  # y='l1' by default
    try:
        assert f"coord check plot saved to {path}" in capsys.readouterr().out
        assert path.stat().st_size > 10_000
        axes = fig.axes
        assert [ax.get_title() for ax in axes] == ["t=1", "t=2", "t=3"]
        assert axes[0].get_ylabel() == "l1" and axes[1].get_ylabel() == ""
        assert axes[0].get_xscale() == axes[0].get_yscale() == "log"
        assert axes[0].xaxis.get_transform().base == 2
        labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
        assert labels == ["0", "1", "2", "3", "4"]  # numeric order, no root row
        assert axes[1].get_legend() is None
        line = axes[0].get_lines()[0]  # the mean over the two seeds
        first = df[(df.module == "0") & (df.t == 1)].groupby("width")["l1"].mean()
        assert list(line.get_ydata()) == pytest.approx(first.tolist())
    finally:
        plt.close(fig)
    fig = ours.plot_coord_data(df, name_contains="[34]", loglog=False, legend=False)
    try:
        assert fig.axes[0].get_xscale() == "linear" and fig.axes[0].get_legend() is None
        assert len(fig.axes[0].get_lines()) == 2
    finally:
        plt.close(fig)
    with pytest.raises(ours.MupCompatError, match="'l2' is not in the data.*output_fdict"):
        ours.plot_coord_data(df, y="l2")


# ------------------------------------------------------------------ mutransfer's verdict
def test_verdict_is_opt_in_and_leaves_mups_frame_and_rng_alone() -> None:
    models = models_of(ours, mlp, (32, 64, 128), base=32)
    kw = {"optimizer": "adam", "lr": 1e-2}
    plain, plain_rng = run(ours_cc, models, mlp_batches(), **kw)
    judged, judged_rng = run(ours_cc, models, mlp_batches(), verdict=True, **kw)
    assert "report" not in plain.attrs
    assert_same_frame(judged, plain)
    assert torch.equal(judged_rng, plain_rng)
    report = judged.attrs["report"]
    assert report.ok, report.summary()
    assert report.sizes == [32, 64, 128]
    with pytest.raises(ours.MupCompatError, match="two widths or more"):
        ours.get_coord_data(models_of(ours, mlp, (32,)), mlp_batches(), verdict=True)


# --------------------------------------------------------------------------------- errors
def test_errors_are_clear() -> None:
    models = models_of(ours, mlp, (16, 32))
    data = mlp_batches()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"optimizer": "lion"}, "optimizer must be 'sgd', 'adam' or 'adamw'"),
        ({"lossfn": "hinge"}, "lossfn must be one of xent, mse, nll"),
        ({"nsteps": 0}, "nsteps must be a positive integer"),
        ({"output_fdict": {"x": "l3"}}, "unknown statistic 'l3'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ours.MupCompatError, match=message):
            ours.get_coord_data(models, data, show_progress=False, **kwargs)
    with pytest.raises(TypeError, match="unexpected keyword.*nstep"):
        ours.get_coord_data(models, data, nstep=3)
    with pytest.raises(ours.MupCompatError, match="no batch for width 32.*one-shot iterator"):
        ours.get_coord_data(models, iter(data[:3]), fix_data=False, show_progress=False)
    with pytest.raises(ours.MupCompatError, match="returned int, not an nn.Module"):
        ours.get_coord_data({16: lambda: 3}, data, show_progress=False)
    with pytest.raises(ours.MupCompatError, match="no model passed to .*set_base_shapes"):
        ours.get_coord_data({16: lambda: mlp(ours, 16)}, data, show_progress=False)


def test_none_in_a_tuple_output_is_skipped_where_mup_fails() -> None:
    class MaybeAttention(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.lin = nn.Linear(width, width)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            return self.lin(x), None  # (output, attention weights not asked for)

    class Net(nn.Module):
        def __init__(self, lib, width: int) -> None:
            super().__init__()
            self.inp, self.att, self.out = nn.Linear(6, width), MaybeAttention(width), None
            self.out = lib.MuReadout(width, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.att(self.inp(x))[0])

    with pytest.raises(TypeError):
        run(real_cc, models_of(real, Net, (16,)), mlp_batches())
    df, _ = run(ours_cc, models_of(ours, Net, (16,)), mlp_batches())
    assert {"att:out[0]", "att.lin"} <= set(df["module"])
    assert not any(m.startswith("att:out[1]") for m in df["module"])
