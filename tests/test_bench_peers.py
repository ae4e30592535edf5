"""The fairness of the side-by-side benchmarks: same loop, same model, checks that can fail.

- The peer training loop (``bench/peers/loop.py``) must be the built-in trainer, step for step:
  given mutransfer's own model and optimizer it returns the very same losses.
- The mup peer GPT, under mup's rules, is the same function as mutransfer's µP plan at the base
  width constants (same init std per tensor, same attention scale, same readout output).
- A survival check must report ``wrong`` when the µP learning rates are lost, and ``ok`` when
  they are kept.
- A peer that is not installed shows as "not installed", never as a number.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from mutransfer.data import pydoc_text  # noqa: E402
from mutransfer.training.options import make_optimizer  # noqa: E402
from mutransfer.training.proxy import TrainConfig, build_model, train  # noqa: E402
from peers import available  # noqa: E402
from peers.loop import train_with  # noqa: E402
from survival_cases import check  # noqa: E402
from survival_cases.libraries import Mutransfer, batch  # noqa: E402

torch.set_num_threads(1)
HAS_MUP = available()["mup"] is not None
HAS_UNIT = available()["unit-scaling"] is not None


def _mean_ce(model, b):
    logits = model(b[0])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), b[1].reshape(-1))


def _build(config):
    model, plan = build_model(config)
    return model, make_optimizer(config, model, plan)


@pytest.mark.parametrize("rules", ["mup", "sp"])
def test_peer_loop_is_the_builtin_trainer(rules: str) -> None:
    source = pydoc_text()
    config = TrainConfig(width=32, base_width=16, steps=6, seq_len=16, batch_size=4, rules=rules)
    config = config.with_(eval_batches=2, eval_batch_size=4, lr=2**-5)
    ours = train(config, source=source)
    loop = train_with(config, source, _build, _mean_ce)
    assert loop.losses == ours.losses
    assert loop.val_loss == ours.val_loss
    assert loop.steps_done == ours.steps_done == 6


def test_peer_loop_reports_divergence() -> None:
    source = pydoc_text()
    config = TrainConfig(width=32, base_width=16, steps=30, seq_len=16, batch_size=4, lr=8.0)
    config = config.with_(eval_batches=1, eval_batch_size=2)
    result = train_with(config, source, _build, _mean_ce)
    assert result.diverged and result.reason and math.isinf(result.val_loss)


@pytest.mark.skipif(not HAS_MUP, reason="mup not installed")
def test_mup_peer_matches_mutransfer_mup_plan() -> None:
    from mutransfer.models import GPTConfig
    from peers import mup_gpt

    cfg = GPTConfig(width=64, depth=1, n_heads=4, seq_len=16)
    peer = mup_gpt.build(cfg, 32, seed=0)
    ours, plan = build_model(TrainConfig(width=64, base_width=32, depth=1, seq_len=16))
    for name, p in ours.named_parameters():
        if p.dim() < 2:
            continue
        expected = plan[name].init_std
        if name == "lm_head.weight":  # mup keeps the 1/m multiplier in forward, not in init
            expected = expected * peer.lm_head.width_mult()
        got = dict(peer.named_parameters())[name].std().item()
        assert got == pytest.approx(expected, rel=0.1), name
    assert peer.blocks[0].attn.scaling == pytest.approx(ours.blocks[0].attn.scaling)
    # same weights → same logits: the readout multiplier and attention scale agree
    peer.load_state_dict(
        {
            k: v * (peer.lm_head.width_mult() if k == "lm_head.weight" else 1.0)
            for k, v in ours.state_dict().items()
        }
    )
    x = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(peer(x), ours(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAS_UNIT, reason="unit-scaling not installed")
def test_unit_peer_is_unit_scaled_and_tagged() -> None:
    from mutransfer.models import GPTConfig
    from peers import unit_gpt

    model = unit_gpt.build(GPTConfig(width=64, depth=2, n_heads=4, seq_len=16), seed=0)
    types = {n: p.mup_type for n, p in model.named_parameters()}
    assert types["lm_head.weight"] == "output" and types["wte.weight"] == "weight"
    assert all(p.mup_scaling_depth == 2 for p in model.blocks.parameters())
    opt = unit_gpt.optimizer(model, 1.0)
    lrs = {id(g["params"][0]): g["lr"] for g in opt.param_groups}
    assert lrs[id(model.blocks[0].mlp.fc.weight)] == pytest.approx(64**-0.5 * 2**-0.5)
    assert lrs[id(model.lm_head.weight)] == pytest.approx(1.0)


def test_survival_check_flags_lost_learning_rates() -> None:
    lib = Mutransfer()
    model = lib.build()
    reference = check.step(model, lib.optimizer(model), lib.loss, batch())
    # the same model with a plain one-group AdamW: every µP LR scale is gone
    model = lib.build()
    plain = torch.optim.AdamW(model.parameters(), lr=1e-2)
    verdict = check.compare(reference, check.step(model, plain, lib.loss, batch()))
    assert verdict["status"] == "wrong"
    assert "update size" in verdict["detail"]
    # and a faithful copy passes
    model = lib.build()
    verdict = check.compare(reference, check.step(model, lib.optimizer(model), lib.loss, batch()))
    assert verdict["status"] == "ok", verdict


def test_survival_check_flags_a_changed_forward_multiplier() -> None:
    lib = Mutransfer()
    model = lib.build()
    reference = check.step(model, lib.optimizer(model), lib.loss, batch())
    model = lib.build()
    for block in model.blocks:
        block.attn.scaling *= 2  # e.g. an attention scale reset to SP's by a wrapper
    verdict = check.compare(reference, check.step(model, lib.optimizer(model), lib.loss, batch()))
    assert verdict["status"] == "wrong" and verdict["loss_rel_error"] > check.LOSS_TOL


def test_clean_name_strips_wrapper_prefixes() -> None:
    assert check.clean_name("module._orig_mod.blocks.0.attn.q.weight") == "blocks.0.attn.q.weight"
    assert check.clean_name("_orig_mod.lm_head.weight") == "lm_head.weight"


def test_not_installed_peer_is_a_cell_not_a_number() -> None:
    import transfer_fidelity

    payload = {
        "order": ["unit-scaling"],
        "labels": {"mutransfer-mup": "µP (mutransfer)", "unit-scaling": "u-µP (unit-scaling)"},
        "not_installed": {"unit-scaling": "unit-scaling not installed (pip install ...)"},
        "variants": {},
    }
    rows = transfer_fidelity.table_rows(payload)
    assert rows == [["u-µP (unit-scaling)", *(["not installed"] * 6)]]
