"""Building the µP plan of a 7B Llama-shaped model on ``meta``: time and memory, vs microsoft/mup.

The claim under test: a user can parametrize a model far too big for the machine before
materialising it (``device="meta"``, then ``to_empty`` + ``plan.init_`` per shard), in well
under a second and without allocating any parameter memory. The same is tried with
microsoft/mup 1.0.0's ``set_base_shapes`` (installed ``--no-deps``), in the same process,
alternating which library goes first each round.

Per round and library, with fresh models built on ``meta`` (build time reported apart):

- mutransfer: ``parametrize(model, base)`` (roles, rules, hooks, attention scaling), then
  ``AdamW(plan.param_groups(...))``, then ``plan.to_json()``;
- mup: ``set_base_shapes(model, base)`` on a model whose ``lm_head`` is a ``MuReadout`` (mup
  refuses a plain ``nn.Linear`` readout; that attempt is recorded too), then ``MuAdamW``;
- unit-scaling 0.3.5 (u-µP), when installed: it has no plan step — its modules tag each
  parameter with its u-µP role (``mup_type``, depth) in their constructors, and
  ``unit_scaling.optim.AdamW`` turns the tags into one group per parameter. Its "plan" phase is
  that tagging, done here on the same meta model exactly as its ``Linear``/``Embedding``/norm
  constructors and ``DepthModuleList`` do it, then ``unit_scaling.optim.AdamW``.

Memory is the change in resident set size (``VmRSS``) and the phase's own peak (``VmHWM``
after a reset) — a 7B model in fp32 is 27 GB, so any materialised layer would show as
hundreds of MB. Every parameter is checked to still be on ``meta`` afterwards.

    .venv/bin/python bench/plan_7b.py            # full (about a minute)
    .venv/bin/python bench/plan_7b.py --quick    # seconds, CI smoke
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

import mutransfer
from common import (
    arg_parser,
    command_line,
    machine_info,
    machine_line,
    markdown_table,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    summarize,
    write_results,
)
from llama_shape import Llama, LlamaShape

NAME = "plan_7b"
BASE_WIDTH = 256
LR = 3e-4
TIME_TARGET_S = 1.0


def build_pair(readout: Callable[[int, int], nn.Module] | None = None) -> tuple[nn.Module, ...]:
    """The 7B target and its base-width twin, both on ``meta``."""
    cfg = LlamaShape()
    with torch.device("meta"):
        return Llama(cfg, readout), Llama(cfg.scaled(BASE_WIDTH), readout)


class Phase:
    """Times a block and records RSS growth and the block's own RSS peak, in MiB."""

    def __enter__(self) -> Phase:
        gc.collect()
        self.peak_reset = reset_peak_rss()
        self.rss0 = rss_bytes()
        self.t0, self.cpu0 = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.thread_time() - self.cpu0
        rss1, peak = rss_bytes(), peak_rss_bytes()
        self.rss_growth_mib: float | None = None
        self.peak_over_start_mib: float | None = None
        if self.rss0 is not None and rss1 is not None:
            self.rss_growth_mib = (rss1 - self.rss0) / 2**20
            if peak is not None and self.peak_reset:
                self.peak_over_start_mib = (peak - self.rss0) / 2**20

    def record(self) -> dict[str, float | None]:
        return {
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "rss_growth_mib": self.rss_growth_mib,
            "peak_over_start_mib": self.peak_over_start_mib,
        }


def not_on_meta(*modules: nn.Module) -> int:
    return sum(1 for m in modules for p in m.parameters() if not p.is_meta)


def run_mutransfer() -> dict[str, Any]:
    with Phase() as build:
        model, base = build_pair()
    with Phase() as plan_phase:
        plan = mutransfer.parametrize(model, base)
    with Phase() as opt_phase:
        opt = torch.optim.AdamW(plan.param_groups(LR, weight_decay=0.1), lr=LR)
    with Phase() as json_phase:
        text = plan.to_json()
    return {
        "build": build.record(),
        "plan": plan_phase.record(),
        "optimizer": opt_phase.record(),
        "to_json": {**json_phase.record(), "bytes": len(text)},
        "param_groups": len(opt.param_groups),
        "tensors": len(plan),
        "not_on_meta": not_on_meta(model, base),
    }


