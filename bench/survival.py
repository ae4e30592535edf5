"""What survives: deepcopy, pickle, state_dict, to_empty, torch.compile, DDP, FSDP2 × library.

For mutransfer, microsoft/mup 1.0.0 and unit-scaling 0.3.5 (u-µP), each cell applies one
operation to the library's set-up of the same small GPT, builds the optimizer the library's
standard way from the result, takes one AdamW step and checks that the loss (forward
multipliers) and every parameter's update (per-parameter LR) equal those of the reference step
taken without the operation (``bench/survival_cases/``). A cell is ``ok``, ``wrong`` (ran but
the µP behaviour changed) or ``fails`` (raised). A library that is not installed gets a
"not installed" column.

    .venv/bin/python bench/survival.py            # every cell (about a minute: compile is slow)
    .venv/bin/python bench/survival.py --quick    # no compile, no distributed cells (seconds)
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any

import torch

from common import (
    arg_parser,
    command_line,
    machine_info,
    machine_line,
    markdown_table,
    write_results,
)
from peers import INSTALL_HINT, available
from survival_cases import distributed
from survival_cases.check import Step, compare, failure, step
from survival_cases.libraries import LIBRARIES, batch
from survival_cases.operations import IN_PROCESS

NAME = "survival"
OPERATIONS = (*IN_PROCESS, *distributed.WRAPS)
QUICK_SKIPS = {"torch.compile (fullgraph)", *distributed.WRAPS}
SYMBOL = {"ok": "✅ ok", "wrong": "❌ wrong", "fails": "💥 fails"}


def reference(name: str) -> Step:
    lib = LIBRARIES[name]()
    model = lib.build()
    return step(model, lib.optimizer(model), lib.loss, batch())


def in_process(name: str, operation: str) -> dict[str, Any]:
    lib = LIBRARIES[name]()
    try:
        model = IN_PROCESS[operation](lib)
        got = step(model, lib.optimizer(model), lib.loss, batch())
    except Exception as err:  # the outcome is the measurement
        return {**failure(err), "traceback": traceback.format_exc(limit=4)}
    return compare(reference(name), got)


def main(argv: list[str] | None = None) -> int:
    args = arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(args.threads)
    versions = available()
    import mutransfer

    versions = {"mutransfer": mutransfer.__version__, **versions}
    libraries = [n for n in LIBRARIES if versions.get(n)]
    cells: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in LIBRARIES}
    seconds: dict[str, float] = {}
    for operation in OPERATIONS:
        started = time.perf_counter()
        if args.quick and operation in QUICK_SKIPS:
            for n in libraries:
                cells[n][operation] = {"status": "skipped", "detail": "skipped in --quick"}
            continue
        if operation in IN_PROCESS:
            for n in libraries:
                print(f"[{NAME}] {n} / {operation} ...", flush=True)
                cells[n][operation] = in_process(n, operation)
        seconds[operation] = time.perf_counter() - started
    if not args.quick:
        started = time.perf_counter()
        print(f"[{NAME}] DDP and FSDP2 in 2 gloo processes ...", flush=True)
        results = distributed.run(libraries)
        for n in libraries:
            ref = reference(n)
            for how in distributed.WRAPS:
                got = results[f"{n}/{how}"]
                cells[n][how] = compare(ref, got) if isinstance(got, Step) else got
        seconds["DDP + FSDP2"] = time.perf_counter() - started
    for n in LIBRARIES:
        if n not in libraries:
            for operation in OPERATIONS:
                cells[n][operation] = {
                    "status": "not installed",
                    "detail": INSTALL_HINT.get(n, ""),
                }
    payload = {
        "benchmark": NAME,
        "command": command_line(argv),
        "quick": args.quick,
        "machine": machine_info(),
        "versions": versions,
        "operations": list(OPERATIONS),
        "cells": cells,
        "seconds": seconds,
    }
    payload["reading"] = reading(payload)
    json_path, md_path = write_results(NAME, payload, render(payload), args.out_dir)
    print(render(payload))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def _cell(cell: dict[str, Any]) -> str:
    return SYMBOL.get(cell["status"], cell["status"])


def render(payload: dict[str, Any]) -> str:
    libs = list(payload["cells"])
    rows = [
        [op, *(_cell(payload["cells"][lib][op]) for lib in libs)] for op in payload["operations"]
    ]
    headers = [
        "operation",
        *(f"{lib} {payload['versions'].get(lib) or ''}".strip() for lib in libs),
    ]
    details = []
    for lib in libs:
        for op in payload["operations"]:
            cell = payload["cells"][lib][op]
            if cell["status"] in ("wrong", "fails"):
                details.append(f"- {lib} / {op}: {cell['status']} — `{_code(cell['detail'])}`")
    return "\n\n".join(
        [
            "## What survives: common PyTorch operations × library",
            f"Command: `{payload['command']}`  \nMachine: {machine_line(payload['machine'])}",
            "Each cell applies the operation to the library's own set-up of the same GPT "
            "(width 64, base width 32, 2 blocks, 4 heads), builds the optimizer the library's "
            "standard way from the result (mutransfer: `AdamW(plan.param_groups(lr, "
            "model=...))`; mup: `MuAdamW(model.parameters())`; unit-scaling: "
            "`unit_scaling.optim.AdamW(model.parameters())`), takes one step and compares the "
            "loss (forward multipliers) and every parameter's update (per-parameter LR) with the "
            "same step taken without the operation. ✅ ok = both match; ❌ wrong = it ran but "
            "the µP behaviour changed; 💥 fails = the library raised. DDP and FSDP2 run in 2 "
            "gloo processes on CPU, half the batch each.",
            markdown_table(headers, rows),
            ("What went wrong, verbatim:\n\n" + "\n".join(details)) if details else "",
            payload["reading"],
        ]
    )


def _code(text: str) -> str:
    return text.replace("`", "'")


def reading(payload: dict[str, Any]) -> str:
    cells = payload["cells"]
    lines = ["Reading (generated from the table):", ""]
    for lib, row in cells.items():
        statuses = [c["status"] for c in row.values()]
        if all(s == "not installed" for s in statuses):
            lines.append(f"- {lib}: not installed, not measured.")
            continue
        ran = [op for op, c in row.items() if c["status"] in ("ok", "wrong", "fails")]
        good = [op for op in ran if row[op]["status"] == "ok"]
        bad = [f"{op} ({row[op]['status']})" for op in ran if row[op]["status"] != "ok"]
        lines.append(
            f"- {lib}: {len(good)} of {len(ran)} operations keep the µP behaviour"
            + (f"; not: {', '.join(bad)}." if bad else ".")
        )
    ours = cells.get("mutransfer", {})
    lost = [op for op, c in ours.items() if c["status"] in ("wrong", "fails")]
    if lost:
        lines.append(
            "- **mutransfer loses here too**: " + ", ".join(lost) + " — see the details above."
        )
    skipped = sorted(
        {op for row in cells.values() for op, c in row.items() if c["status"] == "skipped"}
    )
    if skipped:
        lines.append(f"- Not run in this (--quick) run: {', '.join(skipped)}.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
