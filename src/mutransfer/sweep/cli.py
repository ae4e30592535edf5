"""``mutransfer sweep``, ``transfer``, ``report`` and ``dashboard``.

A STUDY argument is either the sweep's config file (``sweep.toml``: its name and storage are read
from it) or the sweep's name (storage: ``--storage URL``, default ``runs/<name>.journal``).
Heavy imports (optuna, torch, matplotlib) happen inside the commands so that ``mutransfer --help``
stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_STUDY_HELP = (
    "the sweep's config file (e.g. sweep.toml), or its name with --storage "
    "(default storage: runs/NAME.journal)"
)
_STORAGE_HELP = (
    "where trials are stored: a journal file path (default runs/NAME.journal; one machine, "
    "many processes) or postgresql://user@host/db (many machines)"
)


def register(subparsers: Any) -> None:
    sweep = subparsers.add_parser(
        "sweep",
        help="tune hyperparameters on small proxy widths (Optuna; resumable, many workers)",
        description=(
            "Run a µTransfer sweep from a TOML config: one Optuna study per proxy width, "
            "N single-threaded worker processes here. On several machines, run the same "
            "command on each against one PostgreSQL --storage. Re-running resumes."
        ),
    )
    sweep.add_argument("config", help="sweep config (TOML); see docs/sweeps.md")
    sweep.add_argument(
        "--workers", type=int, default=1, help="worker processes on this machine (default 1)"
    )
    sweep.add_argument("--storage", help=_STORAGE_HELP)
    sweep.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar of finished trials with an ETA (default: when stderr is a terminal)",
    )
    sweep.add_argument(
        "--stack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="built-in trainer: each worker trains several trials of one width as one stacked "
        "model, each still its own trial (default: sweep.stack in the config, else off)",
    )
    sweep.add_argument(
        "--device",
        default="cpu",
        help="built-in trainer: where this machine's workers train — cpu (default), auto (the "
        "GPU if there is one), cuda, cuda:1",
    )
    sweep.set_defaults(func=cmd_sweep)

    tr = subparsers.add_parser(
        "transfer",
        help="emit the target width's config and plan with the proxy's best hyperparameters",
        description=(
            "µTransfer: take the best point of the sweep (at its widest proxy width, or "
            "--from-width) and write the target's config and µP plan (plan.json)."
        ),
    )
    tr.add_argument("study", help=_STUDY_HELP)
    tr.add_argument("--to-width", type=int, required=True, help="width of the target model")
    tr.add_argument("--from-width", type=int, help="proxy width to take the best point from")
    tr.add_argument("--to-depth", type=int, help="depth of the target (default: the proxy's)")
    tr.add_argument(
        "--to-batch", type=int, help="batch size of the target: the LR moves by --batch-rule"
    )
    tr.add_argument(
        "--to-steps", type=int, help="training steps of the target: the LR moves by --steps-rule"
    )
    tr.add_argument(
        "--batch-rule",
        choices=("fit", "sqrt", "linear", "none"),
        help="how the LR moves with batch size: fit (the sweep searched batch_size; default "
        "then), sqrt (Adam), linear (SGD), none",
    )
    tr.add_argument(
        "--steps-rule",
        choices=("fit", "none"),
        help="how the LR moves with training steps: fit (the sweep searched steps; default "
        "then), none",
    )
    tr.add_argument("--storage", help=_STORAGE_HELP)
    tr.add_argument("--format", choices=("toml", "json"), default="toml", help="config format")
    tr.add_argument("--out", help="output folder (default runs/NAME-transfer-wWIDTH)")
    tr.set_defaults(func=cmd_transfer)

    rep = subparsers.add_parser(
        "report",
        help="figures and tables of a sweep: loss vs hyperparameter per width, optimum vs width",
        description=(
            "Summarise a sweep: loss against each hyperparameter per width, the best value per "
            "width (the stability picture), a table in the terminal and report.md."
        ),
    )
    rep.add_argument("study", help=_STUDY_HELP)
    rep.add_argument("--storage", help=_STORAGE_HELP)
    rep.add_argument("--out", help="output folder (default runs/NAME-report)")
    rep.set_defaults(func=cmd_report)

    dash = subparsers.add_parser(
        "dashboard",
        help="browse a sweep's trials in optuna-dashboard (on the sweep's own storage)",
        description=(
            "Start optuna-dashboard on the sweep's storage (journal file or database), opened "
            "the way the workers open it; safe to run while the sweep runs."
        ),
    )
    dash.add_argument("study", help=_STUDY_HELP)
    dash.add_argument("--storage", help=_STORAGE_HELP)
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    dash.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    dash.set_defaults(func=cmd_dashboard)


def _quiet_optuna() -> None:
    """Our own one-line-per-trial log replaces Optuna's INFO messages on the command line."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def resolve_study(study: str, storage: str | None) -> tuple[str, str]:
    """(sweep name, storage URL) from a config file or a name."""
    from .config import load_config
    from .storage import default_storage, storage_url

    path = Path(study)
    if path.suffix == ".toml" or path.is_file():
        spec = load_config(path)
        return spec.name, storage_url(spec, storage)
    return study, storage or default_storage(study)


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .api import Sweep
    from .errors import ConfigError

    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    _quiet_optuna()
    sweep = Sweep.from_config(args.config, storage=args.storage)
    if args.stack is not None and args.stack != sweep.spec.stack:
        try:
            sweep = Sweep.from_spec(sweep.spec.with_(stack=args.stack))
        except ConfigError as exc:
            raise ConfigError(f"--stack: {exc}") from None
    spec = sweep.spec
    per_width = spec.points_per_width
    if spec.strategy == "independent":
        what = f"≤ {per_width} trials (independent search: {spec.space.names[0]} first)"
    elif spec.sampler == "grid":
        what = f"{per_width} grid points"
    else:
        what = f"{per_width} {spec.sampler} trials"
    stacked = "; trials stacked" if spec.stack else ""
    stacked += f"; runs on {args.device}" if args.device != "cpu" else ""
    print(
        f"sweep {spec.name!r}: widths {list(spec.widths)} × {what} × "
        f"{len(spec.seeds)} seed(s); storage {sweep.storage_url}{stacked}",
        flush=True,
    )
    results = sweep.run(
        workers=args.workers, processes=True, progress=args.progress, device=args.device
    )
    print()
    print(results.table())
    print()
    source = args.config
    storage = f" --storage {args.storage}" if args.storage else ""
    print(f"next: mutransfer report {source}{storage}")
    print(f"      mutransfer transfer {source}{storage} --to-width WIDTH")
    print(f"      mutransfer dashboard {source}{storage}   (browse every trial)")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from .results import SweepResults
    from .transfer import transfer

    _quiet_optuna()
    name, url = resolve_study(args.study, args.storage)
    result = transfer(
        SweepResults.load(name, url),
        args.to_width,
        args.from_width,
        to_depth=args.to_depth,
        to_batch=args.to_batch,
        to_steps=args.to_steps,
        batch_rule=args.batch_rule,
        steps_rule=args.steps_rule,
    )
    out = Path(args.out) if args.out else Path("runs") / f"{name}-transfer-w{args.to_width}"
    paths = result.write(out, args.format)
    sys.stdout.write(result.to_toml() if args.format == "toml" else result.to_json())
    print()
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    if result.plan is None:
        print(
            "(no plan: a custom objective builds its own model; pass these values to "
            "mutransfer.parametrize(...) at the target width)"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import make_report
    from .results import SweepResults

    _quiet_optuna()
    name, url = resolve_study(args.study, args.storage)
    results = SweepResults.load(name, url)
    out = Path(args.out) if args.out else Path("runs") / f"{name}-report"
    report = make_report(results, out)
    print(report.text)
    for kind, path in report.files.items():
        print(f"wrote {kind}: {path}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import serve

    _quiet_optuna()
    name, url = resolve_study(args.study, args.storage)
    serve(name, url, host=args.host, port=args.port)
    return 0
