"""The sweep's configuration: a TOML file (or Python arguments), validated field by field.

One ``SweepSpec`` describes a whole µTransfer sweep: the widths of the proxy, the search space,
the sampler, the seeds, the objective (the built-in trainer or the user's function), pruning and
where results are stored. It is plain data (``to_dict``/``from_dict``): it is written into every
study of the sweep, so ``mutransfer transfer`` and ``mutransfer report`` need nothing but the
storage and the sweep's name. The file format is documented in docs/sweeps.md::

    [sweep]
    name = "gpt-lr"
    widths = [32, 64, 128]
    sampler = "grid"                    # grid | random | tpe (random/tpe need `trials`)
    strategy = "grid"                   # or "independent": u-µP's one-dimension-at-a-time search
    [sweep.space]
    lr = { log2 = [-10, -4] }           # 2^-10 … 2^-4, one point per octave
    [train]                             # fixed options of the built-in trainer
    steps = 200
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..rules import get_rules
from . import checks
from .errors import ConfigError
from .space import Space

Sampler = Literal["grid", "random", "tpe"]
SAMPLERS: tuple[str, ...] = ("grid", "random", "tpe")
Strategy = Literal["grid", "independent"]
STRATEGIES: tuple[str, ...] = ("grid", "independent")
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "percentile": "PercentilePruner",
}
BUILTIN = "builtin"
DEFAULT_STACK_MEMORY_MB = 2048.0
"""``training.stacked.DEFAULT_MEMORY_BUDGET`` in MiB (kept here so that reading a config does not
import torch)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SWEEP_KEYS = (
    "name",
    "widths",
    "space",
    "sampler",
    "strategy",
    "trials",
    "seeds",
    "sampler_seed",
    "pruner",
    "objective",
    "storage",
    "report_every",
    "heartbeat_interval",
    "grace_period",
    "max_retry",
    "reconnect_timeout",
    "runs_dir",
    "tensorboard",
    "stack",
    "stack_memory_mb",
)
# Set by the sweep itself for every trial: a fixed value in [train] would be silently overridden.
_SET_BY_SWEEP = {"width": "sweep.widths", "seed": "sweep.seeds"}


