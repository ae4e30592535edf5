"""Search spaces over µP hyperparameters, on log scales.

The optima µTransfer cares about (learning rate, init scale, multipliers, weight decay) live on a
multiplicative scale: halving or doubling matters, adding 0.001 does not. So a numeric dimension
is a range ``[low, high]`` searched on a log scale; its grid is the powers of two
``low · 2^(k · step)`` (``step`` in octaves, 1 by default), which is the grid in which published
µTransfer results are reported (e.g. "best LR 2^-6"). Random and TPE samplers draw the same
range log-uniformly. Anything else (warm-up steps, a schedule name) is a list of ``values``.

A space is plain data: it is stored with the study, so ``transfer`` and ``report`` can rebuild it
from the storage alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import checks

if TYPE_CHECKING:
    import optuna

Choice = bool | int | float | str

_EPS = 1e-9


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: a log-scale range, or an explicit list of values."""

    name: str
    low: float | None = None
    high: float | None = None
    step: float = 1.0
    """Grid spacing in octaves (log2 units): 1 → ×2 per point, 0.5 → ×√2."""
    integer: bool = False
    values: tuple[Choice, ...] | None = None
    default: Choice | None = None
    """The value this hyperparameter keeps while others are searched (``strategy =
    "independent"``); it must be one of ``values`` or lie in ``[low, high]``. The grid strategy
    does not use it."""

    def __post_init__(self) -> None:
        where = f"sweep.space.{self.name}"
        if self.values is not None:
            if self.low is not None or self.high is not None:
                raise checks.fail(where, "give either values or low/high, not both")
            if not self.values:
                raise checks.fail(f"{where}.values", "expected a non-empty list")
            if len(set(self.values)) != len(self.values):
                raise checks.fail(f"{where}.values", f"values repeat: {list(self.values)}")
            if self.default is not None and self.default not in self.values:
                raise checks.fail(
                    f"{where}.default",
                    f"{self.default!r} is not one of the values {list(self.values)}",
                )
            return
        if self.low is None or self.high is None:
            raise checks.fail(where, "give low and high (or log2 = [lo, hi], or values = [...])")
        checks.number(self.low, f"{where}.low", positive=True)
        checks.number(self.high, f"{where}.high", positive=True)
        checks.number(self.step, f"{where}.step", positive=True)
        if self.high < self.low:
            raise checks.fail(where, f"high ({self.high}) is below low ({self.low})")
        if self.integer and self.low < 1:
            raise checks.fail(
                f"{where}.low",
                f"an integer log-scale range must start at 1 or more, got {self.low}; "
                "to include 0 use values = [0, ...]",
            )
        if self.default is not None:
            value = checks.number(self.default, f"{where}.default")
            if not self.low * (1 - _EPS) <= value <= self.high * (1 + _EPS):
                raise checks.fail(
                    f"{where}.default",
                    f"{self.default} lies outside the searched range [{self.low:g}, "
                    f"{self.high:g}]; widen the range or use values = [...] (e.g. to include 0)",
                )
            if self.integer and not isinstance(self.default, int):
                raise checks.fail(f"{where}.default", f"expected an integer, got {self.default!r}")
            if not self.integer:
                object.__setattr__(self, "default", value)  # 1 → 1.0, as the grid's points

    def with_default(self, default: Choice | None) -> Dim:
        return dataclasses.replace(self, default=default)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def log2(cls, name: str, lo: float, hi: float, step: float = 1.0, integer: bool = False) -> Dim:
        """The range ``[2^lo, 2^hi]``, e.g. ``Dim.log2("lr", -10, -4)``."""
        return cls(name, low=2.0**lo, high=2.0**hi, step=step, integer=integer)

    @classmethod
    def range(
        cls, name: str, low: float, high: float, step: float = 1.0, integer: bool = False
    ) -> Dim:
        return cls(name, low=float(low), high=float(high), step=step, integer=integer)

    @classmethod
    def choice(cls, name: str, values: Iterable[Choice]) -> Dim:
        return cls(name, values=tuple(values))

    @classmethod
    def from_mapping(cls, name: str, spec: Any, where: str) -> Dim:
        """Parse ``{log2 = [-10, -4]}``, ``{low = 1e-4, high = 0.1, step = 0.5}``,
        ``{values = [0, 10, 100]}`` (optionally ``integer = true``)."""
        if isinstance(spec, Dim):
            return spec
        spec = checks.table(spec, where)
        checks.unknown_keys(
            spec, ("low", "high", "log2", "step", "integer", "values", "default"), where
        )
        integer = checks.boolean(spec.get("integer", False), f"{where}.integer")
        default = spec.get("default")
        if default is not None and not isinstance(default, bool | int | float | str):
            raise checks.fail(f"{where}.default", f"expected a number or a string, got {default!r}")
        if "values" in spec:
            if set(spec) - {"values", "default"}:
                raise checks.fail(where, "values cannot be combined with low/high/log2/step")
            values = checks.sequence(spec["values"], f"{where}.values")
            for i, v in enumerate(values):
                if not isinstance(v, bool | int | float | str):
                    raise checks.fail(
                        f"{where}.values[{i}]", f"expected a number or a string, got {v!r}"
                    )
            return cls(name, values=tuple(values), default=default)
        step = checks.number(spec.get("step", 1.0), f"{where}.step", positive=True)
        if "log2" in spec:
            if "low" in spec or "high" in spec:
                raise checks.fail(where, "give either log2 = [lo, hi] or low/high, not both")
            bounds = checks.sequence(spec["log2"], f"{where}.log2")
            if len(bounds) != 2:
                raise checks.fail(f"{where}.log2", f"expected [lo, hi], got {bounds!r}")
            lo = checks.number(bounds[0], f"{where}.log2[0]")
            hi = checks.number(bounds[1], f"{where}.log2[1]")
            return cls.log2(name, lo, hi, step=step, integer=integer).with_default(default)
        limits: dict[str, float] = {}
        for key in ("low", "high"):  # a wrong value is reported before a missing one
            if key in spec:
                limits[key] = checks.number(spec[key], f"{where}.{key}", positive=True)
        for key in ("low", "high"):
            if key not in limits:
                raise checks.fail(
                    f"{where}.{key}",
                    "missing; a dimension is {low = .., high = ..}, {log2 = [lo, hi]} or "
                    "{values = [..]}",
                )
        return cls(
            name,
            low=limits["low"],
            high=limits["high"],
            step=step,
            integer=integer,
            default=default,
        )

    # ---------------------------------------------------------------------- queries
    def grid(self) -> list[Choice]:
        """The grid points: the values, or ``low · 2^(k·step)`` up to ``high``."""
        if self.values is not None:
            return list(self.values)
        assert self.low is not None and self.high is not None
        n = math.floor(math.log2(self.high / self.low) / self.step + _EPS)
        points = [min(self.low * 2.0 ** (k * self.step), self.high) for k in range(n + 1)]
        if not self.integer:
            return list(points)
        return list(dict.fromkeys(round(p) for p in points))

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution random and TPE samplers draw from (log-uniform ranges)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.values is not None:
            return CategoricalDistribution(self.values)
        assert self.low is not None and self.high is not None
        if self.integer:
            return IntDistribution(round(self.low), round(self.high), log=True)
        return FloatDistribution(self.low, self.high, log=True)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any]
        if self.values is not None:
            out = {"values": list(self.values)}
        else:
            out = {"low": self.low, "high": self.high, "step": self.step}
            if self.integer:
                out["integer"] = True
        if self.default is not None:
            out["default"] = self.default
        return out

    def describe(self) -> str:
        default = "" if self.default is None else f", default {self.default}"
        if self.values is not None:
            return f"{self.name} ∈ {list(self.values)}{default}"
        assert self.low is not None and self.high is not None
        return (
            f"{self.name} ∈ 2^[{math.log2(self.low):.3g}, {math.log2(self.high):.3g}]"
            f" (grid step {self.step:g} octave{'s' if self.step != 1 else ''}{default})"
        )


