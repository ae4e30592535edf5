"""What the demo's grid says: optimum per width, its drift, and the cost of transferring it.

Pure functions over finished results, so the numbers in ``summary.json``, the terminal table,
the report and the figure all come from one place and can be tested without training anything.

Conventions:

- A cell (width, LR) is the *mean* validation loss over the seeds; if any seed diverged, the
  cell is diverged (``None``): an LR that blows up one time in three is not a safe choice.
- The optimum of a width is the grid LR with the lowest cell; drift is the spread (max − min)
  of the optima across widths, in octaves (powers of two), because the grid is log2.
- Transfer regret: the widest model trained at the LR chosen on the narrowest (the proxy),
  compared with the best the widest model reaches when swept directly, in % of that best loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Lookup = Callable[[int, float, int], dict[str, Any]]
"""``lookup(width, log2_lr, seed)`` → a stored ``TrainResult.to_dict()``."""


@dataclass
class Sweep:
    """The grid of one parametrization: losses[width][lr] (None = diverged)."""

    rules: str
    widths: list[int]
    log2_lrs: list[float]
    seeds: list[int]
    loss: list[list[float | None]]
    seed_loss: list[list[list[float | None]]]
    flops: list[list[float]]
    """FLOPs actually spent per cell (all seeds); a diverged run stops early and spends less."""
    planned_flops: list[list[float]]
    """FLOPs per cell had every run gone to the end: the cost of the grid as designed."""
    seconds: list[list[float]]

    @property
    def best_index(self) -> list[int | None]:
        """Index into ``log2_lrs`` of each width's optimum (None if every LR diverged)."""
        out: list[int | None] = []
        for row in self.loss:
            finite = [(v, j) for j, v in enumerate(row) if v is not None]
            out.append(min(finite)[1] if finite else None)
        return out

    @property
    def best_log2_lr(self) -> list[float | None]:
        return [None if j is None else self.log2_lrs[j] for j in self.best_index]

    @property
    def best_loss(self) -> list[float | None]:
        return [None if j is None else self.loss[i][j] for i, j in enumerate(self.best_index)]

    @property
    def drift_octaves(self) -> float | None:
        """Spread of the optimum across widths (max − min of log2 LR); None if undefined."""
        best = [b for b in self.best_log2_lr if b is not None]
        return max(best) - min(best) if len(best) >= 2 else None

    @property
    def shift_octaves(self) -> float | None:
        """Optimum at the widest minus optimum at the narrowest (signed: negative = smaller LR)."""
        first, last = self.best_log2_lr[0], self.best_log2_lr[-1]
        return None if first is None or last is None else last - first

    @property
    def edge_optima(self) -> list[int]:
        """Widths whose optimum is on the edge of the LR grid (the true one may be outside)."""
        edges = {0, len(self.log2_lrs) - 1}
        return [
            w
            for w, j in zip(self.widths, self.best_index, strict=True)
            if j is not None and j in edges
        ]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            best_index=self.best_index,
            best_log2_lr=self.best_log2_lr,
            best_loss=self.best_loss,
            drift_octaves=self.drift_octaves,
            shift_octaves=self.shift_octaves,
            optimum_on_grid_edge=self.edge_optima,
        )
        return data


def build_sweep(
    rules: str,
    widths: Sequence[int],
    log2_lrs: Sequence[float],
    seeds: Sequence[int],
    lookup: Lookup,
) -> Sweep:
    """Collect the grid of one parametrization from stored results."""
    loss: list[list[float | None]] = []
    seed_loss: list[list[list[float | None]]] = []
    flops: list[list[float]] = []
    planned: list[list[float]] = []
    seconds: list[list[float]] = []
    for width in widths:
        row, seed_row, flop_row, planned_row, sec_row = [], [], [], [], []
        for lr in log2_lrs:
            results = [lookup(width, lr, seed) for seed in seeds]
            values = [_finite_loss(r) for r in results]
            seed_row.append(values)
            finite = [v for v in values if v is not None]
            row.append(sum(finite) / len(finite) if len(finite) == len(values) else None)
            flop_row.append(float(sum(r.get("flops", 0.0) for r in results)))
            planned_row.append(float(sum(_planned_flops(r) for r in results)))
            sec_row.append(float(sum(r.get("seconds", 0.0) for r in results)))
        loss.append(row)
        seed_loss.append(seed_row)
        flops.append(flop_row)
        planned.append(planned_row)
        seconds.append(sec_row)
    return Sweep(
        rules, list(widths), list(log2_lrs), list(seeds), loss, seed_loss, flops, planned, seconds
    )


def _planned_flops(result: dict[str, Any]) -> float:
    """The FLOPs of a run scaled to its full length (a diverged run stopped early)."""
    flops, done = float(result.get("flops", 0.0)), result.get("steps_done", 0)
    steps = (result.get("config") or {}).get("steps", done)
    return flops * steps / done if done else 0.0