@dataclass(frozen=True)
class PrunerSpec:
    """An Optuna pruner by short name, with its constructor options."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        import optuna

        cls = getattr(optuna.pruners, PRUNERS[self.kind])
        try:
            return cls(**self.options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"sweep.pruner: {exc} (the options of optuna.pruners.{PRUNERS[self.kind]})"
            ) from None


@dataclass(frozen=True)
class SweepSpec:
    """Everything that defines one sweep (see the module docstring and docs/sweeps.md)."""

    name: str
    widths: tuple[int, ...]
    space: Space
    sampler: Sampler = "grid"
    strategy: Strategy = "grid"
    """``"grid"``: the whole search space at once (with the sampler); ``"independent"``: the
    first dimension (the LR) alone, then each other dimension alone at the best LR, then the
    combination (see ``stages.py``)."""
    trials: int | None = None
    """Trials per width for ``random``/``tpe``; a grid runs each of its points once."""
    seeds: tuple[int, ...] = (0,)
    """Every trial runs every seed; its value is the mean loss over seeds."""
    sampler_seed: int = 0
    pruner: PrunerSpec | None = None
    objective: str = BUILTIN
    """``"builtin"`` (mutransfer's trainer), ``"path/to/file.py:function"`` or ``"pkg.mod:fn"``."""
    train: Mapping[str, Any] = field(default_factory=dict)
    """Fixed options of the built-in trainer (``TrainConfig`` fields)."""
    storage: str | None = None
    """Storage URL or journal file; ``None`` → ``runs/<name>.journal`` in the current folder."""
    report_every: int = 10
    """Steps between intermediate losses reported to the pruner (built-in trainer)."""
    heartbeat_interval: int = 10
    grace_period: int = 30
    """Seconds without a heartbeat after which a running trial counts as lost and is retried."""
    max_retry: int = 3
    """How often a lost trial (killed worker) is retried before it stays failed."""
    reconnect_timeout: int = 120
    """Seconds a worker keeps trying to reach a database storage it lost before it stops."""
    runs_dir: str | None = None
    """Built-in trainer: where finished runs are kept and found again (``training.runs``);
    ``None`` → ``<name>.runs`` beside the journal. Point it at the demo's ``runs/demo/runs`` to
    reuse the demo's runs."""
    tensorboard: bool | str = False
    """Write each finished trial's curve as TensorBoard event files: ``true`` → ``<name>.
    tensorboard`` beside the journal (``runs/<name>.tensorboard`` for a database), or a folder."""
    stack: bool = False
    """Built-in trainer: a worker claims several trials of one width that share their shapes
    and trains them as one stacked model (``training.stacked``, docs/stacked.md); each trial is
    still one trial, told its own result. Off by default (on a CPU it gains little)."""
    stack_memory_mb: float = DEFAULT_STACK_MEMORY_MB
    """With ``stack``: the memory one pack may use, in MiB; it bounds how many runs a worker
    claims together (``training.stacked.pack_size``)."""

    def __post_init__(self) -> None:
        if self.strategy == "independent" and self.objective == BUILTIN:
            # Store the trainer's defaults with the sweep: the stages hold them fixed.
            object.__setattr__(self, "space", _with_trainer_defaults(self.space))
        validate(self)

    @property
    def points_per_width(self) -> int:
        """Trials per width: the grid's points, the random/TPE budget, or for the independent
        search the sum of the 1-D grids plus the combination (at most; shared points run once)."""
        if self.strategy == "independent":
            from .stages import stage_budget

            return stage_budget(self.space)
        return len(self.space.grid()) if self.sampler == "grid" else int(self.trials or 0)

    def with_(self, **changes: Any) -> SweepSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in the studies and passed to worker processes."""
        return {
            "name": self.name,
            "widths": list(self.widths),
            "space": self.space.to_dict(),
            "sampler": self.sampler,
            "strategy": self.strategy,
            "trials": self.trials,
            "seeds": list(self.seeds),
            "sampler_seed": self.sampler_seed,
            "pruner": (
                None if self.pruner is None else {"kind": self.pruner.kind, **self.pruner.options}
            ),
            "objective": self.objective,
            "train": dict(self.train),
            "storage": self.storage,
            "report_every": self.report_every,
            "heartbeat_interval": self.heartbeat_interval,
            "grace_period": self.grace_period,
            "max_retry": self.max_retry,
            "reconnect_timeout": self.reconnect_timeout,
            "runs_dir": self.runs_dir,
            "tensorboard": self.tensorboard,
            # Left out when off, so that a sweep that does not stack stores the config it
            # stored before the option existed.
            **({"stack": True, "stack_memory_mb": self.stack_memory_mb} if self.stack else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "sweep") -> SweepSpec:
        return parse_sweep(data, train=data.get("train", {}), where=where)


# ------------------------------------------------------------------------------ parsing
def parse_pruner(value: Any, where: str) -> PrunerSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        kind, options = value, {}
    else:
        table = dict(checks.table(value, where))
        if "kind" not in table:
            raise checks.fail(f"{where}.kind", f"missing; one of {', '.join(PRUNERS)}")
        kind, options = table.pop("kind"), table
    if kind == "none":
        return None
    checks.string(kind, f"{where}.kind" if options else where, choices=(*PRUNERS, "none"))
    pruner = PrunerSpec(kind, options)
    pruner.build()  # Optuna's pruner refuses unknown options: say so now, not in a worker
    return pruner


def parse_sweep(
    data: Mapping[str, Any],
    *,
    train: Mapping[str, Any] | None = None,
    base_dir: Path | None = None,
    where: str = "sweep",
) -> SweepSpec:
    """Validate the ``[sweep]`` table (and the ``[train]`` table) into a ``SweepSpec``."""
    data = checks.table(data, where)
    checks.unknown_keys({k: v for k, v in data.items() if k != "train"}, _SWEEP_KEYS, where)
    for key in ("name", "widths", "space"):
        if key not in data:
            raise checks.fail(f"{where}.{key}", "missing (required)")
    name = checks.string(data["name"], f"{where}.name")
    widths = tuple(
        checks.integer(w, f"{where}.widths[{i}]", minimum=1)
        for i, w in enumerate(checks.sequence(data["widths"], f"{where}.widths"))
    )
    seeds = tuple(
        checks.integer(s, f"{where}.seeds[{i}]")
        for i, s in enumerate(checks.sequence(data.get("seeds", [0]), f"{where}.seeds"))
    )
    space = Space.of(checks.table(data["space"], f"{where}.space"), where=f"{where}.space")
    sampler = checks.string(data.get("sampler", "grid"), f"{where}.sampler", choices=SAMPLERS)
    strategy = checks.string(data.get("strategy", "grid"), f"{where}.strategy", choices=STRATEGIES)
    trials = data.get("trials")
    if trials is not None:
        trials = checks.integer(trials, f"{where}.trials", minimum=1)
    objective = checks.string(data.get("objective", BUILTIN), f"{where}.objective")
    if objective != BUILTIN and base_dir is not None:
        objective = resolve_objective_path(objective, base_dir)
    storage = data.get("storage")
    if storage is not None:
        storage = checks.string(storage, f"{where}.storage")
    return SweepSpec(
        name=name,
        widths=widths,
        space=space,
        sampler=sampler,  # type: ignore[arg-type]
        strategy=strategy,  # type: ignore[arg-type]
        trials=trials,
        seeds=seeds,
        sampler_seed=checks.integer(data.get("sampler_seed", 0), f"{where}.sampler_seed"),
        pruner=parse_pruner(data.get("pruner"), f"{where}.pruner"),
        objective=objective,
        train=dict(checks.table(train or {}, "train")),
        storage=storage,
        report_every=checks.integer(
            data.get("report_every", 10), f"{where}.report_every", minimum=1
        ),
        heartbeat_interval=checks.integer(
            data.get("heartbeat_interval", 10), f"{where}.heartbeat_interval", minimum=1
        ),
        grace_period=checks.integer(
            data.get("grace_period", 30), f"{where}.grace_period", minimum=1
        ),
        max_retry=checks.integer(data.get("max_retry", 3), f"{where}.max_retry", minimum=0),
        reconnect_timeout=checks.integer(
            data.get("reconnect_timeout", 120), f"{where}.reconnect_timeout", minimum=0
        ),
        runs_dir=None
        if data.get("runs_dir") is None
        else checks.string(data["runs_dir"], f"{where}.runs_dir"),
        tensorboard=_tensorboard(data.get("tensorboard", False), f"{where}.tensorboard"),
        stack=checks.boolean(data.get("stack", False), f"{where}.stack"),
        stack_memory_mb=checks.number(
            data.get("stack_memory_mb", DEFAULT_STACK_MEMORY_MB),
            f"{where}.stack_memory_mb",
            positive=True,
        ),
    )


def _tensorboard(value: Any, where: str) -> bool | str:
    if isinstance(value, bool):
        return value
    return checks.string(value, where)


def resolve_objective_path(objective: str, base_dir: Path) -> str:
    """Make ``file.py:function`` absolute (relative to the config file's folder)."""
    path, sep, func = objective.rpartition(":")
    if sep and path.endswith(".py") and not Path(path).is_absolute():
        return f"{(base_dir / path).resolve()}:{func}"
    return objective


def validate(spec: SweepSpec) -> None:
    """Cross-field checks, shared by the TOML loader and the Python API."""
    if not _NAME.fullmatch(spec.name):
        raise checks.fail(
            "sweep.name",
            f"{spec.name!r} is not a usable name; use letters, digits, '.', '_' and '-' "
            "(it names the studies and the default journal file)",
        )
    if not spec.widths:
        raise checks.fail("sweep.widths", "expected a non-empty list")
    if len(set(spec.widths)) != len(spec.widths):
        raise checks.fail("sweep.widths", f"a width appears twice: {list(spec.widths)}")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise checks.fail("sweep.seeds", f"expected distinct seeds, got {list(spec.seeds)}")
    if spec.sampler not in SAMPLERS:
        raise checks.fail("sweep.sampler", f"expected one of {SAMPLERS}, got {spec.sampler!r}")
    if spec.strategy not in STRATEGIES:
        raise checks.fail("sweep.strategy", f"expected one of {STRATEGIES}, got {spec.strategy!r}")
    if spec.strategy == "independent":
        _validate_independent(spec)
    if spec.sampler != "grid" and spec.trials is None:
        raise checks.fail(
            "sweep.trials",
            f"missing; the {spec.sampler} sampler needs a number of trials per width",
        )
    if spec.sampler == "grid" and spec.trials is not None:
        raise checks.fail(
            "sweep.trials",
            f"the grid sampler runs its {len(spec.space.grid())} points once per width; "
            "remove trials, or use sampler = 'random' or 'tpe'",
        )
    if spec.objective != BUILTIN and ":" not in spec.objective:
        raise checks.fail(
            "sweep.objective",
            f"expected 'builtin', 'path/to/file.py:function' or 'package.module:function', "
            f"got {spec.objective!r}",
        )
    if spec.objective == BUILTIN:
        _validate_train(spec)
    elif spec.train:
        raise checks.fail(
            "train", "is only read by the built-in trainer; your objective sets its own options"
        )
    if spec.stack:
        _validate_stack(spec)


def _validate_independent(spec: SweepSpec) -> None:
    """The independent search runs 1-D grids: the first dimension first, the others held at
    their defaults until their own turn."""
    if spec.sampler != "grid":
        raise checks.fail(
            "sweep.sampler",
            f"strategy = 'independent' runs one-dimensional grids; {spec.sampler!r} does not "
            "apply (remove sampler and trials, or use strategy = 'grid')",
        )
    names = spec.space.names
    if "lr" in names and names[0] != "lr":
        raise checks.fail(
            "sweep.space",
            "strategy = 'independent' searches the first hyperparameter first, with the others "
            f"at their defaults; that should be the learning rate: list lr first (got {names[0]})",
        )
    for dim in spec.space.dims[1:]:
        if dim.default is None:
            raise checks.fail(
                f"sweep.space.{dim.name}.default",
                f"missing; strategy = 'independent' holds {dim.name} at its default while "
                f"{names[0]} is searched, e.g. {dim.name} = {{ log2 = [-2, 2], default = 1.0 }}",
            )


def _with_trainer_defaults(space: Space) -> Space:
    """The space with each missing ``default`` taken from ``TrainConfig``'s defaults (the
    first dimension is searched first and needs none)."""
    from ..training.proxy import TrainConfig

    defaults = TrainConfig()
    dims = [space.dims[0]]
    for dim in space.dims[1:]:
        if dim.default is None and hasattr(defaults, dim.name):
            value = getattr(defaults, dim.name)
            in_range = dim.values is None or value in dim.values
            if dim.values is None and dim.low is not None and dim.high is not None:
                in_range = isinstance(value, int | float) and dim.low <= value <= dim.high
            if not in_range:
                raise checks.fail(
                    f"sweep.space.{dim.name}.default",
                    f"missing, and the trainer's default {dim.name} = {value!r} is not in the "
                    "searched range; give default = ... (strategy = 'independent' holds "
                    f"{dim.name} there while the other hyperparameters are searched)",
                )
            dim = dim.with_default(value)
        dims.append(dim)
    return Space(tuple(dims))


def _validate_train(spec: SweepSpec) -> None:
    """The [train] table and the swept names must be ``TrainConfig`` fields of the right type."""
    from ..training.proxy import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    defaults = TrainConfig()
    for key, value in spec.train.items():
        where = f"train.{key}"
        if key in _SET_BY_SWEEP:
            raise checks.fail(where, f"is set by the sweep ({_SET_BY_SWEEP[key]}); remove it")
        if key not in fields:
            raise checks.fail(where, f"unknown training option; known: {', '.join(sorted(fields))}")
        if key in spec.space.names:
            raise checks.fail(where, f"is also searched (sweep.space.{key}); remove one of them")
        _check_type(value, getattr(defaults, key), where)
    for name in spec.space.names:
        where = f"sweep.space.{name}"
        if name in _SET_BY_SWEEP:
            raise checks.fail(where, f"is set by the sweep ({_SET_BY_SWEEP[name]}), not searched")
        if name not in fields:
            raise checks.fail(
                where,
                "not an option of the built-in trainer; searchable: lr, init_std, "
                "input_multiplier, output_multiplier, attention_multiplier, weight_decay, "
                "warmup_steps (any TrainConfig field)",
            )
        dim = spec.space[name]
        if isinstance(getattr(defaults, name), int) and dim.values is None and not dim.integer:
            raise checks.fail(where, "is an integer option; add integer = true (or use values)")
    rules = spec.train.get("rules", spec.space.grid()[0].get("rules", "mup"))
    try:
        get_rules(rules)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"train.rules: {exc}") from None
    sample = spec.space.grid()[0]
    for width in spec.widths:  # every width: e.g. each must split into the heads
        try:
            TrainConfig.from_dict({**spec.train, **sample, "width": width})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"train (at width {width}): {exc}") from None


