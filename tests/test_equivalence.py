"""Two forms, one dynamics: absorbed multipliers train exactly like explicit ones (float64)."""

from __future__ import annotations

import pytest
import torch

import mutransfer as mt
from conftest import BASE_WIDTH, make_gpt, make_mlp, on_meta

STEPS = 20


def train(model, plan, family: str, data, *, eps: float, lr: float, wd: float) -> list[float]:
    groups = plan.param_groups(lr, weight_decay=wd, eps=eps if family == "adam" else None)
    if family == "adam":
        opt = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    else:
        opt = torch.optim.SGD(groups, momentum=0.9)
    losses = []
    for x, y in data:
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, -2), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def mlp_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(32, 12, generator=g, dtype=torch.float64),
            torch.randint(0, 5, (32,), generator=g),
        )
        for _ in range(STEPS)
    ]


def gpt_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        tokens = torch.randint(0, 256, (4, 17), generator=g)
        out.append((tokens[:, :-1], tokens[:, 1:]))
    return out


@pytest.mark.parametrize("family,lr", [("adam", 3e-3), ("sgd", 0.05)])
def test_absorbed_equals_explicit_mlp(family: str, lr: float) -> None:
    losses = {}
    for mode in ("explicit", "absorbed"):
        model = make_mlp(128).double()
        base = on_meta(make_mlp, BASE_WIDTH)
        plan = mt.parametrize(
            model, base, "mup", family, mode=mode, seed=1, output_multiplier=3.0, base_init="rules"
        )
        # eps large enough to matter, so a wrong ε scale would show in the losses
        losses[mode] = train(model, plan, family, mlp_data(), eps=1e-3, lr=lr, wd=0.1)
    assert plan["4.weight"].absorbed != 1.0  # the readout multiplier really was absorbed
    rel = [abs(a - b) / abs(a) for a, b in zip(losses["explicit"], losses["absorbed"], strict=True)]
    assert max(rel) < 1e-4, rel
    assert losses["explicit"][-1] < losses["explicit"][0]  # it did train


@pytest.mark.parametrize("family,lr", [("adam", 3e-3), ("sgd", 0.05)])
@pytest.mark.parametrize("tie", [False, True])
def test_absorbed_equals_explicit_gpt(family: str, lr: float, tie: bool) -> None:
    losses = {}
    for mode in ("explicit", "absorbed"):
        model = make_gpt(64, tie_embeddings=tie).double()
        base = on_meta(make_gpt, 32, tie_embeddings=tie)
        plan = mt.parametrize(model, base, "mup", family, mode=mode, seed=2, input_multiplier=2.0)
        losses[mode] = train(model, plan, family, gpt_data(), eps=1e-4, lr=lr, wd=0.05)
    rel = [abs(a - b) / abs(a) for a, b in zip(losses["explicit"], losses["absorbed"], strict=True)]
    assert max(rel) < 1e-4, rel


def test_wrong_eps_scaling_would_be_detected() -> None:
    """The equivalence test can fail: dropping the ε correction changes the losses."""
    losses = {}
    for mode in ("explicit", "absorbed"):
        model = make_mlp(128).double()
        plan = mt.parametrize(
            model, on_meta(make_mlp, BASE_WIDTH), "mup", "adam", mode=mode, seed=1
        )
        if mode == "absorbed":
            plan.tensors = {
                n: t.__class__(**{**t.__dict__, "eps_scale": 1.0}) for n, t in plan.tensors.items()
            }
        losses[mode] = train(model, plan, "adam", mlp_data(), eps=1e-1, lr=3e-3, wd=0.0)
    rel = max(
        abs(a - b) / abs(a) for a, b in zip(losses["explicit"], losses["absorbed"], strict=True)
    )
    assert rel > 1e-4