def _finite_loss(result: dict[str, Any]) -> float | None:
    value = result.get("val_loss")
    if result.get("diverged") or value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class Transfer:
    """The widest model at the proxy's LR, against sweeping the widest model directly."""

    rules: str
    proxy_width: int
    target_width: int
    proxy_log2_lr: float | None
    transferred_loss: float | None
    """Loss of the target at the proxy's LR (None: it diverged, or the proxy had no optimum)."""
    direct_best_log2_lr: float | None
    direct_best_loss: float | None
    regret_percent: float | None
    """(transferred − direct best) / direct best × 100; None when the transferred run diverged."""
    proxy_sweep_flops: float
    """Planned FLOPs of sweeping the narrowest width (every LR and seed run to the end)."""
    direct_sweep_flops: float
    """The same for the widest width: what sweeping the target directly would cost."""
    reused_run: bool
    """True when the target run at the proxy's LR was already finished (normally: it is a run of
    the grid at the widest width), so the transfer step trained nothing new."""

    @property
    def compute_fraction(self) -> float | None:
        if self.direct_sweep_flops <= 0:
            return None
        return self.proxy_sweep_flops / self.direct_sweep_flops

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_fraction"] = self.compute_fraction
        return data


def transfer(sweep: Sweep, transferred_loss: float | None, reused: bool) -> Transfer:
    """Score the transfer from the narrowest width of ``sweep`` to its widest.

    ``transferred_loss``: the widest model's (seed-mean) loss at the proxy's optimal LR, None if
    it diverged; the caller looks it up (or trains it) because the grid may not contain that LR.
    """
    proxy_lr = sweep.best_log2_lr[0]
    direct_lr, direct_loss = sweep.best_log2_lr[-1], sweep.best_loss[-1]
    regret = None
    if transferred_loss is not None and direct_loss is not None:
        regret = 100.0 * (transferred_loss - direct_loss) / direct_loss
    return Transfer(
        rules=sweep.rules,
        proxy_width=sweep.widths[0],
        target_width=sweep.widths[-1],
        proxy_log2_lr=proxy_lr,
        transferred_loss=transferred_loss,
        direct_best_log2_lr=direct_lr,
        direct_best_loss=direct_loss,
        regret_percent=regret,
        proxy_sweep_flops=float(sum(sweep.planned_flops[0])),
        direct_sweep_flops=float(sum(sweep.planned_flops[-1])),
        reused_run=reused,
    )


def wider_is_better(sweep: Sweep) -> bool | None:
    """Whether the widest width has the lowest optimal loss of all (None if undefined)."""
    best = sweep.best_loss
    if best[-1] is None:
        return None
    return all(b is None or best[-1] <= b for b in best[:-1])


def claims(sp: Sweep, mup: Sweep, sp_transfer: Transfer, mup_transfer: Transfer) -> dict[str, Any]:
    """The demo's claims, each with the measured numbers and whether it held on this run.

    1. µP's optimum moves at most 1 octave across the widths; SP's moves at least 2.
    2. Under µP the widest model is the best one at its optimum.
    3. Transferring the proxy's LR costs ≤ 1 % of loss under µP, and clearly more under SP.
    """
    mup_drift, sp_drift = mup.drift_octaves, sp.drift_octaves
    mup_regret, sp_regret = mup_transfer.regret_percent, sp_transfer.regret_percent
    sp_regret_worse = mup_regret is not None and (
        sp_regret is None or sp_regret > max(2 * mup_regret, mup_regret + 1.0)
    )
    return {
        "mup_optimum_stable": {
            "holds": mup_drift is not None and mup_drift <= 1,
            "mup_drift_octaves": mup_drift,
            "rule": "µP optimum moves <= 1 octave across the widths",
        },
        "sp_optimum_moves": {
            "holds": sp_drift is not None and sp_drift >= 2,
            "sp_drift_octaves": sp_drift,
            "rule": "SP optimum moves >= 2 octaves across the widths",
        },
        "mup_wider_is_better": {
            "holds": bool(wider_is_better(mup)),
            "mup_best_loss": mup.best_loss,
            "rule": "under µP the widest model has the lowest loss at its optimum",
        },
        "mup_transfer_regret_small": {
            "holds": mup_regret is not None and mup_regret <= 1.0,
            "mup_regret_percent": mup_regret,
            "rule": "µP transfer regret at the widest width <= 1 %",
        },
        "sp_transfer_regret_larger": {
            "holds": sp_regret_worse,
            "sp_regret_percent": sp_regret,
            "rule": "SP transfer regret clearly larger (> 2x and > 1 point above µP's)",
        },
    }