def _validate_stack(spec: SweepSpec) -> None:
    """Stacking packs runs of the built-in trainer; say at once when it cannot happen."""
    if not isinstance(spec.stack, bool):
        raise checks.fail("sweep.stack", f"expected true or false, got {spec.stack!r}")
    checks.number(spec.stack_memory_mb, "sweep.stack_memory_mb", positive=True)
    if spec.objective != BUILTIN:
        raise checks.fail(
            "sweep.stack",
            f"packs trials of the built-in trainer only, and objective {spec.objective!r} is "
            "your own function (it builds and trains its own model, one trial at a time); "
            "remove stack, or use objective = 'builtin'",
        )
    from ..training.proxy import TrainConfig
    from ..training.stacked import why_not_stacked

    sample = spec.space.grid()[0]
    reasons = {}
    for width in spec.widths:
        config = TrainConfig.from_dict({**spec.train, **sample, "width": width})
        reason = why_not_stacked(config)
        if reason is None:
            return
        reasons[width] = reason
    detail = "; ".join(f"width {w}: {r}" for w, r in reasons.items())
    raise checks.fail(
        "sweep.stack",
        f"no trial of this sweep can be stacked ({detail}); remove stack (its trials would "
        "train one at a time anyway)",
    )


def _check_type(value: Any, default: Any, where: str) -> None:
    if isinstance(default, bool):
        checks.boolean(value, where)
    elif isinstance(default, int) or default is None:
        checks.integer(value, where)
    elif isinstance(default, float):
        checks.number(value, where)
    elif isinstance(default, str):
        checks.string(value, where)


# ------------------------------------------------------------------------------- files
def load_config(path: str | Path) -> SweepSpec:
    """Read and validate a sweep TOML file; errors name the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        checks.unknown_keys(data, ("sweep", "train"), "")
        if "sweep" not in data:
            raise checks.fail("sweep", "missing; the file needs a [sweep] table")
        if isinstance(data["sweep"], dict) and "train" in data["sweep"]:
            raise checks.fail(
                "sweep.train",
                "the trainer's options go in a top-level [train] table, not [sweep.train]",
            )
        return parse_sweep(
            data["sweep"], train=data.get("train"), base_dir=p.resolve().parent, where="sweep"
        )
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