def run_mup() -> dict[str, Any]:
    import mup

    with Phase() as build:
        model, base = build_pair(lambda i, o: mup.MuReadout(i, o, bias=False))
    with Phase() as plan_phase:
        mup.set_base_shapes(model, base)
    with Phase() as opt_phase:
        opt = mup.MuAdamW(model.parameters(), lr=LR, weight_decay=0.1)
    return {
        "build": build.record(),
        "plan": plan_phase.record(),
        "optimizer": opt_phase.record(),
        "param_groups": len(opt.param_groups),
        "tensors": sum(1 for _ in model.parameters()),
        "not_on_meta": not_on_meta(model, base),
    }


def unit_tag(model: nn.Module) -> None:
    """Attach u-µP metadata as unit-scaling's module constructors do (``uu.Parameter``).

    ``uu.Linear``/``uu.Embedding`` wrap their weight as ``Parameter(w.data, mup_type="weight")``,
    ``uu.LinearReadout`` as ``"output"``, norms as ``"norm"``; ``DepthModuleList`` sets
    ``mup_scaling_depth`` on every parameter of its blocks.
    """
    import unit_scaling as uu

    readout = model.lm_head
    for module in model.modules():
        for pname, p in list(module.named_parameters(recurse=False)):
            kind = "output" if module is readout else ("norm" if p.dim() == 1 else "weight")
            setattr(module, pname, uu.Parameter(p.data, mup_type=kind))
    layers = model.layers
    for p in layers.parameters():
        p.mup_scaling_depth = len(layers)  # type: ignore[attr-defined]


def run_unit_scaling() -> dict[str, Any]:
    import unit_scaling as uu

    with Phase() as build:
        cfg = LlamaShape()
        with torch.device("meta"):
            model = Llama(cfg)
    with Phase() as plan_phase:
        unit_tag(model)
    with Phase() as opt_phase:
        opt = uu.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    return {
        "build": build.record(),
        "plan": plan_phase.record(),
        "optimizer": opt_phase.record(),
        "param_groups": len(opt.param_groups),
        "tensors": sum(1 for _ in model.parameters()),
        "not_on_meta": not_on_meta(model),
    }


def mup_plain_readout() -> dict[str, Any]:
    """mup on the unmodified model (``nn.Linear`` lm_head): what happens, verbatim."""
    import mup

    model, base = build_pair()
    try:
        mup.set_base_shapes(model, base)
    except Exception as err:  # record whatever mup raises; this is the measurement
        return {"ok": False, "error": f"{type(err).__name__}: {err}".strip()}
    return {"ok": True, "error": None}


def materialise_small(libraries: list[str]) -> dict[str, Any]:
    """The step after the plan: ``to_empty(device="cpu")``, init, optimizer, one forward.

    A 7B model does not fit in this machine's memory, so the same architecture at width 256 and
    2 layers goes through the path a sharded 7B run takes per rank. What is checked is whether
    the width metadata survives ``Module.to_empty`` (it replaces every parameter object).
    """
    cfg = LlamaShape().scaled(256)
    cfg = LlamaShape(**{**asdict(cfg), "depth": 2, "vocab_size": 512})
    idx = torch.zeros(1, 8, dtype=torch.long)
    out: dict[str, Any] = {"model": asdict(cfg)}
    if "mutransfer" in libraries:
        with torch.device("meta"):
            model, base = Llama(cfg), Llama(cfg.scaled(64))
        plan = mutransfer.parametrize(model, base)
        model.to_empty(device="cpu")
        out["mutransfer"] = _attempt(
            lambda: (
                plan.init_(model, seed=0),
                torch.optim.AdamW(plan.param_groups(LR, model=model)),
                model(idx),
            )
        )
    if "mup" in libraries:
        import mup

        def readout(i: int, o: int) -> nn.Module:
            return mup.MuReadout(i, o, bias=False)

        with torch.device("meta"):
            model, base = Llama(cfg, readout), Llama(cfg.scaled(64), readout)
        mup.set_base_shapes(model, base)
        model.to_empty(device="cpu")
        kept = sum(hasattr(p, "infshape") for p in model.parameters())
        result = _attempt(lambda: (mup.MuAdamW(model.parameters(), lr=LR), model(idx)))
        out["mup"] = {**result, "infshape_kept": kept, "parameters": len(list(model.parameters()))}
    if "unit-scaling" in libraries:
        import unit_scaling as uu

        with torch.device("meta"):
            model = Llama(cfg)
        unit_tag(model)
        model.to_empty(device="cpu")
        kept = sum(hasattr(p, "mup_type") for p in model.parameters())
        result = _attempt(lambda: (uu.optim.AdamW(model.parameters(), lr=LR), model(idx)))
        out["unit-scaling"] = {
            **result,
            "mup_type_kept": kept,
            "parameters": len(list(model.parameters())),
        }
    return out


