"""The ``mutransfer`` command line: a thin dispatcher over one module per subcommand.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed args and returning an exit status).
Modules are imported lazily so that ``mutransfer --help`` stays fast and optional extras
(matplotlib, optuna, transformers) are only needed by the commands that use them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .errors import UserError

# subcommand → module that registers it
COMMANDS: dict[str, str] = {
    "demo": "mutransfer.demo.cli",
    "coord-check": "mutransfer.coord.cli",
    "sweep": "mutransfer.sweep.cli",
    "transfer": "mutransfer.sweep.cli",
    "report": "mutransfer.sweep.cli",
    "train": "mutransfer.training.cli",
}


__all__ = ["COMMANDS", "UserError", "build_parser", "main"]  # UserError: the library's own


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutransfer",
        description="µP and µTransfer for PyTorch: parametrize, check, sweep, transfer, train.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mutransfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    registered: set[str] = set()
    for name, module_name in COMMANDS.items():
        if module_name in registered or (wanted in COMMANDS and COMMANDS[wanted] != module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith("mutransfer"):
                continue  # command not part of this build
            raise
        module.register(sub)
        registered.add(module_name)
        del name
    return parser


HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def prefer_huge_pages() -> None:
    """Have torch back CPU buffers of 2 MiB and more with transparent huge pages.

    Without it, every large buffer torch allocates on a CPU (a weight's fresh gradient, a wide
    activation) is a new ``mmap`` that the kernel fills one zeroed 4 KiB page at a time: at
    width 8192 one 8192 × 8192 gradient took 155 ms to allocate and write against 33 ms with
    huge pages (2026-12-02, this project's 2-core EPYC), and the coordinate check on mup's
    example ran 1.4× faster (BENCHMARKS.md). torch reads ``THP_MEM_ALLOC_ENABLE`` once, at its
    first buffer of 2 MiB, so the command line sets it before any command runs; a value the
    user set (``THP_MEM_ALLOC_ENABLE=0`` turns it off) is kept. The library's functions cannot
    do the same for a user's own script, where large tensors may already exist: set the
    variable before the script starts (docs/coord-check.md).
    """
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")


def main(argv: Sequence[str] | None = None) -> int:
    prefer_huge_pages()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mutransfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nmutransfer {args.command}: interrupted; finished work is saved, "
            "run the same command again to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: exceptions such as UserError
    # raised by subcommands are the classes of `mutransfer.cli`, which this copy's differ from.
    from mutransfer.cli import main as _main

    raise SystemExit(_main())
