"""Models deeper than their base: every layer is paired with a base layer of the same kind.

Blocks of a deeper model have no counterpart of the same name in the base; pairing them by index
alone once paired an MLP's readout with a hidden layer (planned as hidden, LR × 0.094). Layers
are now paired by kind (parameter names, shapes up to the width ratios), and a layer that has
no counterpart of its kind is an error that says how to give the base.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mutransfer as mt
from conftest import on_meta
from mutransfer.models import GPT, GPTConfig


def plain_mlp(width: int, depth: int) -> nn.Sequential:
    """The issue's example: no activations, so the layers are children 0..depth."""
    hidden = [nn.Linear(width, width) for _ in range(depth - 1)]
    return nn.Sequential(nn.Linear(12, width), *hidden, nn.Linear(width, 5))


def relu_mlp(width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(12, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 5))


@pytest.mark.parametrize("make", [plain_mlp, relu_mlp])
def test_sequential_readout_stays_the_readout_in_a_deeper_model(make) -> None:
    plan = mt.parametrize(make(128, 4), on_meta(make, 32, 2), init=False)
    layers = [n for n in plan.tensors if n.endswith(".weight")]
    roles = [plan[n].role for n in layers]
    assert roles == ["input", "hidden", "hidden", "hidden", "output"]
    readout = plan[layers[-1]]
    assert readout.lr_scale == pytest.approx(32 / 128)  # µP: absorbed multiplier 1/m, not 1/m²
    assert readout.m_depth == 1.0 and plan[layers[0]].m_depth == 1.0
    assert plan[layers[1]].m_depth == pytest.approx(3.0)  # 3 hidden layers against 1


def test_block_lists_map_block_i_to_i_mod_base_depth() -> None:
    cfg = GPTConfig(width=64, depth=8, n_heads=2, seq_len=16)
    base = on_meta(GPT, cfg.with_(width=32, depth=2))
    plan = mt.parametrize(GPT(cfg), base, init=False)
    for i in range(8):
        entry = plan[f"blocks.{i}.mlp.fc.weight"]
        assert entry.role == "hidden" and entry.m_depth == pytest.approx(4.0)
    assert plan["lm_head.weight"].role == "output" and plan["lm_head.weight"].m_depth == 1.0


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None


class Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [Block(c_in, c_out)] + [Block(c_out, c_out) for _ in range(blocks - 1)]
        )


class TinyResNet(nn.Module):
    """Nested containers: stages (same number) of blocks (more in the model), the first block
    of a stage with a projection shortcut (another kind of layer than the others)."""

    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3)
        self.stages = nn.ModuleList([Stage(width, width, blocks), Stage(width, 2 * width, blocks)])
        self.head = nn.Linear(2 * width, 10)


def test_nested_containers_pair_each_block_with_its_own_kind() -> None:
    plan = mt.parametrize(TinyResNet(64, 5), on_meta(TinyResNet, 16, 2), init=False)
    # the first block of stage 1 has the shortcut: only it maps onto the base's first block
    first = plan["stages.1.blocks.0.conv1.weight"]
    assert first.role == "hidden" and first.shape == (128, 64, 3, 3)
    assert first.m_in == pytest.approx(4.0) and first.m_depth == 1.0
    for i in range(1, 5):
        block = plan[f"stages.1.blocks.{i}.conv1.weight"]
        assert block.shape == (128, 128, 3, 3) and block.m_in == pytest.approx(4.0)
        assert block.m_depth == pytest.approx(4.0)  # 4 blocks of this kind against 1
    assert plan["stem.weight"].role == "input" and plan["head.weight"].role == "output"


def test_a_layer_without_a_counterpart_of_its_kind_is_an_error_that_says_what_to_do() -> None:
    def model_with_extra(width: int, depth: int) -> nn.Sequential:
        net = plain_mlp(width, depth)
        return nn.Sequential(*net[:-1], nn.Linear(width, 7), net[-1])  # a kind not in the base

    with pytest.raises(mt.RoleError, match=r"layer '3' .*Build the base from the same code"):
        mt.parametrize(model_with_extra(128, 3), on_meta(plain_mlp, 32, 2), init=False)


def test_a_shallower_model_maps_too() -> None:
    plan = mt.parametrize(relu_mlp(128, 2), on_meta(relu_mlp, 32, 4), init=False)
    assert [plan[n].role for n in plan.tensors if n.endswith(".weight")] == [
        "input",
        "hidden",
        "output",
    ]
    assert plan["2.weight"].m_depth == pytest.approx(1 / 3)
    torch.testing.assert_close(torch.tensor(plan["4.weight"].lr_scale), torch.tensor(0.25))