def _attempt(fn: Callable[[], object]) -> dict[str, Any]:
    try:
        fn()
    except Exception as err:  # the outcome is the measurement
        return {"ok": False, "error": f"{type(err).__name__}: {err}".strip()}
    return {"ok": True, "error": None}


def mup_version(dist: str = "mup") -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


LIBS = ("mutransfer", "mup", "unit-scaling")


def main(argv: list[str] | None = None) -> int:
    args = arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 7
    libraries: dict[str, Callable[[], dict[str, Any]]] = {"mutransfer": run_mutransfer}
    mup_ok = mup_version() is not None
    if mup_ok:
        libraries["mup"] = run_mup
    unit_ok = mup_version("unit-scaling") is not None
    if unit_ok:
        libraries["unit-scaling"] = run_unit_scaling
    cfg = LlamaShape()
    with torch.device("meta"):
        n_params = sum(p.numel() for p in Llama(cfg).parameters())
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "command": command_line(argv),
        "quick": args.quick,
        "machine": machine_info(),
        "mutransfer": mutransfer.__version__,
        "mup": mup_version(),
        "unit-scaling": mup_version("unit-scaling"),
        "model": {**asdict(cfg), "parameters": n_params, "base_width": BASE_WIDTH},
        "time_target_s": TIME_TARGET_S,
        "rounds": {name: [] for name in libraries},
        "warmup_round": {},
        "errors": {},
    }
    names = list(libraries)
    for r in range(repeats + 1):  # round 0 warms imports and lazy torch state; discarded
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            print(f"[{NAME}] round {r} {name} ...", flush=True)
            try:
                result = libraries[name]()
            except Exception:
                payload["errors"][name] = traceback.format_exc(limit=3)
                libraries.pop(name)
                names.remove(name)
                continue
            if r > 0:
                payload["rounds"][name].append(result)
            else:
                payload["warmup_round"][name] = result
    payload["summary"] = {
        name: summarise_rounds(rounds) for name, rounds in payload["rounds"].items() if rounds
    }
    payload["materialise_small"] = materialise_small(list(libraries))
    if mup_ok:
        payload["mup_plain_lm_head"] = mup_plain_readout()
    else:
        payload["errors"]["mup"] = "mup is not installed (pip install --no-deps mup==1.0.0)"
    if not unit_ok:
        payload["errors"]["unit-scaling"] = (
            "unit-scaling is not installed (pip install --no-deps unit-scaling==0.3.5 einops "
            "tabulate docstring-parser)"
        )
    json_path, md_path = write_results(NAME, payload, render(payload), args.out_dir)
    print(render(payload))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def summarise_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in ("build", "plan", "optimizer", "to_json"):
        if phase not in rounds[0]:
            continue
        out[phase] = {
            key: summarize([r[phase][key] for r in rounds])
            for key in ("seconds", "cpu_seconds", "rss_growth_mib", "peak_over_start_mib")
            if all(r[phase][key] is not None for r in rounds)
        }
    for key in ("param_groups", "tensors"):
        out[key] = rounds[0][key]
    out["not_on_meta"] = max(r["not_on_meta"] for r in rounds)
    if "bytes" in rounds[0].get("to_json", {}):
        out["to_json_bytes"] = rounds[0]["to_json"]["bytes"]
    return out


def _cell(summary: dict[str, Any], phase: str, key: str, fmt: str) -> str:
    stats = summary.get(phase, {}).get(key)
    if stats is None:
        return "—"
    return format(stats["median"], fmt) + (
        f" ({format(stats['max'], fmt)})" if stats["n"] > 1 else ""
    )


