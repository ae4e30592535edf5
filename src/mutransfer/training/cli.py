"""``mutransfer train CONFIG.toml``: the command line of the training loop.

Under ``torchrun`` every process runs this command; each reads the same config. Options given
on the command line override the file (``--set lr=3e-3``, ``--steps``, ``--out``), and
``--hparams`` merges the output of ``mutransfer transfer`` into it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import UserError
from .config import ConfigError, load, parse_override


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the target model with transferred hyperparameters (1 process, DDP, FSDP2)",
        description=(
            "Train the reference GPT or a Hugging Face GPT-2/Llama at the target width with "
            "the µP plan and transferred hyperparameters. Launch with torchrun for DDP/FSDP2: "
            "torchrun --nproc-per-node N -m mutransfer.cli train CONFIG.toml"
        ),
    )
    parser.add_argument("config", help="run configuration (TOML, or JSON)")
    parser.add_argument(
        "--hparams",
        metavar="FILE",
        help="transferred hyperparameters (TOML/JSON, e.g. from `mutransfer transfer`); "
        "they override the config file",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one option (repeatable), e.g. --set lr=0.004 --set precision=bf16",
    )
    parser.add_argument("--steps", type=int, help="total optimizer steps (overrides steps)")
    parser.add_argument("--out", metavar="DIR", help="run folder (overrides out_dir)")
    parser.add_argument(
        "--resume", metavar="auto|never|PATH", help="where to resume from (overrides resume)"
    )
    parser.add_argument(
        "--allow-change",
        dest="allow_changes",
        action="append",
        default=[],
        metavar="FIELD",
        help="when resuming, accept a changed FIELD (e.g. lr) from the checkpoint's config; "
        "comma-separated or repeatable",
    )
    parser.add_argument(
        "--monitor-every",
        type=int,
        metavar="N",
        help="sample every layer's activation and update RMS every N steps into monitor.jsonl, "
        "warning when a layer drifts from the reference (overrides monitor_every)",
    )
    parser.add_argument(
        "--monitor-reference",
        metavar="RUN_DIR",
        help="compare the samples with this run's (e.g. the proxy's) monitor.jsonl",
    )
    parser.add_argument(
        "--tensorboard",
        nargs="?",
        const=True,
        metavar="DIR",
        help="write TensorBoard event files (to DIR, default <out>/tensorboard)",
    )
    parser.add_argument(
        "--wandb-project", metavar="NAME", help="log to this Weights & Biases project"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointWriteError
    from .loop import TrainingDiverged, train

    try:
        overrides = dict(parse_override(o) for o in args.overrides)
        for key, value in (
            ("steps", args.steps),
            ("out_dir", args.out),
            ("resume", args.resume),
            ("monitor_every", args.monitor_every),
            ("monitor_reference", args.monitor_reference),
            ("tensorboard", args.tensorboard),
            ("wandb_project", args.wandb_project),
        ):
            if value is not None:
                overrides[key] = value
        if args.allow_changes:
            overrides["allow_changes"] = [
                name.strip() for item in args.allow_changes for name in item.split(",") if name
            ]
        config = load(args.config, hparams=args.hparams, overrides=overrides)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    try:
        train(config)
    except (ConfigError, TrainingDiverged, CheckpointWriteError) as exc:
        raise UserError(str(exc)) from None
    return 0
