"""µTransfer: take the best hyperparameters of the proxy and emit the target width's run.

Under µP the optimal hyperparameters do not move with width, so the target run uses the proxy's
best values unchanged; what changes with width is the *plan* (per-tensor init std, LR scale,
multipliers), which ``parametrize`` derives from the target's shapes. ``transfer`` therefore
emits two things: the target's config (the proxy's fixed options + the best point + the target
width) and, for the built-in models, the target's plan (``plan.to_json()``), built on the meta
device so that no weights are allocated however wide the target is.

The source width is the widest proxy width with a finished trial unless told otherwise: it is the
proxy closest to the target, and ``mutransfer report`` shows whether the optimum is stable across
the proxy widths (if it is not, the rules are wrong and transfer should not be trusted).

Beyond width: ``to_depth`` sets the depth (the plan's depth rules, e.g. CompleteP, scale from the
proxy's depth); ``to_batch``/``to_steps`` move the LR by how the optimum moves with batch size
and training length — fitted to the sweep when it searched them (``scaling.py``), or by a named
published rule — and scale the warmup with the steps. Every moved value says in the output which
rule produced it (``[transfer.rules]``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import BUILTIN
from .errors import SweepError, make_output_dir
from .formatting import format_value

if TYPE_CHECKING:
    from ..plan import Plan
    from .results import SweepResults


@dataclass
class Transfer:
    """The target run: the proxy's best point at ``to_width``, with its plan when available."""

    sweep: str
    storage: str
    from_width: int
    to_width: int
    trial: int
    loss: float
    params: dict[str, Any]
    config: dict[str, Any]
    """The built-in trainer's full ``TrainConfig`` at the target width; else params + width."""
    plan: Plan | None = None
    best_per_width: dict[int, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    """Values changed beyond the width (lr, warmup_steps, batch_size, steps, depth): the rule
    that produced each."""
    fit: dict[str, Any] | None = None
    """The power law of the best LR in batch size / steps, when one was fitted."""

    @property
    def source(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "storage": self.storage,
            "from_width": self.from_width,
            "to_width": self.to_width,
            "trial": self.trial,
            "proxy_loss": self.loss,
            "params": self.params,
            **({"rules": self.rules} if self.rules else {}),
            **({"fit": self.fit} if self.fit else {}),
        }

    def to_json(self) -> str:
        return json.dumps({"train": self.config, "transfer": self.source}, indent=2) + "\n"

    def to_toml(self) -> str:
        head = (
            f"# µTransfer of sweep {self.sweep!r}: the best point at width {self.from_width} "
            f"(trial #{self.trial}, loss {self.loss:.4f}),\n"
            + (
                f"# used unchanged at width {self.to_width}: "
                if not self.rules
                else f"# at width {self.to_width}, moved beyond the width as said below: "
            )
            + ", ".join(f"{k} = {format_value(v)}" for k, v in self.params.items())
            + "\n"
            + "".join(f"# {k}: {why}\n" for k, why in self.rules.items())
        )
        return head + toml_dumps({"train": self.config, "transfer": self.source})

    def write(self, out_dir: str | Path, fmt: str = "toml") -> dict[str, Path]:
        """Write ``config.toml`` (or ``.json``) and, when there is one, ``plan.json``."""
        out = make_output_dir(out_dir)
        paths = {"config": out / f"config.{fmt}"}
        paths["config"].write_text(self.to_toml() if fmt == "toml" else self.to_json())
        if self.plan is not None:
            paths["plan"] = out / "plan.json"
            paths["plan"].write_text(self.plan.to_json())
        return paths


def transfer(
    results: SweepResults,
    to_width: int,
    from_width: int | None = None,
    *,
    to_depth: int | None = None,
    to_batch: int | None = None,
    to_steps: int | None = None,
    batch_rule: str | None = None,
    steps_rule: str | None = None,
) -> Transfer:
    """The proxy's best point (at ``from_width``, default the widest finished) at ``to_width``
    (and ``to_depth``, ``to_batch``, ``to_steps``: see the module docstring)."""
    if to_width < 1:
        raise SweepError(f"--to-width must be >= 1, got {to_width}")
    finished = [w for w in results.widths if results.best(w) is not None]
    if not finished:
        trials = [t for width in results.widths for t in results.trials.get(width, [])]
        diverged = [t for t in trials if t.state == "diverged"]
        if trials and len(diverged) == len(trials):
            raise SweepError(
                f"every trial of sweep {results.spec.name!r} diverged ({len(trials)} trials, "
                f"e.g. {diverged[0].reason}); there is no best point to transfer. Lower the "
                "learning rates searched (sweep.space.lr), add warmup (train.warmup_steps), or "
                "check the rules and the model with `mutransfer coord-check`."
            )
        raise SweepError(
            f"sweep {results.spec.name!r} has no completed trial yet; run it first "
            "(`mutransfer sweep CONFIG.toml`)"
        )
    if from_width is None:
        from_width = max(finished)
    elif from_width not in finished:
        raise SweepError(
            f"width {from_width} has no completed trial in sweep {results.spec.name!r}; "
            f"widths with results: {finished}"
        )
    best = results.best(from_width)
    assert best is not None and best.value is not None
    spec = results.spec
    beyond = _beyond_width(
        results, from_width, best.params, to_depth, to_batch, to_steps, batch_rule, steps_rule
    )
    params = {**best.params, **beyond.params}
    plan = None
    if spec.objective == BUILTIN:
        try:
            config_obj = _train_config(spec.train, params, to_width, spec.seeds[0])
        except ValueError as exc:
            raise SweepError(f"--to-width {to_width}: {exc}") from None
        plan = target_plan(config_obj)
        config = config_obj.to_dict()
    else:
        config = {**params, "width": to_width}
    per_width = {}
    for w in finished:
        b = results.best(w)
        assert b is not None
        per_width[w] = {"loss": b.value, **b.params}
    return Transfer(
        sweep=spec.name,
        storage=results.storage,
        from_width=from_width,
        to_width=to_width,
        trial=best.number,
        loss=float(best.value),
        params=dict(params),
        config=config,
        plan=plan,
        best_per_width=per_width,
        rules=beyond.rules,
        fit=beyond.fit,
    )


@dataclass
class _Beyond:
    params: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    fit: dict[str, Any] | None = None


def _beyond_width(
    results: SweepResults,
    from_width: int,
    best: dict[str, Any],
    to_depth: int | None,
    to_batch: int | None,
    to_steps: int | None,
    batch_rule: str | None,
    steps_rule: str | None,
) -> _Beyond:
    """What changes besides the width: depth, and the LR moved to another batch / length."""
    from .scaling import AXES, fit_power_law, lr_optima, move_lr, published_rules

    spec = results.spec
    out = _Beyond()
    for name, value in (
        ("--to-depth", to_depth),
        ("--to-batch", to_batch),
        ("--to-steps", to_steps),
    ):
        if value is not None and value < 1:
            raise SweepError(f"{name} must be >= 1, got {value}")
    if to_depth is not None:
        if spec.objective != BUILTIN:
            raise SweepError(
                "--to-depth needs the built-in trainer (a custom objective builds its own model)"
            )
        proxy_depth = _setting_of(spec, best, "depth")
        out.params["depth"] = to_depth
        if spec.train.get("base_depth") is None:
            out.params["base_depth"] = proxy_depth
        preset = best.get("rules", spec.train.get("rules", "mup"))
        out.rules["depth"] = (
            f"{proxy_depth} → {to_depth} blocks; the {preset!r} rules' depth scaling from "
            f"base_depth {spec.train.get('base_depth') or proxy_depth}"
        )
    targets = {"batch_size": to_batch, "steps": to_steps}
    asked = {a: v for a, v in targets.items() if v is not None}
    if not asked:
        return out
    searched = [a for a in AXES if a in spec.space.names]
    chosen = {"batch_size": batch_rule, "steps": steps_rule}
    rules: dict[str, str] = {}
    for axis in asked:
        rule = chosen[axis] or ("fit" if axis in searched else None)
        if rule is None:
            flag = "--batch-rule" if axis == "batch_size" else "--steps-rule"
            raise SweepError(
                f"sweep {spec.name!r} did not search {axis}, so how the best LR moves with it "
                f"is unknown: search it (sweep.space.{axis} = {{ values = [...] }}) or choose a "
                f"published rule with {flag} {published_rules(axis)}"
            )
        rules[axis] = rule
    source = {a: float(_setting_of(spec, best, a)) for a in AXES}
    target = {a: float(asked.get(a, source[a])) for a in AXES}
    law = None
    if "fit" in rules.values():
        points = [
            (t.params, float(t.value)) for t in results.completed(from_width) if t.value is not None
        ]
        law = fit_power_law(lr_optima(points, searched), searched)
        out.fit = law.to_dict() | {"width": from_width}
    lr = float(best.get("lr", spec.train.get("lr", 0.0)))
    if not lr:
        raise SweepError("the best point has no lr to move: search lr or set it in [train]")
    moved = move_lr(lr, source, target, rules, law)
    out.params["lr"] = moved.lr
    out.rules["lr"] = f"× {moved.factor:.4g} from {lr:g}; " + "; ".join(moved.rules.values())
    for axis, value in asked.items():
        out.params[axis] = int(value)
        out.rules[axis] = f"given ({source[axis]:g} at the proxy)"
    known_warmup = (
        spec.objective == BUILTIN or "warmup_steps" in best or "warmup_steps" in spec.train
    )
    if "steps" in asked and known_warmup:
        warmup = int(_setting_of(spec, best, "warmup_steps"))
        if warmup:
            scaled = round(warmup * target["steps"] / source["steps"])
            out.params["warmup_steps"] = scaled
            out.rules["warmup_steps"] = (
                f"{warmup} → {scaled}: proportional to steps (the schedule's decay follows "
                "the total steps by itself)"
            )
    return out


def _setting_of(spec: Any, best: dict[str, Any], name: str) -> Any:
    """A training option of the best point: searched, fixed in [train], or the default."""
    if name in best:
        return best[name]
    if name in spec.train:
        return spec.train[name]
    if spec.objective != BUILTIN:
        raise SweepError(
            f"the sweep's objective is custom and {name} is neither searched nor known; "
            "search it to transfer along it"
        )
    from ..training.options import RunOptions

    return getattr(RunOptions, name)


def _train_config(train: Any, params: dict[str, Any], width: int, seed: int) -> Any:
    from ..training.proxy import TrainConfig

    return TrainConfig.from_dict({**dict(train), **params, "width": width, "seed": seed})


def target_plan(config: Any) -> Plan:
    """The plan of the built-in model at ``config.width``, built on meta (no memory, instant)."""
    import torch

    from ..training.proxy import build_model

    with torch.device("meta"):
        _, plan = build_model(config)
    return plan


# ------------------------------------------------------------------------------ TOML
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_dumps(tables: dict[str, dict[str, Any]]) -> str:
    """TOML for tables of scalars, lists and sub-tables (``None`` values are left out).

    The standard library reads TOML but does not write it; this covers the flat configs the
    sweep emits, and every output is checked by reading it back with ``tomllib`` in the tests.
    """
    lines: list[str] = []

    def emit(name: str, table: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        subtables = {}
        for key, value in table.items():
            if isinstance(value, dict):
                subtables[key] = value
            elif value is not None:
                lines.append(f"{_key(key)} = {_value(value)}")
        lines.append("")
        for key, value in subtables.items():
            emit(f"{name}.{_key(key)}", value)

    for name, table in tables.items():
        emit(_key(name), table)
    return "\n".join(lines)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")
