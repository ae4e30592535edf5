"""Depth rules (CompleteP, Depth-µP), u-µP, and the optimizer families beyond Adam and SGD."""

from __future__ import annotations

import math

import pytest
import torch

import mutransfer as mt
from conftest import BASE_WIDTH, make_gpt, make_mlp, on_meta
from mutransfer.optim import AdamAtan2
from test_equivalence import mlp_data


@pytest.mark.parametrize("preset,alpha", [("completep", 1.0), ("depth-mup", 0.5)])
def test_depth_rules_scale_branches_lr_and_eps(preset: str, alpha: float) -> None:
    model = make_gpt(64, depth=8)
    base = on_meta(make_gpt, 32, depth=2)
    plan = mt.parametrize(
        model, base, preset, "adamw", residual_branches=("blocks.*.attn", "blocks.*.mlp")
    )
    m_depth, m_width = 4.0, 2.0
    q = plan["blocks.5.attn.q.weight"]
    assert q.m_depth == m_depth
    assert q.lr_scale == pytest.approx(m_depth ** (alpha - 1) / m_width)
    assert q.eps_scale == pytest.approx(1 / (m_width * m_depth**alpha))
    assert plan["blocks.5.ln1.weight"].lr_scale == pytest.approx(m_depth ** (alpha - 1))
    # embeddings and readout live outside the blocks: no depth correction
    assert plan["wte.weight"].m_depth == 1.0 and plan["wte.weight"].lr_scale == 1.0
    for i in range(8):
        for branch in ("attn", "mlp"):
            scale = plan.module_scales[f"blocks.{i}.{branch}"]
            assert scale.kind == "output" and scale.multiplier == pytest.approx(m_depth**-alpha)
    wd = plan["blocks.5.attn.q.weight"].wd_scale
    assert wd == pytest.approx(m_width if alpha == 1.0 else 1.0)  # CompleteP: LR·λ width-free


def test_mup_has_no_depth_correction() -> None:
    plan = mt.parametrize(
        make_gpt(64, depth=8),
        on_meta(make_gpt, 32, depth=2),
        "mup",
        "adamw",
        residual_branches=("blocks.*.attn",),
    )
    assert not plan.module_scales  # µP alone leaves the residual branches at 1
    assert plan["blocks.7.attn.q.weight"].lr_scale == pytest.approx(0.5)


def test_independent_weight_decay_is_width_free_in_every_preset() -> None:
    for preset in ("mup", "completep"):
        plan = mt.parametrize(
            make_mlp(128),
            on_meta(make_mlp, BASE_WIDTH),
            preset,
            "adam",
            weight_decay="independent",
            init=False,
        )
        assert {t.wd_scale for t in plan.tensors.values()} == {1.0}


def test_muon_lion_adafactor_tables() -> None:
    base = on_meta(make_mlp, BASE_WIDTH)
    model = make_mlp(128)
    muon = mt.parametrize(model, base, "mup", torch.optim.Muon, init=False)
    assert muon.family == "muon"
    assert muon["2.weight"].lr_scale == pytest.approx(1.0)  # √(m_out/m_in) = 1
    assert muon["4.weight"].lr_scale == pytest.approx(1 / 8)  # readout: AdamW side, absorbed
    hidden_groups = muon.param_groups(0.02, roles=("hidden",))
    assert [n for g in hidden_groups for n in g["param_names"]] == ["2.weight"]
    torch.optim.Muon(hidden_groups)  # accepted by torch's Muon (2-D tensors only)

    lion = mt.parametrize(make_mlp(128), base, "mup", "lion", init=False)
    adam = mt.parametrize(make_mlp(128), base, "mup", "adam", init=False)
    for name, entry in lion.tensors.items():
        assert entry.lr_scale == pytest.approx(adam[name].lr_scale)  # sign updates ≈ Adam's
        assert entry.eps_scale == 1.0

    ada = mt.parametrize(make_mlp(128), base, "mup", torch.optim.Adafactor, init=False)
    assert ada["2.weight"].lr_scale == pytest.approx(8**-0.5)  # relative step × RMS(W) ∝ m^-½
    assert ada["4.weight"].lr_scale == pytest.approx(1.0)  # absorbed multiplier: RMS carries it


def test_check_optimizer_catches_lost_ratios_and_muon_rms_mode() -> None:
    model = make_mlp(128)
    plan = mt.parametrize(model, on_meta(make_mlp, BASE_WIDTH), "mup", "adam")
    opt = torch.optim.AdamW(plan.param_groups(1e-3))
    plan.check_optimizer(opt)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10)  # absolute max_lr
    with pytest.raises(mt.PlanError, match="lost their µP ratios.*scaled_lrs"):
        plan.check_optimizer(opt)
    opt2 = torch.optim.AdamW(plan.param_groups(1e-3))
    torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=mt.scaled_lrs(opt2, 1e-2), total_steps=10)
    plan.check_optimizer(opt2)
    muon = torch.optim.Muon(
        plan.param_groups(1e-3, roles=("hidden",)), adjust_lr_fn="match_rms_adamw"
    )
    with pytest.raises(mt.PlanError, match="match_rms_adamw.*not|undoes µP"):
        plan.check_optimizer(muon)


