"""The reference ResNet under µP: conv fan-in = channels × kernel area, roles, the table's values,
the drawn weights, deeper models, and the coordinate check (µP passes, SP fails) to 1024 channels.

The coordinate checks use 4×4 random images in batches of 4 (µP's limit is width → ∞ at a
fixed, small batch) and 3 steps; the one that reaches 1024 channels takes about 10 s on one
thread, the rest well under a second each.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mutransfer as mt
from mutransfer.coord import coord_check
from mutransfer.models import ResNet, ResNetConfig

CFG = ResNetConfig(width=32, depth=1, stage_ratios=(1, 2), stem_stride=1)
BASE_WIDTH = 8


def factory(cfg: ResNetConfig = CFG):
    return lambda width: ResNet(cfg.with_(width=width))


def plan_for(rules: str, optimizer: str, cfg: ResNetConfig = CFG, base_depth: int | None = None):
    base_cfg = cfg.with_(depth=base_depth or cfg.depth)
    return mt.parametrize(
        ResNet(cfg),
        lambda w: ResNet(base_cfg.with_(width=w)),
        base_width=BASE_WIDTH,
        rules=rules,
        optimizer=optimizer,
        seed=0,
    )


def test_forward_backward_shapes_and_errors() -> None:
    for norm in ("batch", "group"):
        model = ResNet(CFG.with_(norm=norm, stage_ratios=(1, 2, 4), stem_stride=2))
        x = torch.randn(3, 1, 28, 28)
        logits = model(x)
        assert logits.shape == (3, 10)
        F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 1, H, W\)"):
        model(torch.randn(3, 784))
    with pytest.raises(ValueError, match="GroupNorm with 3 groups"):
        ResNetConfig(width=16, norm="group", groups=3)
    with pytest.raises(ValueError, match="norm must be"):
        ResNetConfig(norm="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 1"):
        ResNetConfig(width=0)


def test_forward_flops_count_every_convolution_at_its_resolution() -> None:
    cfg = ResNetConfig(width=4, depth=1, stage_ratios=(1, 2), stem_stride=2, num_classes=10)
    # by hand, 2 FLOPs per multiply-add: stem 1→4 at 14×14; stage 0: two 4→4 3×3 at 14×14;
    # stage 1: 4→8 3×3 stride 2 and the 1×1 shortcut at 7×7, 8→8 3×3 at 7×7; head 8→10
    expected = 2 * (
        14 * 14 * 4 * 9 + 2 * 14 * 14 * 4 * 4 * 9 + 7 * 7 * (4 * 8 * 9 + 4 * 8 + 8 * 8 * 9) + 8 * 10
    )
    assert ResNet(cfg).forward_flops(28, 28) == expected


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_conv_plan_values_follow_the_mup_table(optimizer: str) -> None:
    plan = plan_for("mup", optimizer)
    m = CFG.width / BASE_WIDTH  # 4: every width dimension is 4× the base's
    sgd = optimizer == "sgd"
    stem = plan["stem.weight"]
    assert stem.role == "input" and (stem.m_in, stem.m_out) == (1.0, m)
    assert stem.init_std == pytest.approx(1 / math.sqrt(1 * 9))  # fan-in: 1 channel × 3×3
    assert stem.lr_scale == pytest.approx(m if sgd else 1.0)
    hidden = {
        "stages.0.blocks.0.conv1.weight": 32 * 9,
        "stages.0.blocks.0.conv2.weight": 32 * 9,
        "stages.1.blocks.0.conv1.weight": 32 * 9,
        "stages.1.blocks.0.conv2.weight": 64 * 9,
        "stages.1.blocks.0.shortcut.weight": 32,  # 1×1: fan-in = channels
    }
    for name, fan_in in hidden.items():
        entry = plan[name]
        assert entry.role == "hidden" and entry.m_in == pytest.approx(m), name
        assert entry.init_std == pytest.approx(1 / math.sqrt(fan_in)), name  # σ/√fan_in
        # Adam: η/m_in; SGD: η·m_out/m_in (both dims grow alike: 1)
        assert entry.lr_scale == pytest.approx(1.0 if sgd else 1 / m), name
    for name in ("stages.0.blocks.0.norm1.weight", "stages.1.blocks.0.norm2.bias", "norm.weight"):
        assert plan[name].role == "vector"
        assert plan[name].lr_scale == pytest.approx(m if sgd else 1.0)
    head = plan["head.weight"]
    assert head.role == "output" and head.absorbed == pytest.approx(1 / m)
    # σ/√base_fan_in times the absorbed readout multiplier 1/m; Adam LR × 1/m, SGD m·(1/m)²
    assert head.init_std == pytest.approx(1 / math.sqrt(BASE_WIDTH * 2) / m)
    assert head.lr_scale == pytest.approx(1 / m)
    assert plan["head.bias"].role == "scalar" and plan["head.bias"].lr_scale == 1.0


def test_sp_is_one_lr_and_fan_in_init() -> None:
    plan = plan_for("sp", "adam")
    assert {e.lr_scale for e in plan.tensors.values()} == {1.0}
    assert plan["stages.1.blocks.0.conv2.weight"].init_std == pytest.approx(1 / math.sqrt(64 * 9))
    assert plan["head.weight"].init_std == pytest.approx(1 / math.sqrt(64))


def test_the_drawn_weights_have_the_planned_std() -> None:
    """The plan is applied to the model's tensors: the fan-in that sets the std includes the
    kernel area (a std of 1/√channels would be 3× too large for a 3×3 convolution)."""
    cfg = CFG.with_(width=64)
    model = ResNet(cfg)
    mt.parametrize(model, factory(cfg), base_width=BASE_WIDTH, optimizer="adam", seed=0)
    for name, fan_in in (("stages.1.blocks.0.conv2.weight", 128 * 9), ("stem.weight", 9)):
        weight = dict(model.named_parameters())[name]
        assert weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.05), name
    assert torch.equal(model.stages[0].blocks[0].norm1.weight, torch.ones(64))


def test_a_deeper_resnet_pairs_blocks_by_kind() -> None:
    """depth = blocks per stage. The first block of stage 1 (with its shortcut) is a kind of
    its own; the others pair with the base's second block, m_depth = 3 / 1."""
    plan = plan_for("mup", "adam", CFG.with_(depth=4), base_depth=2)
    assert plan["stages.1.blocks.0.conv1.weight"].m_depth == 1.0
    for i in range(1, 4):
        assert plan[f"stages.1.blocks.{i}.conv1.weight"].m_depth == pytest.approx(3.0)
        assert plan[f"stages.0.blocks.{i}.conv2.weight"].m_depth == pytest.approx(2.0)
    assert plan["head.weight"].m_depth == 1.0 and plan["stem.weight"].role == "input"