@dataclass(frozen=True)
class Space:
    """The hyperparameters a sweep searches, in a fixed order."""

    dims: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if not self.dims:
            raise checks.fail("sweep.space", "is empty; add at least one hyperparameter, e.g. lr")
        names = [d.name for d in self.dims]
        if len(set(names)) != len(names):
            raise checks.fail("sweep.space", f"a hyperparameter appears twice: {names}")

    @classmethod
    def of(
        cls, value: Space | Mapping[str, Any] | Iterable[Dim], where: str = "sweep.space"
    ) -> Space:
        """Accept a ``Space``, a mapping ``{name: spec or Dim}`` or a list of ``Dim``."""
        if isinstance(value, Space):
            return value
        if isinstance(value, Mapping):
            return cls(
                tuple(
                    Dim.from_mapping(name, spec, f"{where}.{name}") for name, spec in value.items()
                )
            )
        dims = tuple(value)
        for d in dims:
            if not isinstance(d, Dim):
                raise checks.fail(where, f"expected Dim objects, got {d!r}")
        return cls(dims)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    def __getitem__(self, name: str) -> Dim:
        for d in self.dims:
            if d.name == name:
                return d
        raise KeyError(name)

    def grid(self) -> list[dict[str, Choice]]:
        """Every grid point (the Cartesian product of the dimensions' grids), in a fixed order."""
        grids = [d.grid() for d in self.dims]
        return [dict(zip(self.names, combo, strict=True)) for combo in itertools.product(*grids)]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {d.name: d.distribution() for d in self.dims}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's values: the enqueued (grid or retried) point, else the sampler's draw."""
        values: dict[str, Any] = {}
        for d in self.dims:
            if d.values is not None:
                values[d.name] = trial.suggest_categorical(d.name, d.values)
            elif d.integer:
                assert d.low is not None and d.high is not None
                values[d.name] = trial.suggest_int(d.name, round(d.low), round(d.high), log=True)
            else:
                assert d.low is not None and d.high is not None
                values[d.name] = trial.suggest_float(d.name, d.low, d.high, log=True)
        return values

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {d.name: d.to_dict() for d in self.dims}
