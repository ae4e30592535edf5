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
        }

    def to_json(self) -> str:
        return json.dumps({"train": self.config, "transfer": self.source}, indent=2) + "\n"

    def to_toml(self) -> str:
        head = (
            f"# µTransfer of sweep {self.sweep!r}: the best point at width {self.from_width} "
            f"(trial #{self.trial}, loss {self.loss:.4f}),\n"
            f"# used unchanged at width {self.to_width}: "
            + ", ".join(f"{k} = {format_value(v)}" for k, v in self.params.items())
            + "\n"
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


def transfer(results: SweepResults, to_width: int, from_width: int | None = None) -> Transfer:
    """The proxy's best point (at ``from_width``, default the widest finished) at ``to_width``."""
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
    plan = None
    if spec.objective == BUILTIN:
        try:
            config_obj = _train_config(spec.train, best.params, to_width, spec.seeds[0])
        except ValueError as exc:
            raise SweepError(f"--to-width {to_width}: {exc}") from None
        plan = target_plan(config_obj)
        config = config_obj.to_dict()
    else:
        config = {**best.params, "width": to_width}
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
        params=dict(best.params),
        config=config,
        plan=plan,
        best_per_width=per_width,
    )


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