def _absorbed(plan: mt.Plan) -> dict[str, tuple[float, float]]:
    return {n: (t.init_std, t.lr_scale) for n, t in plan.tensors.items() if t.init == "normal"}


def test_unit_mup_is_mup_up_to_constants() -> None:
    """u-µP (with µP's input LR rule) differs from µP only by width-independent constants."""
    umup = mt.rules.unit_mup(input_lr="mup")
    ratios = []
    for width in (32, 64, 128, 256):
        base = on_meta(make_mlp, BASE_WIDTH)
        mup = _absorbed(
            mt.parametrize(make_mlp(width), base, "mup", "adam", init=False, base_init="rules")
        )
        unit = _absorbed(mt.parametrize(make_mlp(width), base, umup, "adam", init=False))
        ratios.append({n: (unit[n][0] / mup[n][0], unit[n][1] / mup[n][1]) for n in mup})
    for name in ratios[0]:
        for r in ratios[1:]:
            assert r[name] == pytest.approx(ratios[0][name], rel=1e-9), name
    # the published u-µP input rule (LR ∝ 1/√fan_out) is *not* a µP constant: it drifts
    base = on_meta(make_mlp, BASE_WIDTH)
    a = mt.parametrize(make_mlp(32), base, "u-mup", "adam", init=False)["0.weight"].lr_scale
    b = mt.parametrize(make_mlp(128), base, "u-mup", "adam", init=False)["0.weight"].lr_scale
    assert b / a == pytest.approx(0.5)


def test_unit_mup_and_mup_train_identically_once_constants_match() -> None:
    """Matching the constants per role makes µP reproduce u-µP's training exactly (Adam)."""
    umup = mt.rules.unit_mup(input_lr="mup")
    width, lr = 128, 2e-3
    base = on_meta(make_mlp, BASE_WIDTH)
    unit_plan = mt.parametrize(make_mlp(width), base, umup, "adam", init=False)
    plain = mt.parametrize(make_mlp(width), base, "mup", "adam", init=False, base_init="rules")
    role_of = {n: t.role for n, t in unit_plan.tensors.items() if t.init == "normal"}
    init_ratio = {role_of[n]: unit_plan[n].init_std / plain[n].init_std for n in role_of}
    lr_ratio = {role_of[n]: unit_plan[n].lr_scale / plain[n].lr_scale for n in role_of}
    matched = mt.MUP.with_(
        name="mup-matched",
        role_init_std={r: mt.MUP.init_std * v for r, v in init_ratio.items()},
        lr_multipliers=lr_ratio,
        weight_decay="independent",
    )
    losses = {}
    for name, rules in (("u-mup", umup), ("mup", matched)):
        model = make_mlp(width).double()
        plan = mt.parametrize(model, base, rules, "adam", seed=3, base_init="rules")
        # ε set far below the gradients: the two forms scale ε differently (a constant too)
        opt = torch.optim.Adam(plan.param_groups(lr, eps=1e-30))
        out = []
        for x, y in mlp_data():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[name] = out
    rel = [abs(a - b) / a for a, b in zip(losses["u-mup"], losses["mup"], strict=True)]
    assert max(rel) < 1e-6


def test_adam_atan2_absorbed_equals_explicit_without_eps() -> None:
    losses = {}
    for mode in ("explicit", "absorbed"):
        model = make_mlp(128).double()
        plan = mt.parametrize(
            model,
            on_meta(make_mlp, BASE_WIDTH),
            "mup",
            AdamAtan2,
            mode=mode,
            seed=1,
            output_multiplier=3.0,
            base_init="rules",  # the init these losses (and the "it trained" check) were set for
        )
        opt = AdamAtan2(plan.param_groups(3e-3, weight_decay=0.1))
        out = []
        for x, y in mlp_data():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[mode] = out
    rel = [abs(a - b) / a for a, b in zip(losses["explicit"], losses["absorbed"], strict=True)]
    assert max(rel) < 1e-9
    assert losses["absorbed"][-1] < losses["absorbed"][0]
    assert math.isfinite(losses["absorbed"][-1])


def test_depth_coord_check_mup_grows_completep_and_depth_mup_stay_flat() -> None:
    """Depths 2 → 16 at fixed width: the residual stream blows up under µP alone only."""
    from mutransfer.models import GPT, GPTConfig

    def by_depth(depth: int) -> GPT:
        return GPT(GPTConfig(width=32, depth=depth, n_heads=2, seq_len=16))

    delta = on_meta(GPT, GPTConfig(width=64, depth=2, n_heads=2, seq_len=16))
    reports = {
        rules: mt.coord_check(
            by_depth,
            vary="depth",
            depths=[2, 4, 8, 16],
            steps=2,
            seeds=2,
            rules=rules,
            parametrize_kwargs={"delta": delta},
        )
        for rules in ("mup", "completep", "depth-mup")
    }
    assert not reports["mup"].ok
    assert reports["mup"].row("blocks.*", "out").verdict == "blows up"
    for rules in ("completep", "depth-mup"):
        assert reports[rules].ok, reports[rules].table()
        assert reports[rules].row("blocks.*", "out").verdict != "blows up"
