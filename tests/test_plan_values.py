"""The plan's numbers match the µP tables of Tensor Programs V (Tables 3 and 8)."""

from __future__ import annotations

import math

import pytest
import torch

import mutransfer as mt
from conftest import BASE_WIDTH, make_gpt, make_mlp, on_meta

MULTS = [1, 2, 4, 8]


def expected_table8(role: str, m: float, family: str, base_fan_in: float) -> dict[str, float]:
    """Table 8 (explicit multipliers), normalised so that the base width equals SP."""
    std0 = 1 / math.sqrt(base_fan_in)
    if family == "adam":
        table = {
            "input": dict(init_std=std0, lr_scale=1, multiplier=1, eps_scale=1),
            "hidden": dict(
                init_std=std0 / math.sqrt(m), lr_scale=1 / m, multiplier=1, eps_scale=1 / m
            ),
            "output": dict(init_std=std0, lr_scale=1, multiplier=1 / m, eps_scale=1),
            "vector": dict(lr_scale=1, multiplier=1),
        }
    else:
        table = {
            "input": dict(init_std=std0, lr_scale=m, multiplier=1),
            "hidden": dict(init_std=std0 / math.sqrt(m), lr_scale=1, multiplier=1),
            "output": dict(init_std=std0, lr_scale=m, multiplier=1 / m),
            "vector": dict(lr_scale=m, multiplier=1),
        }
    return table[role]


@pytest.mark.parametrize("family", ["adam", "sgd"])
@pytest.mark.parametrize("mult", MULTS)
def test_mlp_explicit_plan_matches_table8(family: str, mult: int) -> None:
    width = BASE_WIDTH * mult
    model = make_mlp(width)
    delta = on_meta(make_mlp, 2 * BASE_WIDTH)
    plan = mt.parametrize(
        model,
        on_meta(make_mlp, BASE_WIDTH),
        "mup",
        family,
        mode="explicit",
        delta=delta,
        base_init="rules",
    )
    roles = {"0.weight": "input", "2.weight": "hidden", "4.weight": "output", "0.bias": "vector"}
    base_fan_in = {"0.weight": 12, "2.weight": BASE_WIDTH, "4.weight": BASE_WIDTH, "0.bias": 1}
    for name, role in roles.items():
        entry = plan[name]
        assert entry.role == role, name
        for key, value in expected_table8(role, mult, family, base_fan_in[name]).items():
            assert getattr(entry, key) == pytest.approx(value, rel=1e-12), (name, key)
    # the explicit readout multiplier is installed as a hook on the readout module
    if mult != 1:
        assert plan.module_scales["4"].multiplier == pytest.approx(1 / mult)


@pytest.mark.parametrize("family", ["adam", "sgd"])
@pytest.mark.parametrize("mult", MULTS)
def test_mlp_absorbed_plan_matches_table3(family: str, mult: int) -> None:
    """Absorbing the multipliers gives Table 3: readout init var ∝ 1/fan_in², LR ∝ 1/fan_in."""
    width = BASE_WIDTH * mult
    delta = on_meta(make_mlp, 2 * BASE_WIDTH)
    plan = mt.parametrize(
        make_mlp(width),
        on_meta(make_mlp, BASE_WIDTH),
        "mup",
        family,
        delta=delta,
        base_init="rules",
    )
    out = plan["4.weight"]
    assert out.multiplier == 1.0 and not plan.module_scales
    # σ²/fan_in² up to the base constant: std · fan_in is width-independent
    assert out.init_std * width == pytest.approx(math.sqrt(BASE_WIDTH), rel=1e-12)
    hidden = plan["2.weight"]
    assert hidden.init_std == pytest.approx(1 / math.sqrt(width), rel=1e-12)
    if family == "adam":
        assert out.lr_scale == pytest.approx(1 / mult)  # η/fan_in
        assert hidden.lr_scale == pytest.approx(1 / mult)
        assert plan["0.weight"].lr_scale == 1.0
    else:
        assert out.lr_scale == pytest.approx(1 / mult)  # η·m · (1/m)² = η/fan_in
        assert hidden.lr_scale == pytest.approx(1.0)
        assert plan["0.weight"].lr_scale == pytest.approx(mult)  # η·fan_out


