"""Bad input gets a clear error naming the parameter and what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mutransfer as mt
from conftest import BASE_WIDTH, make_gpt, make_mlp, on_meta


def test_no_width_dimension_found() -> None:
    with pytest.raises(mt.RoleError, match="no width dimension found.*delta="):
        mt.parametrize(make_mlp(BASE_WIDTH), on_meta(make_mlp, BASE_WIDTH))


def test_parameter_missing_from_base() -> None:
    model = nn.Sequential(make_mlp(64), nn.Linear(5, 5))
    base = nn.Sequential(on_meta(make_mlp, BASE_WIDTH))
    # the extra Linear(5, 5) is a layer of a kind the base does not have
    with pytest.raises(mt.RoleError, match=r"layer '1' \(bias \[5\], weight \[5, 5\]\) matches no"):
        mt.parametrize(model, base)


def test_shape_changed_but_not_as_width() -> None:
    # the vocabulary (not a width) differs between the model and its base
    model = make_gpt(64, vocab_size=300)
    with pytest.raises(mt.RoleError, match=r"wte.weight.*dimension\(s\) \[0\] changed"):
        mt.parametrize(model, on_meta(make_gpt, 32))


def test_shape_changed_where_delta_says_fixed() -> None:
    model = make_mlp(64, classes=7)
    with pytest.raises(mt.RoleError, match=r"'4.weight': dimension 0 is 7 but 5 in the base"):
        mt.parametrize(model, on_meta(make_mlp, 32), delta=on_meta(make_mlp, 64))


def test_role_override_matching_nothing() -> None:
    with pytest.raises(mt.RoleError, match=r"pattern '\*.lm_head.weight' matches no parameter"):
        mt.parametrize(make_mlp(64), on_meta(make_mlp, 32), roles={"*.lm_head.weight": "output"})


def test_unknown_role_and_layout_names() -> None:
    with pytest.raises(mt.RoleError, match="unknown role 'readout'"):
        mt.parametrize(make_mlp(64), on_meta(make_mlp, 32), roles={"4.weight": "readout"})
    with pytest.raises(mt.RoleError, match="unknown layout 'transposed'"):
        mt.parametrize(make_mlp(64), on_meta(make_mlp, 32), layouts={"4.weight": "transposed"})


def test_unknown_optimizer_family() -> None:
    with pytest.raises(
        mt.UnknownOptimizerError,
        match="'rmsprop'.*known families: adafactor, adam, lion, muon, sgd",
    ):
        mt.parametrize(make_mlp(64), on_meta(make_mlp, 32), optimizer=torch.optim.RMSprop)


class RawReadout(nn.Module):
    """A model whose readout is a raw parameter used as ``h @ W``: (width, classes)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.w_out = nn.Parameter(torch.randn(width, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.inp(x)) @ self.w_out


def test_raw_parameter_needs_a_layout_and_then_gets_the_right_role() -> None:
    with pytest.raises(mt.RoleError, match=r"'w_out'.*ambiguous.*layouts=\{'w_out': 'in,out'\}"):
        mt.parametrize(RawReadout(64), on_meta(RawReadout, 16))
    plan = mt.parametrize(RawReadout(64), on_meta(RawReadout, 16), layouts={"w_out": "in,out"})
    assert plan["w_out"].role == "output"
    assert plan["w_out"].m_in == 4


def test_width_factory_needs_base_width() -> None:
    with pytest.raises(TypeError, match="base_width="):
        mt.parametrize(make_mlp(64), make_mlp)
    plan = mt.parametrize(make_mlp(64), make_mlp, base_width=16)
    assert plan["2.weight"].m_in == 4


def test_base_given_as_shapes() -> None:
    shapes = {n: list(p.shape) for n, p in make_mlp(16).named_parameters()}
    plan = mt.parametrize(make_mlp(64), shapes, init=False)
    assert plan["4.weight"].role == "output"
    with pytest.raises(TypeError, match="mapping must map parameter names to shapes"):
        mt.parametrize(make_mlp(64), {"0.weight": "big"})


def test_attention_base_head_dim_unknown_from_shapes() -> None:
    shapes = {n: list(p.shape) for n, p in on_meta(make_gpt, 32).named_parameters()}
    with pytest.raises(mt.RoleError, match="base_head_dim="):
        mt.parametrize(make_gpt(64), shapes)
    plan = mt.parametrize(make_gpt(64), shapes, base_head_dim=16)
    assert next(iter(plan.attention.values())).base_head_dim == 16


def test_plan_used_with_a_model_of_another_width() -> None:
    plan = mt.parametrize(make_mlp(64), on_meta(make_mlp, 16))
    with pytest.raises(mt.PlanError, match=r"'0.weight' has shape \[128, 12\].*\[64, 12\]"):
        plan.param_groups(1e-3, model=make_mlp(128))


def test_bad_learning_rate() -> None:
    plan = mt.parametrize(make_mlp(64), on_meta(make_mlp, 16))
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        plan.param_groups(float("nan"))


def test_unknown_preset_and_constant() -> None:
    with pytest.raises(ValueError, match="unknown rules preset 'mu-p'.*mup"):
        mt.parametrize(make_mlp(64), on_meta(make_mlp, 16), rules="mu-p")
    with pytest.raises(TypeError, match="unknown parametrize.*output_mult"):
        mt.parametrize(make_mlp(64), on_meta(make_mlp, 16), output_mult=2.0)