def test_completep_scales_each_residual_branch_by_base_depth_over_depth() -> None:
    cfg = CFG.with_(depth=4)
    plan = mt.parametrize(
        ResNet(cfg),
        lambda w: ResNet(cfg.with_(width=w, depth=2)),
        base_width=BASE_WIDTH,
        rules="completep",
        residual_branches=ResNet.residual_branches,
        seed=0,
    )
    scales = {name: s.multiplier for name, s in plan.module_scales.items()}
    assert scales["stages.0.blocks.3.conv2"] == pytest.approx(0.5)  # 2 blocks of 4
    assert scales["stages.1.blocks.2.conv2"] == pytest.approx(1 / 3)  # 1 of 3 (after the first)


def _images(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(4, 1, 4, 4, generator=generator), torch.randint(
        0, 10, (4,), generator=generator
    )


@pytest.mark.slow
def test_coord_check_mup_passes_and_sp_fails_up_to_1024_channels() -> None:
    """SGD with momentum, Tensor Programs V's ResNet optimizer; the widest convolution is
    1024 × 1024 × 3 × 3 (stage 1 at width 512)."""
    widths = (64, 128, 256, 512)
    options = {"optimizer": "sgd", "optimizer_kwargs": {"momentum": 0.9}}
    mup = coord_check(factory(), widths, steps=3, seeds=2, data=_images, **options)
    assert mup.ok, str(mup)
    sp = coord_check(factory(), widths, steps=3, seeds=2, data=_images, rules="sp", **options)
    assert not sp.ok
    culprits = {name for name, _ in (r.key for r in sp.culprits())}
    # every hidden conv's update grows with width under SP, the readout's too
    assert {"stages.0.blocks.0.conv1", "stages.1.blocks.0.shortcut", "head"} <= culprits


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_coord_check_with_adam_both_norms(norm: str) -> None:
    make = factory(CFG.with_(norm=norm))
    assert coord_check(make, (32, 64, 128), steps=3, seeds=2, data=_images).ok
    sp = coord_check(make, (32, 64, 128), steps=3, seeds=2, data=_images, rules="sp")
    culprits = {name for name, _ in (r.key for r in sp.culprits())}
    assert {"stages.0.blocks.0.conv2", "stages.1.blocks.0.conv1", "head"} <= culprits


def test_the_proxy_trains_the_resnet_on_fashion_mnist_images() -> None:
    from mutransfer.data import fashion_mnist_images
    from mutransfer.training.proxy import TrainConfig, step_flops, train
    from mutransfer.training.reference import RESNET

    images = fashion_mnist_images()
    assert images.train_x.shape == (60000, 1, 28, 28) and images.val_x.shape[1:] == (1, 28, 28)
    config = TrainConfig(
        model="resnet", width=8, base_width=4, depth=1, batch_size=16, steps=60, lr=2**-4,
        optimizer="sgd", eval_batches=2, eval_batch_size=32,
    )  # fmt: skip
    result = train(config, source=images)
    assert not result.diverged and result.steps_done == 60
    # 10 classes: about ln 10 = 2.30 at init; scored in eval mode with recomputed statistics
    assert result.losses[0] > 1.8 and result.val_loss < 1.8
    # a convolution's FLOPs are per output pixel, not 6 · params
    per_step = 3 * ResNet(RESNET.with_(width=8)).forward_flops(28, 28) * 16
    assert result.flops == pytest.approx(60 * per_step)
    assert step_flops(config, ResNet(RESNET.with_(width=8))) == pytest.approx(per_step)


@pytest.mark.slow
def test_the_validation_uses_batch_norm_statistics_recomputed_with_the_final_weights() -> None:
    """The running averages lag weights that still move (µP, SGD, LR 2^-3): scored with them,
    a width-32 ResNet's validation sits 0.05 nats above its own last training losses (0.4 at
    width 64 after 100 steps); recomputed ("precise BN"), it matches them."""
    from mutransfer.demo.settings import RESNET_BASE
    from mutransfer.training.proxy import TrainConfig, train

    config = RESNET_BASE.with_(width=32, base_width=8, lr=2**-3, steps=60, rules="mup")
    precise, lagging = train(config), train(config.with_(recompute_bn_stats=False))
    last_train = sum(precise.losses[-10:]) / 10
    assert precise.losses == lagging.losses  # the training itself is untouched
    assert abs(precise.val_loss - last_train) < 0.02
    assert lagging.val_loss > precise.val_loss + 0.03
    # in the run store's key only where it can change a run: old ResNet runs are not reused
    assert "recompute_bn_stats" in config.to_dict()
    assert "recompute_bn_stats" not in TrainConfig(model="gpt").to_dict()
