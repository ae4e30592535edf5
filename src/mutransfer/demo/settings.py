"""The demo's grids: sizes × log2 LRs × seeds × parametrizations, and the presets.

``settings_for`` turns the command line's options into ``DemoSettings`` (validated, with a
clear ``DemoError`` when they cannot make a demo).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..rules import get_rules
from ..training.proxy import TrainConfig
from .axes import AXES, SCHEDULE_SETTINGS, Axis, Size, axis_info


class DemoError(ValueError):
    """Options that cannot make a demo (too few widths, text too short...); says what to change."""


@dataclass(frozen=True)
class DemoSettings:
    """The grid: sizes × log2 LRs × seeds × parametrizations, around one base ``TrainConfig``.

    ``axis`` says what the sizes are: widths (the base config's depth is kept) or depths, i.e.
    numbers of transformer blocks (the base config's width is kept); or batch sizes, sequence
    lengths, step counts or schedule names (``axes.SCHEDULE_SETTINGS``) at the base config's
    width and depth. The base config holds everything else (steps, batch, schedule, optimizer,
    data...). Across widths or depths the smallest size is the base of the parametrization
    (``base_width`` resp. ``base_depth``), so all rules are the same model there and the panels
    of the figure start from the same curve; along the other axes the base config's
    ``base_width`` is kept, so SP and µP differ by the width ratio throughout.
    """

    sizes: tuple[Size, ...]
    log2_lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    base: TrainConfig
    rules: tuple[str, ...] = ("sp", "mup")
    axis: Axis = "width"

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise DemoError(f"the demo varies one of {', '.join(AXES)}, not {self.axis!r}")
        self._check_sizes()
        heads = self.base.model != "resnet"  # transformers split the width into heads
        bad = [w for w in self.widths if heads and w % self.base.n_heads]
        if bad:
            raise DemoError(
                f"width(s) {bad} are not divisible by the number of heads ({self.base.n_heads})"
            )
        if len(self.log2_lrs) < 2 or list(self.log2_lrs) != sorted(set(self.log2_lrs)):
            raise DemoError(
                f"give at least two distinct, increasing log2 LRs, got {list(self.log2_lrs)}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise DemoError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        if not self.rules or len(set(self.rules)) != len(self.rules):
            raise DemoError(f"give distinct rules presets, got {list(self.rules)}")
        for name in self.rules:
            try:
                get_rules(name)
            except ValueError as exc:
                raise DemoError(str(exc)) from None

    def _check_sizes(self) -> None:
        info = axis_info(self.axis)
        sizes = list(self.sizes)
        if len(sizes) < 2:
            raise DemoError(f"the demo needs at least two {info.plural}, got {sizes}")
        if not info.numeric:
            unknown = [s for s in sizes if s not in SCHEDULE_SETTINGS]
            if unknown or len(set(sizes)) != len(sizes):
                raise DemoError(
                    f"schedules must be distinct names among {', '.join(SCHEDULE_SETTINGS)}, "
                    f"got {sizes}"
                )
            return
        if (
            not all(isinstance(s, int) for s in sizes)
            or sizes != sorted(set(sizes), key=int)
            or int(sizes[0]) < 1
        ):
            raise DemoError(
                f"{info.plural} must be increasing, distinct integers >= 1, got {sizes}"
            )

    @property
    def widths(self) -> tuple[int, ...]:
        """The widths the grid trains: the sizes, or the base config's width on other axes."""
        return tuple(map(int, self.sizes)) if self.axis == "width" else (self.base.width,)

    @property
    def depths(self) -> tuple[int, ...]:
        """The depths the grid trains: the sizes, or the base config's depth on other axes."""
        return tuple(map(int, self.sizes)) if self.axis == "depth" else (self.base.depth,)

    def config(self, rules: str, size: Size, log2_lr: float, seed: int) -> TrainConfig:
        """One run of the grid; ``size`` is a setting of ``axis`` (a width, a batch size...)."""
        common: dict[str, Any] = {"rules": rules, "lr": 2.0**log2_lr, "seed": seed}
        if self.axis == "width":
            return self.base.with_(width=size, base_width=self.sizes[0], **common)
        if self.axis == "depth":
            # one width throughout: it is its own base width, so only the depth rules act
            return self.base.with_(
                depth=size, base_depth=self.sizes[0], base_width=self.base.width, **common
            )
        if self.axis == "schedule":
            schedule, warmup = SCHEDULE_SETTINGS[str(size)]
            warmup_steps = round(warmup * self.base.steps)
            return self.base.with_(schedule=schedule, warmup_steps=warmup_steps, **common)
        return self.base.with_(**{axis_info(self.axis).field: size}, **common)

    def grid(self) -> list[TrainConfig]:
        return [
            self.config(r, size, lr, s)
            for r in self.rules
            for size in self.sizes
            for lr in self.log2_lrs
            for s in self.seeds
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            axis_info(self.axis).key: list(self.sizes),
            "sizes": list(self.sizes),
            "widths": list(self.widths),
            "depths": list(self.depths),
            "log2_lrs": list(self.log2_lrs),
            "seeds": list(self.seeds),
            "rules": list(self.rules),
            "base": self.base.to_dict(),
        }


# Measured defaults (docs/demo.md, bench/results/demo.md): a 2-block byte-level GPT over an 8×
# width range, AdamW at a constant LR, 200 steps: 64 runs in about 4.5 minutes on an idle 2-core
# CPU. Every claim of the demo held on seeds 0, 1 and 2 with these settings (seed 0 is the
# default; the others are recorded in bench/results/demo.md).
DEFAULT_BASE = TrainConfig(
    model="gpt",
    depth=2,
    n_heads=4,
    seq_len=64,
    batch_size=16,
    steps=200,
    optimizer="adamw",
    beta2=0.95,
    warmup_steps=0,
    schedule="constant",
    data="shakespeare",
)
DEFAULT = DemoSettings(
    sizes=(32, 64, 128, 256),
    log2_lrs=tuple(float(x) for x in range(-11, -3)),
    seeds=(0,),
    base=DEFAULT_BASE,
)
QUICK = DemoSettings(
    sizes=(32, 64, 128),
    log2_lrs=tuple(float(x) for x in range(-9, -3)),
    seeds=(0,),
    base=DEFAULT_BASE.with_(steps=100),
)
# Depth (bench/results/depth_transfer.md): width 64, 2 → 16 blocks (8×), the same training
# setting as the width demo otherwise.
DEPTH_DEFAULT = DemoSettings(
    sizes=(2, 4, 8, 16),
    log2_lrs=tuple(float(x) for x in range(-10, -2)),
    seeds=(0,),
    base=DEFAULT_BASE.with_(width=64),
    rules=("mup", "completep"),
    axis="depth",
)
DEPTH_QUICK = DemoSettings(
    sizes=(2, 4, 8),
    log2_lrs=tuple(float(x) for x in range(-9, -3)),
    seeds=(0,),
    base=DEFAULT_BASE.with_(width=64, steps=100),
    rules=("mup", "completep"),
    axis="depth",
)
# ResNet on Fashion-MNIST (``training.reference.RESNET``): 3 stages of width, 2 × and 4 × width
# channels, one block each; SGD with momentum 0.9 (Tensor Programs V's ResNet setting), batch 32,
# a cosine decay to 10 % (a constant LR left the last steps' noise in every score); BatchNorm's
# statistics recomputed before the validation (``TrainConfig.recompute_bn_stats``). Measured,
# 2 seeds, in docs/demo.md: every claim holds.
RESNET_BASE = TrainConfig(
    model="resnet",
    depth=1,
    batch_size=32,
    steps=150,
    optimizer="sgd",
    warmup_steps=0,
    schedule="cosine",
    eval_batches=8,
    eval_batch_size=64,
)
RESNET_DEFAULT = DemoSettings(
    sizes=(8, 16, 32, 64),
    log2_lrs=tuple(float(x) for x in range(-9, -1)),
    seeds=(0,),
    base=RESNET_BASE,
)
RESNET_QUICK = DemoSettings(
    sizes=(8, 16, 32),
    log2_lrs=tuple(float(x) for x in range(-7, -1)),
    seeds=(0,),
    base=RESNET_BASE.with_(steps=100),
)
# BERT (``models.bert``, byte-level masked LM, 15 % masking) on Shakespeare: the GPT's setting
# otherwise (2 blocks, AdamW, 200 steps of 16 × 64 bytes). The decoder is untied: tied to an
# embedding drawn with the rules' σ = 1, it starts with logits of size √width (9 nats at init
# at width 16); ``tie_embeddings=True`` with a smaller ``init_std`` is the alternative. Not yet
# measured at these defaults; see docs/demo.md.
BERT_BASE = DEFAULT_BASE.with_(model="bert")
BERT_DEFAULT = DemoSettings(
    sizes=(32, 64, 128, 256),
    log2_lrs=tuple(float(x) for x in range(-11, -3)),
    seeds=(0,),
    base=BERT_BASE,
)
BERT_QUICK = DemoSettings(
    sizes=(32, 64, 128),
    log2_lrs=tuple(float(x) for x in range(-9, -3)),
    seeds=(0,),
    base=BERT_BASE.with_(steps=100),
)
# Batch size, sequence length, steps, schedule (Tensor Programs V § 6.1, Fig. 19): the GPT of
# the width demo at its proxy width 32, with µP's base 16 (so SP and µP differ by 2×, and one
# LR grid brackets both optima; width 64 costs 2–3× the CPU time per run), 2 blocks; all but
# the varied setting as in DEFAULT_BASE (200 steps of 16 × 64 bytes, constant LR). Batch size
# is varied at fixed steps and steps at fixed batch size, so the runs see more or fewer tokens;
# that is the question a practitioner asks ("I will train 4× longer / with a 4× batch: keep
# the LR?"). Measured in docs/demo.md.
AXIS_BASE = DEFAULT_BASE.with_(width=32, base_width=16)
AXIS_QUICK_BASE = AXIS_BASE.with_(steps=100)
AXIS_LRS = tuple(float(x) for x in range(-9, -2))
AXIS_QUICK_LRS = tuple(float(x) for x in range(-8, -2))
AXIS_SIZES: dict[str, tuple[tuple[Size, ...], tuple[Size, ...]]] = {
    # axis: (default sizes, --quick sizes)
    "batch": ((4, 8, 16, 32), (4, 16, 32)),
    "seq-len": ((32, 64, 128), (32, 64, 128)),
    "steps": ((25, 50, 100, 200), (12, 25, 100)),
    "schedule": (tuple(SCHEDULE_SETTINGS), tuple(SCHEDULE_SETTINGS)),
}
AXIS_PRESETS: dict[tuple[str, str, bool], DemoSettings] = {
    ("gpt", axis, quick): DemoSettings(
        sizes=sizes[quick],
        log2_lrs=AXIS_QUICK_LRS if quick else AXIS_LRS,
        seeds=(0,),
        base=AXIS_QUICK_BASE if quick else AXIS_BASE,
        axis=axis,  # type: ignore[arg-type]  # the keys of AXIS_SIZES are axes
    )
    for axis, sizes in AXIS_SIZES.items()
    for quick in (False, True)
}

# Hugging Face's BertForMaskedLM through parametrize_hf (tied decoder, HF's own init at the
# base width: N(0, 0.02²)), on the same masked bytes as BERT_BASE, 400 steps: from that small
# init it sits on the byte-unigram plateau (3.3 nats) for the first 100-200 steps at every LR
# (measured in docs/demo.md), so 100 steps would rank LRs by noise.
HF_BERT_BASE = BERT_BASE.with_(model="hf-bert", tie_embeddings=True, steps=400)
HF_BERT_DEFAULT = DemoSettings(
    sizes=(32, 64, 128, 256),
    log2_lrs=tuple(float(x) for x in range(-11, -5)),
    seeds=(0,),
    base=HF_BERT_BASE,
)
HF_BERT_QUICK = DemoSettings(
    sizes=(32, 64),
    log2_lrs=tuple(float(x) for x in range(-10, -6)),
    seeds=(0,),
    base=HF_BERT_BASE,
)
MODELS = ("gpt", "resnet", "bert", "hf-bert")
"""The reference models the demo trains (``--model``)."""
PRESETS: dict[tuple[str, str, bool], DemoSettings] = {
    ("gpt", "width", False): DEFAULT,
    ("gpt", "width", True): QUICK,
    ("gpt", "depth", False): DEPTH_DEFAULT,
    ("gpt", "depth", True): DEPTH_QUICK,
    ("resnet", "width", False): RESNET_DEFAULT,
    ("resnet", "width", True): RESNET_QUICK,
    ("bert", "width", False): BERT_DEFAULT,
    ("bert", "width", True): BERT_QUICK,
    ("hf-bert", "width", False): HF_BERT_DEFAULT,
    ("hf-bert", "width", True): HF_BERT_QUICK,
    **AXIS_PRESETS,
}


def settings_for(
    quick: bool = False,
    *,
    model: str = "gpt",
    vary: str = "width",
    widths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    values: Sequence[Size] | None = None,
    log2_lrs: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    rules: Sequence[str] | None = None,
    text: str | None = None,
    **train_options: Any,
) -> DemoSettings:
    """The default (or ``--quick``) settings of ``vary`` with the user's changes applied.

    ``values`` are the swept settings of ``vary`` (``widths`` / ``depths`` are the same for
    those two axes); integers, or schedule names with ``vary="schedule"`` (strings of digits are
    read as integers, as the command line gives them). The other dimensions are fixed by train
    options (``depth=`` across widths, ``width=`` across depths; both on the other axes).
    ``model`` is the reference model: ``gpt`` or ``bert`` (Shakespeare, or ``text``) or
    ``resnet`` (Fashion-MNIST).
    """
    if vary not in AXES:
        raise DemoError(f"vary must be one of {', '.join(AXES)}, got {vary!r}")
    if model not in MODELS:
        raise DemoError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if (model, vary, quick) not in PRESETS:
        can = sorted({a for m, a, _ in PRESETS if m == model}, key=AXES.index)
        raise DemoError(f"the {model} demo varies {' or '.join(can)} only, not {vary!r}")
    if text is not None and model == "resnet":
        raise DemoError("--text is for the text models; the ResNet trains on Fashion-MNIST")
    info = axis_info(vary)
    sizes = _swept_values(vary, widths, depths, values)
    for name in info.fields:
        if name in train_options:
            flag = name.replace("_", "-")
            raise DemoError(
                f"the demo varies the {info.plural}: give the {info.plural} to sweep (--values"
                f"{f' or --{vary}s' if vary in ('width', 'depth') else ''}), not one {flag} "
                f"(--{flag})"
            )
    preset = PRESETS[model, vary, quick]
    base = preset.base
    if text is not None:
        try:
            base = base.with_(data=text)
        except ValueError as exc:
            raise DemoError(str(exc)) from None
    if train_options:
        try:
            base = TrainConfig.from_dict({**base.to_dict(), **train_options})
        except (TypeError, ValueError) as exc:
            raise DemoError(str(exc)) from None
    return DemoSettings(
        sizes=tuple(sizes) if sizes is not None else preset.sizes,
        log2_lrs=tuple(float(x) for x in log2_lrs) if log2_lrs is not None else preset.log2_lrs,
        seeds=tuple(seeds) if seeds is not None else preset.seeds,
        base=base,
        rules=tuple(rules) if rules is not None else preset.rules,
        axis=preset.axis,
    )


def _swept_values(
    vary: str,
    widths: Sequence[int] | None,
    depths: Sequence[int] | None,
    values: Sequence[Size] | None,
) -> list[Size] | None:
    """The user's settings of the varied axis (None: the preset's), checked against ``vary``."""
    given = {"widths": widths, "depths": depths}
    for name, sizes in given.items():
        if sizes is not None and name != f"{vary}s":
            fixed = name[:-1]
            hint = (
                f"give one {fixed} (--{fixed} N), or vary the {fixed} (--vary {fixed})"
                if vary in ("width", "depth")
                else f"give the {axis_info(vary).plural} as --values, and one {fixed} (--{fixed} N)"
            )
            raise DemoError(f"{name} are fixed when the demo varies the {vary}: {hint}")
    mine = given.get(f"{vary}s")
    if mine is not None and values is not None:
        raise DemoError(f"give the {vary}s once: --{vary}s or --values, not both")
    chosen = values if values is not None else mine
    if chosen is None:
        return None
    return [int(v) if isinstance(v, str) and v.isdigit() else v for v in chosen]


# ------------------------------------------------------------------------------ running