def render(payload: dict[str, Any]) -> str:
    summary = payload["summary"]
    rows = []
    labels = {
        "build": "build target + base on meta",
        "plan": "parametrize / set_base_shapes / u-µP tags",
        "optimizer": "AdamW(plan.param_groups) / MuAdamW / uu.optim.AdamW",
        "to_json": "plan.to_json()",
    }
    for phase, label in labels.items():
        row = [label]
        for lib in LIBS:
            s = summary.get(lib, {})
            row += [
                _cell(s, phase, "seconds", ".3f"),
                _cell(s, phase, "rss_growth_mib", ".1f"),
                _cell(s, phase, "peak_over_start_mib", ".1f"),
            ]
        rows.append(row)
    facts = [
        [
            "parameter groups",
            *(str(summary.get(lib, {}).get("param_groups", "—")) for lib in LIBS),
        ],
        [
            "parameters left off meta",
            *(str(summary.get(lib, {}).get("not_on_meta", "—")) for lib in LIBS),
        ],
    ]
    m = payload["model"]
    plain = payload.get("mup_plain_lm_head", {})
    parts = [
        "## Building the plan of a 7B model on `meta`",
        f"Command: `{payload['command']}`  \nMachine: {machine_line(payload['machine'])}  \n"
        f"mutransfer {payload['mutransfer']}, mup {payload['mup']}, unit-scaling "
        f"{payload.get('unit-scaling') or 'not installed'}",
        f"Llama-shaped model ({m['parameters'] / 1e9:.2f} B parameters: width {m['width']}, "
        f"{m['depth']} layers, {m['n_heads']} heads, SwiGLU {m['intermediate']}, vocabulary "
        f"{m['vocab_size']}, untied `lm_head`), base width {m['base_width']}, both on `meta` "
        "(unit-scaling needs no base model). "
        f"Medians over {len(payload['rounds'].get('mutransfer', []))} rounds (libraries "
        "alternating first), worst round in brackets; memory in MiB: growth of resident set "
        "size over the phase, and the phase's own peak above its start.",
        markdown_table(
            [
                "phase",
                *(h for lib in LIBS for h in (f"{lib} s", "RSS +MiB", "peak +MiB")),
            ],
            rows,
        ),
        markdown_table(["", *LIBS], facts),
    ]
    if plain:
        outcome = "runs" if plain["ok"] else f"fails: {_quote(plain['error'])}"
        parts.append(
            "mup on the unmodified model (plain `nn.Linear` `lm_head`): `set_base_shapes` "
            f"{outcome}. The mup column therefore uses a model whose `lm_head` was rewritten "
            "as `mup.MuReadout`."
        )
    small = payload.get("materialise_small", {})
    if small:
        rows = []
        for lib in LIBS:
            res = small.get(lib)
            if res is None:
                continue
            outcome = "works" if res["ok"] else f"fails: {_quote(res['error'])}"
            if lib == "mutransfer":
                kept = "plan keyed by parameter name"
            elif lib == "mup":
                kept = f"`infshape` on {res['infshape_kept']} of {res['parameters']} parameters"
            else:
                kept = f"`mup_type` on {res['mup_type_kept']} of {res['parameters']} parameters"
            rows.append([lib, kept, outcome])
        sm = small["model"]
        parts += [
            'Materialising after the plan (`to_empty(device="cpu")`, init, optimizer, one '
            f"forward) on the same architecture at width {sm['width']}, {sm['depth']} layers "
            "(a 7B model does not fit in this machine's memory; a sharded run takes this path "
            "per rank):",
            markdown_table(
                ["library", "width metadata after to_empty", "init + optimizer + forward"], rows
            ),
        ]
    warm = payload.get("warmup_round", {})
    if warm:
        cells = [
            f"{lib} {ph} RSS +{res[ph]['rss_growth_mib']:.1f} MiB (peak +"
            f"{res[ph]['peak_over_start_mib']:.1f})"
            for lib, res in warm.items()
            for ph in ("build", "plan")
            if res[ph]["rss_growth_mib"] is not None and res[ph]["peak_over_start_mib"] is not None
        ]
        if cells:
            parts.append(
                "First round in the process (imports and allocator warm-up; left out of the "
                "table above): " + "; ".join(cells) + "."
            )
    parts.append(reading(payload))
    for lib, err in payload["errors"].items():
        parts.append(f"{lib} failed:\n\n```\n{err.strip()}\n```")
    return "\n\n".join(parts)


def _quote(error: str) -> str:
    """The first line of an error message as inline markdown code (backticks neutralised)."""
    return "`" + error.splitlines()[0].replace("`", "'") + "`"


