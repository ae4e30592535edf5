"""Run every benchmark and regenerate BENCHMARKS.md from their results.

    .venv/bin/python bench/run_all.py --mode full      # the recorded numbers (`make bench`)
    .venv/bin/python bench/run_all.py --mode quick     # CI smoke (`make bench-quick`), seconds
    .venv/bin/python bench/run_all.py --render-only    # rebuild BENCHMARKS.md, run nothing

Each benchmark runs as its own process (one crash does not stop the others) and writes
``<name>.json`` and ``<name>.md`` into the results folder. BENCHMARKS.md is then assembled from
the hand-written intro in ``bench/templates/BENCHMARKS.md.in``, a summary table computed from
the JSON files, and the markdown sections, so it is never edited by hand and cannot drift from
the numbers.

Full mode writes into ``bench/results/`` and the repository's ``BENCHMARKS.md``. Quick mode
writes into ``runs/bench/quick/`` (never over the recorded results) with a BENCHMARKS.md of its
own there. Full mode warns when the machine is busy (1-minute load average above the core
count): the timings and the transfer runs of a busy machine are slower and noisier.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
TEMPLATE = BENCH / "templates" / "BENCHMARKS.md.in"
QUICK_OUT = ROOT / "runs" / "bench" / "quick"


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--quick",)

    @property
    def script(self) -> Path:
        return BENCH / f"{self.name}.py"


BENCHMARKS = (
    Benchmark("transfer_fidelity", "Transfer fidelity (the demo setting)"),
    Benchmark("peer_overhead", "Per-step overhead per library"),
    Benchmark("coord_check_speed", "Coordinate check wall time", ("--repeats", "3")),
    Benchmark("coord_faults", "Coordinate check: false passes and false fails"),
    Benchmark("plan_7b", "Plan set-up on a 7B meta model"),
    Benchmark("survival", "What survives deepcopy, pickle, compile, DDP, FSDP2"),
    Benchmark("step_overhead", "mutransfer's per-step overhead in detail"),
    Benchmark("depth_transfer", "Depth transfer (µP vs CompleteP vs Depth-µP)"),
    Benchmark("optimizers_transfer", "LR transfer with Lion and Muon"),
    Benchmark("hf_coverage", "Hugging Face families under parametrize_hf"),
    Benchmark("hf_transfer", "LR transfer on Hugging Face GPT-2"),
    Benchmark("reliability", "Faults injected into real sweeps"),
    Benchmark("monitor_overhead", "Watching µP during training: the layer monitor's cost"),
    Benchmark("stacked_throughput", "Stacked proxy runs: sweep throughput", ("--steps", "100")),
    Benchmark("stacked_sweep", "Stacked sweeps: a sweep's trials packed"),
    Benchmark("resnet_coord", "ResNet coordinate check up to 4096 channels"),
    Benchmark("bert_proxy_transfer", "BERT: a proxy shrunk in width and depth, transferred"),
    Benchmark("axis_transfer", "Transfer along batch size, sequence length, steps, schedule"),
    Benchmark("moonshot_transfer", "One proxy sweep → a target differing in all axes"),
)
EXTRA_SECTIONS = (
    ("demo", "The demo's recorded run (SP vs µP)"),
    ("demo_models", "The demo on the ResNet, BERT and Hugging Face BERT"),
)
"""Sections written by other tools (``mutransfer demo``), included when present."""


# -------------------------------------------------------------------------------- running
def run_benchmark(bench: Benchmark, mode: str, out_dir: Path, python: str) -> dict[str, Any]:
    """Run one script in its own process; its output streams to this terminal."""
    args = bench.quick_args if mode == "quick" else bench.full_args
    cmd = [_rel(Path(python)), _rel(bench.script), *args, "--out-dir", _rel(out_dir)]
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if mode == "full" and load > cores:
        print(
            f"[run_all] warning: load average {load:.1f} > {cores} cores before {bench.name}; "
            "other jobs will slow and disturb it",
            flush=True,
        )
    print(f"[run_all] {bench.name}: {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, check=False)
    return {
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before": round(load, 2),
        "command": " ".join(cmd),
    }


def _rel(path: Path) -> str:
    """A path relative to the repository root when inside it: the recorded commands are the
    ones to type there (the scripts run with the repository root as working directory)."""
    try:
        return str(path.absolute().relative_to(ROOT))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------- summary
def _load(out_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((out_dir / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data


Row = list[str]
LIBS = ("mutransfer", "mup", "unit-scaling")


def _best(
    values: dict[str, float | None], lower_is_better: bool = True, tol: float | None = None
) -> str:
    """Which library has the best number; those within ``tol`` of it (default 2 %) tie."""
    known = {k: v for k, v in values.items() if v is not None}
    if len(known) < 2:
        return "—"
    best = min(known.values()) if lower_is_better else max(known.values())
    tol = (0.02 * abs(best) if tol is None else tol) + 1e-12
    winners = [k for k, v in known.items() if abs(v - best) <= tol]
    return " = ".join(winners) if len(winners) > 1 else winners[0]


def summary_transfer(data: dict[str, Any]) -> list[Row]:
    """Like with like: µP (mutransfer's preset vs mup), u-µP (mutransfer's preset vs
    unit-scaling); regret, drift and the best loss at the widest width."""
    v = data["variants"]
    missing = data.get("not_installed", {})

    def value(key: str, field: str) -> float | None:
        if key not in v:
            return None
        res = v[key]
        out: float | None = {
            "regret": res["transfer"]["regret_percent"],
            "drift": res["sweep"]["drift_octaves"],
            "loss": res["transfer"]["direct_best_loss"],
        }[field]
        return out

    def cell(key: str | None, field: str, spec: str) -> str:
        if key is None:
            return "—"
        if key in missing:
            return "not installed"
        if key not in v:
            return "not run"
        x = value(key, field)
        return "diverged" if x is None else format(x, spec)

    widest = data["grid"]["widths"][-1]
    specs = {
        "regret": (f"transfer regret at width {widest}, %", ".2f", 0.25),
        "drift": ("drift of the best LR across widths, octaves", "g", 0.0),
        "loss": (f"best validation loss at width {widest}", ".3f", 0.005),
    }
    rows = []
    for what, keys in (
        ("µP", ("mutransfer-mup", "mup", None)),
        ("u-µP", ("mutransfer-u-mup", None, "unit-scaling")),
    ):
        for field, (label, spec, tol) in specs.items():
            values = {
                lib: value(k, field) if k else None for lib, k in zip(LIBS, keys, strict=True)
            }
            best = _best(values, tol=tol)
            if field != "loss" and "sp" in v:
                best += f"; SP: {cell('sp', field, spec)}"
            rows.append([f"{what}: {label}", *(cell(k, field, spec) for k in keys), best])
    return rows


def summary_overhead(data: dict[str, Any]) -> list[Row]:
    rows = []
    missing = data.get("not_installed", {})
    for impl, res in data["impls"].items():
        if "skipped" in res:
            continue
        r = res["step"]["ratio_vs_plain"]
        values = {lib: r[lib]["median"] if lib in r else None for lib in LIBS}
        cells = [
            "not installed"
            if lib in missing
            else f"{values[lib]:.3f}"
            if values[lib] is not None
            else "—"
            for lib in LIBS
        ]
        noise = abs(r["plain-copy"]["median"] - 1)
        rows.append(
            [
                f"training step time ÷ plain PyTorch, AdamW {impl} (A/A noise {noise:.1%})",
                *cells,
                _best(values, tol=max(noise, 0.02)),
            ]
        )
    return rows


def summary_coord(data: dict[str, Any]) -> list[Row]:
    best, speedup = data["best_seconds"], data["speedup_best"]
    ours = f"{best['mutransfer']:.1f} s ({speedup['mutransfer']}× faster)"
    if "mutransfer_huge_pages" in best:  # results written before huge pages were measured lack it
        ours += (
            f"; as the CLI runs it (huge pages) {best['mutransfer_huge_pages']:.1f} s "
            f"({speedup['mutransfer_huge_pages']}×; mup with them "
            f"{best['mup_huge_pages']:.1f} s)"
        )
    return [
        [
            "coordinate check, best wall time (mup's own example)",
            ours,
            f"{best['mup']:.1f} s",
            "n/a (no coordinate check)",
            _best({"mutransfer": best["mutransfer"], "mup": best["mup"]}),
        ]
    ]


def summary_plan(data: dict[str, Any]) -> list[Row]:
    s = data["summary"]

    def ms(lib: str) -> float | None:
        if lib not in s:
            return None
        return float(s[lib]["plan"]["seconds"]["median"] + s[lib]["optimizer"]["seconds"]["median"])

    values = {lib: ms(lib) for lib in LIBS}
    cells = [
        f"{values[lib] * 1e3:.1f} ms, {s[lib]['param_groups']} groups"
        if values[lib] is not None
        else "not installed"
        for lib in LIBS
    ]
    small = data.get("materialise_small", {})
    after = [
        "works"
        if small.get(lib, {}).get("ok")
        else ("fails" if lib in small else "not installed" if lib not in s else "—")
        for lib in LIBS
    ]
    return [
        ["7B meta model: plan + optimizer set-up", *cells, _best(values)],
        [
            "7B path: meta → to_empty → optimizer + forward",
            *after,
            " = ".join(lib for lib, a in zip(LIBS, after, strict=True) if a == "works") or "—",
        ],
    ]


def summary_survival(data: dict[str, Any]) -> list[Row]:
    cells, counts = [], {}
    for lib in LIBS:
        row = data["cells"].get(lib, {})
        ran = [c for c in row.values() if c["status"] in ("ok", "wrong", "fails")]
        if not ran:
            status = next(iter(row.values()), {}).get("status", "—")
            cells.append(status)
            continue
        ok = sum(c["status"] == "ok" for c in ran)
        counts[lib] = float(ok)
        cells.append(f"{ok} of {len(ran)}")
    return [
        [
            "operations after which the µP behaviour is still right",
            *cells,
            _best(counts, lower_is_better=False),
        ]
    ]


SUMMARIES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "transfer_fidelity": summary_transfer,
    "peer_overhead": summary_overhead,
    "coord_check_speed": summary_coord,
    "plan_7b": summary_plan,
    "survival": summary_survival,
}


def summary_table(out_dir: Path) -> str:
    from common import markdown_table

    rows: list[Row] = []
    notes = []
    for name, fn in SUMMARIES.items():
        data = _load(out_dir, name)
        if data is None:
            notes.append(f"{name}: no results yet")
            continue
        try:
            rows += fn(data)
        except (KeyError, TypeError, ValueError) as err:  # an old or partial result file
            notes.append(f"{name}: results unreadable ({type(err).__name__}: {err})")
    table = markdown_table(["measure", *LIBS, "best"], rows) if rows else "No results yet."
    if rows:
        table += (
            "\n\n`best` names every library within the measure's noise of the best value "
            "(regret: 0.25 points; step time: the A/A control's spread, at least 2 %; other "
            "times: 2 %; best loss: 0.005). Transfer rows compare like with like: µP from "
            "mutransfer's `mup` preset and from mup; u-µP from mutransfer's `u-mup` preset and "
            "from unit-scaling."
        )
    losses = where_we_lose(rows)
    if losses:
        table += "\n\nWhere mutransfer is not the best (from the table):\n\n" + "\n".join(losses)
    ties = [
        f"- {r[0]}: {r[-1].split(';')[0].strip()}"
        for r in rows
        if " = " in r[-1].split(";")[0] and "mutransfer" in r[-1].split(";")[0]
    ]
    if ties:
        table += "\n\nWhere mutransfer only ties (no measurable advantage):\n\n" + "\n".join(ties)
    if notes:
        table += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return table


def where_we_lose(rows: list[Row]) -> list[str]:
    """One line per summary row whose ``best`` column does not include mutransfer."""
    out = []
    for measure, *cells, best in rows:
        winners = best.split(";")[0].strip()
        if winners in ("—", "") or "mutransfer" in winners.split(" = "):
            continue
        values = "; ".join(f"{lib}: {cell}" for lib, cell in zip(LIBS, cells, strict=True))
        out.append(f"- {measure}: best is {winners} ({values}).")
    return out


# -------------------------------------------------------------------------------- render
def _anchor(title: str) -> str:
    keep = [c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_"]
    return "".join(keep)


def render(out_dir: Path, manifest: dict[str, Any] | None) -> str:
    """BENCHMARKS.md from the template, the summary table and the sections in ``out_dir``."""
    sections, contents = [], []
    names = [(b.name, b.title) for b in BENCHMARKS] + list(EXTRA_SECTIONS)
    for name, title in names:
        path = out_dir / f"{name}.md"
        if not path.exists():
            if name in {b.name for b in BENCHMARKS}:
                sections.append(f"## {title}\n\nNo results yet: run `bench/{name}.py`.")
                contents.append(f"- {title} (no results yet)")
            continue
        body = path.read_text(encoding="utf-8").strip()
        heading = body.splitlines()[0].lstrip("# ").strip() if body.startswith("#") else title
        contents.append(f"- [{heading}](#{_anchor(heading)})")
        sections.append(body)
    status = ""
    if manifest is not None:
        failed = [n for n, r in manifest["benchmarks"].items() if r["returncode"] != 0]
        status = (
            f"Last `run_all.py --mode {manifest['mode']}`: {manifest['finished']}, "
            f"{manifest['seconds'] / 60:.1f} min"
            + (f"; **failed: {', '.join(failed)}** (their sections are older)" if failed else "")
            + "."
        )
    text = string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        status=status,
        summary=summary_table(out_dir),
        contents="\n".join(contents),
        sections="\n\n---\n\n".join(sections),
    )
    return text.rstrip() + "\n"


# ---------------------------------------------------------------------------------- main
def _previous(path: Path, mode: str) -> dict[str, Any]:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return dict(old.get("benchmarks", {})) if old.get("mode") == mode else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("full", "quick"), default="full")
    parser.add_argument(
        "--only", default=None, help="comma-separated benchmark names (default: all)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help=f"results folder (default: {RESULTS} in full mode, {QUICK_OUT} in quick mode)",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="where to write BENCHMARKS.md (default: the repository's in full mode, "
        "<out-dir>/BENCHMARKS.md in quick mode)",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rebuild BENCHMARKS.md, run nothing"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the scripts")
    args = parser.parse_args(argv)
    quick = args.mode == "quick"
    out_dir = args.out_dir or (QUICK_OUT if quick else RESULTS)
    doc = args.doc or (out_dir / "BENCHMARKS.md" if quick else ROOT / "BENCHMARKS.md")
    known = {b.name: b for b in BENCHMARKS}
    selected = list(known) if args.only is None else args.only.split(",")
    unknown = [n for n in selected if n not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}")
    sys.path.insert(0, str(BENCH))
    manifest_path = out_dir / "run_all.json"
    manifest: dict[str, Any] | None = None
    if not args.render_only:
        out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        results = {n: run_benchmark(known[n], args.mode, out_dir, args.python) for n in selected}
        previous = _previous(manifest_path, args.mode)  # keep the entries of benchmarks not rerun
        manifest = {
            "mode": args.mode,
            "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - started,
            "benchmarks": {**previous, **results},
        }
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    elif manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    doc.write_text(render(out_dir, manifest), encoding="utf-8")
    print(f"[run_all] wrote {doc}")
    failed = (
        []
        if manifest is None
        else [n for n, r in manifest["benchmarks"].items() if r["returncode"] != 0]
    )
    if failed and not args.render_only:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
