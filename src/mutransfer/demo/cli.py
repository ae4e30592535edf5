"""``mutransfer demo``: the command line of the demo."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from ..data import DataNotFoundError
from ..errors import UserError
from .axes import AXES, SCHEDULE_SETTINGS
from .run import run_demo
from .settings import (
    MODELS,
    DemoError,
    settings_for,
)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 32,64,128, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _lr_list(text: str) -> list[float]:
    """``-11:-4`` (every integer in between, both ends included) or ``-10,-8.5,-7``."""
    text = text.replace(" ", "")
    try:
        if ":" in text:
            first, last = (float(x) for x in text.split(":"))
            if first > last or first != int(first) or last != int(last):
                raise ValueError
            return [float(x) for x in range(int(first), int(last) + 1)]
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected log2 learning rates as a range like -11:-4 or a list like -10,-8,-6 "
            f"(write --lrs=-11:-4 so the minus sign is not read as an option), got {text!r}"
        ) from None


def _str_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="µTransfer on real text: learning rate × width, SP vs µP (the first thing to run)",
        description=(
            "Sweep the learning rate at several widths of a small GPT on Shakespeare, under SP "
            "and under µP; show that µP's optimum stays put while SP's drifts, and what "
            "transferring the small model's LR to the big one costs. With --vary depth: the "
            "same across depths (2 to 16 blocks at width 64), µP vs CompleteP. With --vary "
            "batch, seq-len, steps or schedule: µP (SP beside it) at width 32 across batch "
            "sizes, sequence lengths, training lengths or LR schedules: does the best LR stay "
            "put along that axis, or move (and which way)? Interrupt it at "
            "any time: the same command resumes. With --model resnet: a small ResNet on "
            "Fashion-MNIST with SGD-momentum (or --optimizer adamw); --model bert: a masked-LM "
            "BERT on the same text; --model hf-bert: Hugging Face's BertForMaskedLM (tied "
            "decoder, through parametrize_hf) on it. Outputs: lr_transfer.png "
            "(lr_transfer_depth.png), summary.json, report.md."
        ),
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="gpt",
        help="gpt: byte-level GPT on Shakespeare (default); bert: byte-level BERT, masked LM "
        "on the same text; hf-bert: Hugging Face's BertForMaskedLM (needs transformers) on the "
        "same masked bytes; resnet: pre-activation ResNet on Fashion-MNIST (SGD with momentum "
        "by default)",
    )
    parser.add_argument(
        "--vary",
        choices=AXES,
        default="width",
        help="sweep widths (SP vs µP, default), depths (µP vs CompleteP at one width), or "
        "batch sizes, sequence lengths, step counts or LR schedules (µP and SP at one width)",
    )
    parser.add_argument(
        "--out",
        help="output folder (default: runs/demo; runs/demo-depth with --vary depth, "
        "runs/demo-resnet / runs/demo-bert with --model)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small grid (GPT: 1–1.5 minutes on 2 idle cores; ResNet, BERT: 36 runs, "
        "about 3–4 CPU-minutes; HF BERT: widths 32, 64, 16 runs of 400 steps)",
    )
    parser.add_argument("--widths", type=_int_list, help="e.g. 32,64,128,256 (--vary width)")
    parser.add_argument("--depths", type=_int_list, help="e.g. 2,4,8,16 (--vary depth)")
    parser.add_argument(
        "--values",
        type=_str_list,
        help="the settings of the varied axis, e.g. --vary batch --values 4,8,16,32; "
        f"schedules by name: {','.join(SCHEDULE_SETTINGS)}",
    )
    parser.add_argument("--lrs", type=_lr_list, help="log2 learning rates: --lrs=-11:-4 or -10,-8")
    parser.add_argument(
        "--rules",
        type=_str_list,
        help="presets compared, e.g. mup,completep,depth-mup (default: sp,mup across widths, "
        "mup,completep across depths)",
    )
    parser.add_argument("--optimizer", help="adamw (default), adam, sgd, lion or muon")
    parser.add_argument("--steps", type=int, help="training steps per run")
    parser.add_argument("--seeds", type=_int_list, help="seeds averaged per point, e.g. 0,1,2")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--stack",
        action="store_true",
        help="train the runs of one size that differ only in LR, seed or rules as one stacked "
        "model per worker (each still its own run file; little gain on a CPU: docs/stacked.md)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the runs train: cpu (default), auto (the GPU if there is one), cuda, cuda:1",
    )
    parser.add_argument("--text", metavar="PATH", help="train on your own UTF-8 text file")
    parser.add_argument("--batch-size", type=int, help="sequences per step")
    parser.add_argument("--seq-len", type=int, help="bytes per sequence")
    parser.add_argument("--depth", type=int, help="transformer blocks (all but --vary depth)")
    parser.add_argument(
        "--width",
        type=int,
        help="model width (all but --vary width; default 64 across depths, 32 on other axes)",
    )
    parser.add_argument("--warmup", type=int, dest="warmup_steps", help="LR warmup steps")
    parser.add_argument(
        "--qk-norm",
        dest="qk_norm",
        action="store_const",
        const=True,
        help="RMS-normalise each head's queries and keys (recommended with --vary depth)",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    names = (
        "steps",
        "batch_size",
        "seq_len",
        "depth",
        "width",
        "warmup_steps",
        "optimizer",
        "qk_norm",
    )
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    out = args.out or default_out(args.model, args.vary)
    try:
        settings = settings_for(
            args.quick,
            model=args.model,
            vary=args.vary,
            widths=args.widths,
            depths=args.depths,
            values=args.values,
            log2_lrs=args.lrs,
            seeds=args.seeds,
            rules=args.rules,
            text=args.text,
            **options,
        )
        run_demo(
            out,
            workers=args.workers,
            settings=settings,
            progress=args.progress,
            device=args.device,
            stacked=args.stack,
            command="mutransfer " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None,
        )
    except (DataNotFoundError, DemoError) as exc:
        raise UserError(str(exc)) from None
    return 0


def default_out(model: str, vary: str) -> str:
    """``runs/demo`` (GPT across widths), ``runs/demo-depth``, ``runs/demo-batch``,
    ``runs/demo-resnet``..."""
    parts = [p for p in (model if model != "gpt" else "", vary if vary != "width" else "") if p]
    return "-".join(["runs/demo", *parts])