@pytest.mark.parametrize("family", ["adam", "sgd"])
@pytest.mark.parametrize("mult", MULTS)
def test_gpt_plan_matches_table(family: str, mult: int) -> None:
    width = BASE_WIDTH * 2 * mult
    model = make_gpt(width)
    base = on_meta(make_gpt, BASE_WIDTH * 2)
    delta = on_meta(make_gpt, BASE_WIDTH * 4)
    plan = mt.parametrize(model, base, "mup", family, mode="explicit", delta=delta)
    # Table 8 per role: Adam divides the hidden LR by m; SGD multiplies input/vector/readout LRs
    adam = family == "adam"
    assert plan["wte.weight"].role == "input" and plan["wte.weight"].init_std == 1.0
    assert plan["wte.weight"].lr_scale == pytest.approx(1.0 if adam else mult)
    assert plan["wpe.weight"].role == "input"
    for name in ("blocks.0.attn.q.weight", "blocks.1.mlp.fc.weight"):
        assert plan[name].role == "hidden"
        assert plan[name].lr_scale == pytest.approx(1 / mult if adam else 1.0)
        assert plan[name].init_std == pytest.approx(1 / math.sqrt(width))
    # mlp.fc widens 4×: fan_out/fan_in is width-independent, so SGD's hidden LR stays 1
    assert plan["blocks.0.mlp.proj.weight"].init_std == pytest.approx(1 / math.sqrt(4 * width))
    assert plan["blocks.0.mlp.proj.weight"].lr_scale == pytest.approx(1 / mult if adam else 1.0)
    assert plan["blocks.0.ln1.weight"].role == "vector"
    assert plan["blocks.0.ln1.weight"].lr_scale == pytest.approx(1.0 if adam else mult)
    assert plan["lm_head.weight"].role == "output"
    assert plan["lm_head.weight"].multiplier == pytest.approx(1 / mult)
    assert plan["lm_head.weight"].lr_scale == pytest.approx(1.0 if adam else mult)
    assert plan["lm_head.weight"].init_std == pytest.approx(1 / math.sqrt(BASE_WIDTH * 2))
    head_dim = width // 2
    base_head_dim = BASE_WIDTH
    for att in plan.attention.values():
        assert att.scale == pytest.approx(math.sqrt(base_head_dim) / head_dim)
        assert model.get_submodule(att.module).scaling == pytest.approx(att.scale)


@pytest.mark.parametrize("family", ["adam", "sgd"])
def test_mup_equals_sp_at_base_width(family: str) -> None:
    """At base width µP is exactly SP: every number of the two plans agrees."""
    base = on_meta(make_gpt, 32)
    delta = on_meta(make_gpt, 64)
    mup = mt.parametrize(make_gpt(32), base, "mup", family, delta=delta, init=False)
    sp = mt.parametrize(make_gpt(32), base, "sp", family, delta=delta, init=False)
    for name, entry in mup.tensors.items():
        other = sp[name]
        for key in ("init_std", "lr_scale", "eps_scale", "wd_scale", "multiplier"):
            assert getattr(entry, key) == pytest.approx(getattr(other, key), rel=1e-12), (name, key)
    for name, att in mup.attention.items():
        assert att.scale == pytest.approx(sp.attention[name].scale)


def test_init_statistics_follow_the_plan() -> None:
    model = make_mlp(512)
    plan = mt.parametrize(model, on_meta(make_mlp, BASE_WIDTH), "mup", "adam", seed=0)
    for name, p in model.named_parameters():
        entry = plan[name]
        if entry.init == "normal" and p.numel() >= 256:  # smaller samples: too noisy to judge
            assert p.std().item() == pytest.approx(entry.init_std, rel=0.1), name
        elif entry.init == "zeros":
            assert torch.count_nonzero(p) == 0


def test_sp_plan_is_pytorch_like() -> None:
    plan = mt.parametrize(
        make_mlp(256), on_meta(make_mlp, BASE_WIDTH), "sp", "adam", init=False, base_init="rules"
    )
    assert {t.lr_scale for t in plan.tensors.values()} == {1.0}
    assert plan["4.weight"].init_std == pytest.approx(1 / math.sqrt(256))
    assert plan["2.weight"].init_std == pytest.approx(1 / math.sqrt(256))


def test_param_groups_are_few_and_carry_scales() -> None:
    model = make_gpt(64)
    plan = mt.parametrize(model, on_meta(make_gpt, 32), "mup", "adamw")
    groups = plan.param_groups(lr=0.01, weight_decay=0.1, eps=1e-6)
    distinct = {(t.lr_scale, t.wd_scale, t.eps_scale) for t in plan.tensors.values()}
    assert len(groups) == len(distinct)
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(model.parameters()))
    for group in groups:
        assert group["lr"] == pytest.approx(0.01 * group["lr_scale"])
        for name in group["param_names"]:
            assert plan[name].lr_scale == pytest.approx(group["lr_scale"])
            assert group["eps"] == pytest.approx(1e-6 * plan[name].eps_scale)
    opt = torch.optim.AdamW(groups, fused=False, foreach=True)
    assert len(opt.param_groups) == len(groups)


def test_no_decay_roles_and_independent_weight_decay() -> None:
    model = make_mlp(64)
    plan = mt.parametrize(
        model, on_meta(make_mlp, BASE_WIDTH), "mup", "adam", weight_decay="independent"
    )
    groups = plan.param_groups(lr=0.01, weight_decay=1e-4, no_decay=("vector", "scalar"))
    for group in groups:
        for name in group["param_names"]:
            if plan[name].role in ("vector", "scalar"):
                assert group["weight_decay"] == 0.0
            else:
                # AdamW decays by lr·wd per step: independent decay makes that product 1e-4
                assert group["lr"] * group["weight_decay"] == pytest.approx(
                    1e-4 * plan[name].wd_scale
                )


def test_user_defined_preset_in_a_few_lines() -> None:
    halfway = mt.Rules(
        name="halfway",
        families={"adam": {"hidden": mt.RoleRule.make(init=-0.5, lr=-0.5)}},
    )
    plan = mt.parametrize(make_mlp(64), on_meta(make_mlp, BASE_WIDTH), halfway, "adam", init=False)
    assert plan["2.weight"].lr_scale == pytest.approx(0.5)
    mt.register_preset(halfway)
    assert mt.get_rules("halfway") is halfway
