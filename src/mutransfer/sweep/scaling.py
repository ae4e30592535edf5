"""How the best learning rate moves with batch size and training length: measured, fitted, used.

µP makes the optimum stay put across *width*; across batch size and the number of steps it
moves (larger batches want larger LRs; longer training wants smaller ones: Bjorck et al.,
ICLR 2025; the Step Law, 2025). Varying them is cheap at the proxy width, so a sweep may search
``batch_size`` and/or ``steps`` beside ``lr``; this module turns its results into a rule:

1. ``lr_optima``: per setting (batch size, steps), the best LR — the grid's best point refined
   by a parabola in log2 LR through its neighbours (``measures.parabola_vertex``);
2. ``fit_power_law``: least squares of ``log2 LR* = c + a·log2 B + b·log2 T`` over the
   settings, with the standard error of each exponent. It refuses, saying why, when the data
   cannot support a fit: an axis with one value only, no more settings than unknowns (no
   uncertainty), or an optimum on the edge of the LR grid (the true one may lie outside);
3. ``move_lr``: the LR for another batch size and length by the fit, or by a published rule
   (``RULES``), with the rule's source recorded beside the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..measures import parabola_vertex
from .errors import SweepError

AXES = ("batch_size", "steps")

RULES: dict[str, dict[str, str]] = {
    "batch_size": {
        "fit": "power law fitted to the proxy sweep",
        "sqrt": "LR ∝ √batch (Adam: Malladi et al., 'On the SDEs and Scaling Rules for "
        "Adaptive Gradient Algorithms', NeurIPS 2022)",
        "linear": "LR ∝ batch (SGD: Goyal et al., 'Accurate, Large Minibatch SGD', 2017)",
        "none": "LR unchanged with batch size",
    },
    "steps": {
        "fit": "power law fitted to the proxy sweep",
        "none": "LR unchanged with training length",
    },
}
"""Named rules per axis, with their source (written into the transfer output)."""

_FIXED_EXPONENT = {"sqrt": 0.5, "linear": 1.0, "none": 0.0}


def published_rules(axis: str) -> str:
    """The named rules of an axis other than the fit, for messages: ``sqrt/linear/none``."""
    return "/".join(r for r in RULES[axis] if r != "fit")


@dataclass(frozen=True)
class LrOptimum:
    """The best LR of one setting: on the grid, and refined (None on the grid's edge)."""

    setting: dict[str, float]
    log2_lr_grid: float
    log2_lr_fitted: float | None
    loss: float
    n_lrs: int

    @property
    def log2_lr(self) -> float:
        return self.log2_lr_fitted if self.log2_lr_fitted is not None else self.log2_lr_grid


def lr_optima(
    points: Sequence[tuple[Mapping[str, Any], float]], axes: Sequence[str] = AXES
) -> list[LrOptimum]:
    """Group ``(params, loss)`` points by their values of ``axes`` and find each group's best
    LR. Other hyperparameters are held at their best (each LR's best loss over them)."""
    groups: dict[tuple[float, ...], dict[float, float]] = {}
    for params, loss in points:
        if "lr" not in params or not math.isfinite(loss):
            continue
        key = tuple(float(params[a]) for a in axes)
        lr = math.log2(float(params["lr"]))
        row = groups.setdefault(key, {})
        row[lr] = min(loss, row.get(lr, math.inf))
    out = []
    for key, row in sorted(groups.items()):
        xs = sorted(row)
        ys: list[float | None] = [row[x] for x in xs]
        j = min(range(len(xs)), key=lambda k: row[xs[k]])
        out.append(
            LrOptimum(
                setting=dict(zip(axes, key, strict=True)),
                log2_lr_grid=xs[j],
                log2_lr_fitted=parabola_vertex(xs, ys, j),
                loss=row[xs[j]],
                n_lrs=len(xs),
            )
        )
    return out


@dataclass(frozen=True)
class PowerLaw:
    """``log2 LR* = intercept + Σ exponent[a] · log2 a`` with standard errors."""

    intercept: float
    exponents: dict[str, float]
    stderr: dict[str, float]
    residual_octaves: float
    """RMS of the fit's residuals, in octaves of LR."""
    n_settings: int
    optima: list[LrOptimum] = field(default_factory=list, repr=False)

    def log2_lr(self, setting: Mapping[str, float]) -> float:
        return self.intercept + sum(
            e * math.log2(float(setting[a])) for a, e in self.exponents.items()
        )

    def describe(self) -> str:
        terms = " · ".join(
            f"{'B' if a == 'batch_size' else 'T'}^({e:+.3f} ± {self.stderr[a]:.3f})"
            for a, e in self.exponents.items()
        )
        return (
            f"LR* ∝ {terms} (fit over {self.n_settings} settings, residual "
            f"{self.residual_octaves:.2f} octave RMS)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "intercept_log2": self.intercept,
            "exponents": dict(self.exponents),
            "stderr": dict(self.stderr),
            "residual_octaves": self.residual_octaves,
            "settings": [{**o.setting, "log2_lr": o.log2_lr, "loss": o.loss} for o in self.optima],
        }


def fit_power_law(optima: Sequence[LrOptimum], axes: Sequence[str]) -> PowerLaw:
    """Least-squares power law of the optimal LR in ``axes``; refuses when the data cannot
    carry it (see the module docstring)."""
    import numpy as np

    if not axes:
        raise SweepError("nothing to fit: no axis (batch_size, steps) was asked for")
    for axis in axes:
        levels = {o.setting[axis] for o in optima}
        if len(levels) < 2:
            raise SweepError(
                f"cannot fit how the best LR moves with {axis}: the sweep tried "
                f"{len(levels)} value(s) of it ({sorted(levels)}). Search it in the sweep "
                f"(sweep.space.{axis} = {{ values = [...] }}, at least 2 values, better 3+) or "
                f"choose a published rule (--{'batch' if axis == 'batch_size' else 'steps'}-rule "
                f"{published_rules(axis)})"
            )
    edge = [o for o in optima if o.log2_lr_fitted is None]
    if edge:
        where = ", ".join(f"{_setting(o.setting)} (best LR 2^{o.log2_lr_grid:g})" for o in edge[:3])
        raise SweepError(
            f"the best LR is not bracketed at {where}: it lies on the edge of the LR grid (or "
            "next to a diverged point), so the true optimum may be outside it. Widen "
            "sweep.space.lr there before fitting"
        )
    unknowns = 1 + len(axes)
    if len(optima) <= unknowns:
        raise SweepError(
            f"{len(optima)} settings cannot give an uncertainty for {unknowns} unknowns "
            f"(intercept + {len(axes)} exponent(s)); add settings (more values of "
            f"{' / '.join(axes)})"
        )
    x = np.array([[1.0] + [math.log2(o.setting[a]) for a in axes] for o in optima])
    y = np.array([o.log2_lr for o in optima])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residuals = y - x @ coef
    dof = len(optima) - unknowns
    sigma2 = float(residuals @ residuals) / dof
    covariance = sigma2 * np.linalg.pinv(x.T @ x)
    return PowerLaw(
        intercept=float(coef[0]),
        exponents={a: float(coef[i + 1]) for i, a in enumerate(axes)},
        stderr={
            a: float(math.sqrt(max(covariance[i + 1, i + 1], 0.0))) for i, a in enumerate(axes)
        },
        residual_octaves=float(math.sqrt(float(residuals @ residuals) / len(optima))),
        n_settings=len(optima),
        optima=list(optima),
    )


@dataclass(frozen=True)
class LrMove:
    """An LR moved from one (batch, steps) setting to another, and why."""

    lr: float
    factor: float
    rules: dict[str, str]
    """Per axis: the rule used and its source."""


def move_lr(
    lr: float,
    source: Mapping[str, float],
    target: Mapping[str, float],
    rules: Mapping[str, str],
    law: PowerLaw | None = None,
) -> LrMove:
    """``lr`` at ``source`` (batch size, steps) moved to ``target`` by each axis's rule."""
    log2_factor = 0.0
    used: dict[str, str] = {}
    for axis, rule in rules.items():
        if axis not in RULES or rule not in RULES[axis]:
            known = ", ".join(RULES.get(axis, {}))
            raise SweepError(f"unknown {axis} rule {rule!r}; known: {known}")
        ratio = float(target[axis]) / float(source[axis])
        if rule == "fit":
            if law is None or axis not in law.exponents:
                raise SweepError(f"no fit for {axis}: the sweep did not vary it")
            exponent = law.exponents[axis]
            used[axis] = (
                f"fit: LR ∝ {axis}^({exponent:+.3f} ± {law.stderr[axis]:.3f}), "
                f"{law.n_settings} settings of the proxy sweep"
            )
        else:
            exponent = _FIXED_EXPONENT[rule]
            used[axis] = f"{rule}: {RULES[axis][rule]}"
        log2_factor += exponent * math.log2(ratio)
        used[axis] += f"; {source[axis]:g} → {target[axis]:g}"
    factor = 2.0**log2_factor
    return LrMove(lr=lr * factor, factor=factor, rules=used)


def _setting(setting: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in setting.items())
