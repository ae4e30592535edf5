"""A small pre-activation ResNet in plain PyTorch, for the demo, the tests and the benchmarks.

The shape follows He et al. 2016 ("Identity Mappings in Deep Residual Networks"): a stem
convolution, then stages of residual blocks, each block ``x + conv2(relu(norm2(conv1(relu(
norm1(x))))))``, the first block of a later stage halving the resolution and doubling the
channels through a 1×1 projection shortcut; a final norm, global average pooling and a linear
classifier. Tensor Programs V verified µTransfer on ResNets of this kind.

Sizes: ``width`` is the number of channels of the first stage; stage ``s`` has
``stage_ratios[s] × width`` channels, so every hidden convolution grows with ``width`` in both
fan-in and fan-out while the image (``in_channels``) and the classes stay fixed. ``depth`` is the
number of blocks per stage; a deeper model's extra blocks pair with the base's blocks of the
same kind (``roles.DepthMap``: the first block of a stage, with its shortcut, is a kind of its
own).

Nothing in it knows about µP: under ``parametrize`` the stem is the *input* layer (fan-in =
in_channels × kernel area, fixed), every 3×3 and 1×1 convolution after it (shortcuts included)
is *hidden* (fan-in = channels × kernel area), the norms' gains and biases are *vectors* and the
classifier is the *readout*. It has no init of its own (``mutransfer_init = "rules"``): every
weight is drawn N(0, σ²/fan_in) with fan_in = in_channels × kernel area ("LeCun" init; He's
extra √2 for ReLU is a width-independent constant, which ``init_std`` σ covers, and a norm
follows every convolution, so the forward pass does not depend on it at all). At the base width
that *is* this model's parametrization; µP only says how it scales.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["batch", "group"]


@dataclass(frozen=True)
class ResNetConfig:
    """Shape of the model. ``width`` scales the channels of every stage; ``depth`` = blocks per
    stage; the image and class counts stay fixed."""

    width: int = 16
    depth: int = 1
    stage_ratios: tuple[int, ...] = (1, 2, 4)
    """Channels of each stage as multiples of ``width``; every stage after the first halves
    the resolution (stride 2)."""
    in_channels: int = 1
    num_classes: int = 10
    stem_stride: int = 1
    """Stride of the stem convolution: 2 halves the image before the first stage (4× cheaper)."""
    norm: Norm = "batch"
    """``batch`` (BatchNorm2d, Tensor Programs V's ResNets) or ``group`` (GroupNorm with
    ``groups`` groups: no batch statistics, the same output in training and evaluation)."""
    groups: int = 4
    """GroupNorm's number of groups (fixed, so a group's size grows with width, like
    LayerNorm's); every stage's channels must be divisible by it."""

    def __post_init__(self) -> None:
        sizes = (self.width, self.depth, self.in_channels, self.num_classes, self.stem_stride)
        if min(sizes) < 1 or not self.stage_ratios or min(self.stage_ratios) < 1:
            raise ValueError(f"every ResNetConfig size must be >= 1, got {self}")
        if self.norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if self.norm == "group":
            bad = [r * self.width for r in self.stage_ratios if (r * self.width) % self.groups]
            if self.groups < 1 or bad:
                raise ValueError(
                    f"GroupNorm with {self.groups} groups needs channels divisible by it; "
                    f"stage channels {bad} are not (change width or groups)"
                )

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of each stage."""
        return tuple(r * self.width for r in self.stage_ratios)

    def with_(self, **changes: Any) -> ResNetConfig:
        return ResNetConfig(**{**asdict(self), **changes})


def _norm(cfg: ResNetConfig, channels: int) -> nn.Module:
    if cfg.norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(cfg.groups, channels)


class Block(nn.Module):
    """Pre-activation residual block; ``conv2``'s output is the residual branch (the depth
    rules scale it by a hook on ``conv2``)."""

    def __init__(self, cfg: ResNetConfig, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.norm1 = _norm(cfg, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm2 = _norm(cfg, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        projects = stride != 1 or c_in != c_out
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if projects else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(x))
        # as in He et al.'s pre-activation code, a projection sees the normalised input
        skip = x if self.shortcut is None else self.shortcut(h)
        h = self.conv1(h)
        return skip + self.conv2(F.relu(self.norm2(h)))


class Stage(nn.Module):
    def __init__(self, cfg: ResNetConfig, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(cfg, c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
            for i in range(cfg.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ResNet(nn.Module):
    """Pre-activation ResNet classifier: images ``(batch, in_channels, H, W)`` → logits."""

    residual_branches = ("stages.*.blocks.*.conv2",)
    mutransfer_init = "rules"
    """No init of its own: the plan's σ/√fan_in (fan_in = channels × kernel area) is this
    model's parametrization."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.stem = nn.Conv2d(
            cfg.in_channels, c[0], 3, stride=cfg.stem_stride, padding=1, bias=False
        )
        self.stages = nn.ModuleList(
            Stage(cfg, c[max(0, s - 1)], c[s], 1 if s == 0 else 2) for s in range(len(c))
        )
        self.norm = _norm(cfg, c[-1])
        self.head = nn.Linear(c[-1], cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"expected images of shape (batch, {self.cfg.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        h = F.relu(self.norm(h))
        return self.head(h.mean(dim=(2, 3)))

    def forward_flops(self, height: int, width: int) -> float:
        """FLOPs of one forward pass over one ``height × width`` image (2 per multiply-add of
        the convolutions and the classifier; norms and activations left out). Convolutions
        cost per output pixel, so the transformers' ``6 · params · tokens`` does not apply."""
        total, h, w = _conv_flops(self.stem, height, width)
        blocks = [m for m in self.stages.modules() if isinstance(m, Block)]  # in forward order
        for block in blocks:
            first, out_h, out_w = _conv_flops(block.conv1, h, w)
            second, _, _ = _conv_flops(block.conv2, out_h, out_w)
            skip = 0.0 if block.shortcut is None else _conv_flops(block.shortcut, h, w)[0]
            total += first + second + skip
            h, w = out_h, out_w
        return total + 2.0 * self.head.in_features * self.head.out_features


def _conv_flops(conv: nn.Conv2d, height: int, width: int) -> tuple[float, int, int]:
    """(FLOPs, output height, output width) of ``conv`` on a ``height × width`` input."""
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    ph, pw = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    per_pixel = conv.in_channels // conv.groups * kh * kw * conv.out_channels
    return 2.0 * per_pixel * out_h * out_w, out_h, out_w