def reading(payload: dict[str, Any]) -> str:
    """The interpretation, computed from this run's numbers (so it cannot go stale)."""
    summary = payload["summary"]
    lines = ["Reading (generated from the numbers above):", ""]
    mt = summary.get("mutransfer")
    if mt:
        t = mt["plan"]["seconds"]
        verdict = "under" if t["max"] < TIME_TARGET_S else "over"
        mem = [
            mt[ph][key]["max"]
            for ph in ("plan", "optimizer")
            for key in ("rss_growth_mib", "peak_over_start_mib")
            if key in mt[ph]
        ]
        first = payload.get("warmup_round", {}).get("mutransfer", {})
        mem += [
            first[ph][key]
            for ph in ("plan", "optimizer")
            if ph in first
            for key in ("rss_growth_mib", "peak_over_start_mib")
            if first[ph][key] is not None
        ]
        mem_text = (
            f"at most {max(mem):.1f} MiB, first round included"
            if mem
            else "not measurable here (no /proc)"
        )
        lines.append(
            f"- `parametrize` on the 7B meta model: median {t['median'] * 1e3:.0f} ms, worst "
            f"{t['max'] * 1e3:.0f} ms ({verdict} the {TIME_TARGET_S:g} s target); resident "
            f"memory growth and peak over parametrize + param_groups: {mem_text}; parameters "
            f"that left `meta`: {mt['not_on_meta']}."
        )
    mp = summary.get("mup")
    if mt and mp:
        a, b = mt["plan"]["seconds"]["median"], mp["plan"]["seconds"]["median"]
        faster, ratio = ("mup", a / b) if b < a else ("mutransfer", b / a)
        lines.append(
            f"- {faster} builds its plan {ratio:.1f}× faster ({a * 1e3:.1f} ms mutransfer vs "
            f"{b * 1e3:.1f} ms mup). `set_base_shapes` only pairs shapes into per-parameter "
            "`infshape` attributes and rescales `MuReadout`/biases; `parametrize` also reads "
            "each owner module's layout, computes per-tensor init std, LR, ε and weight-decay "
            "scales and sets the logit scale of every attention module. Both are far from "
            "mattering next to loading or initialising 7B parameters."
        )
        lines.append(
            f"- Parameter groups: {mt['param_groups']} (mutransfer) vs {mp['param_groups']} "
            "(mup). mutransfer's extra group is the readout: absorbed mode folds its 1/m "
            "multiplier into its LR and ε (ε·m), where mup keeps the multiplier in "
            "`MuReadout.forward`; mup also leaves ε unscaled on hidden weights. What a group "
            "costs per step is measured in the step-overhead benchmark."
        )
    plain = payload.get("mup_plain_lm_head")
    if plain and not plain["ok"]:
        lines.append(
            "- mup does not accept the unmodified model: the readout must be rewritten as "
            "`MuReadout` in the model code (and mup's 1/d attention scale too, by hand); "
            "mutransfer takes the model as written."
        )
    us = summary.get("unit-scaling")
    if mt and us:
        a = mt["plan"]["seconds"]["median"] + mt["optimizer"]["seconds"]["median"]
        b = us["plan"]["seconds"]["median"] + us["optimizer"]["seconds"]["median"]
        faster, ratio = ("unit-scaling", a / b) if b < a else ("mutransfer", b / a)
        lines.append(
            f"- Against unit-scaling, plan + optimizer set-up: {faster} is {ratio:.2f}× as fast "
            f"({a * 1e3:.1f} ms mutransfer vs {b * 1e3:.1f} ms unit-scaling, whose tags are "
            "set by its module constructors and whose optimizer makes "
            f"{us['param_groups']} groups, one per parameter, against mutransfer's "
            f"{mt['param_groups']})."
        )
    small = payload.get("materialise_small", {}).get("mup")
    if small and small["infshape_kept"] < small["parameters"]:
        lines.append(
            f"- After `to_empty`, mup's metadata survives on {small['infshape_kept']} of "
            f"{small['parameters']} parameters, so the meta → materialise path a 7B run needs "
            "breaks unless `set_base_shapes` is called again on the materialised model."
        )
    small = payload.get("materialise_small", {}).get("unit-scaling")
    if small and small["mup_type_kept"] < small["parameters"]:
        lines.append(
            f"- unit-scaling's tags survive `to_empty` on {small['mup_type_kept']} of "
            f"{small['parameters']} parameters: its optimizer then refuses the model (or, with "
            "`allow_non_unit_scaling_params=True`, trains it without the u-µP LR rules)."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
