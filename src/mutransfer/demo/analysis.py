"""What the demo's grid says: optimum per size, its drift, and the cost of transferring it.

Pure functions over finished results, so the numbers in ``summary.json``, the terminal table,
the report and the figure all come from one place and can be tested without training anything.

The grid spans one *axis* (``axes``): width (``mutransfer demo``), depth (``--vary depth``), or
batch size, sequence length, training steps or LR schedule at one model size; its points are the
*sizes* (widths, numbers of blocks, batch sizes... or schedule names), the first being the proxy.

Conventions:

- A cell (size, LR) is the *mean* validation loss over the seeds; if any seed diverged, the
  cell is diverged (``None``): an LR that blows up one time in three is not a safe choice.
- The optimum of a size is the grid LR with the lowest cell; drift is the spread (max − min)
  of the optima across sizes, in octaves (powers of two), because the grid is log2.
- Transfer regret: the largest model trained at the LR chosen on the smallest (the proxy),
  compared with the best the largest model reaches when swept directly, in % of that best loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..measures import optimum_drift, optimum_shift, parabola_vertex, transfer_regret
from .axes import AXES, Axis, Size, axis_info, setting_label

__all__ = ["AXES", "Axis", "Size"]

Lookup = Callable[[Size, float, int], dict[str, Any]]
"""``lookup(size, log2_lr, seed)`` → a stored ``TrainResult.to_dict()``."""

NAMES = {"sp": "SP", "mup": "µP", "completep": "CompleteP", "depth-mup": "Depth-µP"}
"""Display names of the presets the demo compares (others are shown as their preset name)."""


def display_name(rules: str) -> str:
    return NAMES.get(rules, rules)


@dataclass
class Sweep:
    """The grid of one parametrization: losses[size][lr] (None = diverged)."""

    rules: str
    sizes: list[Size]
    """The settings of ``axis`` (widths, depths, batch sizes...); the first is the proxy."""
    log2_lrs: list[float]
    seeds: list[int]
    loss: list[list[float | None]]
    seed_loss: list[list[list[float | None]]]
    flops: list[list[float]]
    """FLOPs actually spent per cell (all seeds); a diverged run stops early and spends less."""
    planned_flops: list[list[float]]
    """FLOPs per cell had every run gone to the end: the cost of the grid as designed."""
    seconds: list[list[float]]
    axis: Axis = "width"

    @property
    def best_index(self) -> list[int | None]:
        """Index into ``log2_lrs`` of each size's optimum (None if every LR diverged)."""
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
        """Spread of the optimum across sizes (max − min of log2 LR); None if undefined."""
        return optimum_drift(self.best_log2_lr)

    @property
    def shift_octaves(self) -> float | None:
        """Optimum at the largest minus optimum at the smallest (signed: negative = smaller LR)."""
        return optimum_shift(self.best_log2_lr)

    @property
    def fitted_log2_lr(self) -> list[float | None]:
        """Each size's optimum refined by a parabola through the best grid point and its two
        neighbours (in log2 LR): a drift smaller than one grid step shows up here, where the
        grid optimum can only say 0 or 1 step. None where the best point is on the grid's edge,
        a neighbour diverged, or the three points are not convex (no minimum between them)."""
        out: list[float | None] = []
        for row, j in zip(self.loss, self.best_index, strict=True):
            out.append(None if j is None else parabola_vertex(self.log2_lrs, row, j))
        return out

    @property
    def fitted_drift_octaves(self) -> float | None:
        """Spread of the fitted optima across sizes; None unless every size has one."""
        fitted = self.fitted_log2_lr
        if len(fitted) < 2 or any(f is None for f in fitted):
            return None
        values = [f for f in fitted if f is not None]
        return max(values) - min(values)

    @property
    def edge_optima(self) -> list[Size]:
        """Sizes whose optimum is on the edge of the LR grid (the true one may be outside)."""
        edges = {0, len(self.log2_lrs) - 1}
        return [
            w
            for w, j in zip(self.sizes, self.best_index, strict=True)
            if j is not None and j in edges
        ]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data[axis_info(self.axis).key] = list(self.sizes)  # "widths", "batch_sizes"... for readers
        data.update(
            best_index=self.best_index,
            best_log2_lr=self.best_log2_lr,
            best_loss=self.best_loss,
            drift_octaves=self.drift_octaves,
            shift_octaves=self.shift_octaves,
            optimum_on_grid_edge=self.edge_optima,
            fitted_log2_lr=self.fitted_log2_lr,
            fitted_drift_octaves=self.fitted_drift_octaves,
            regret_of_first=self.regret_of_first,
        )
        return data

    @property
    def regret_of_first(self) -> list[float | None]:
        """Per size: its loss at the first size's best grid LR, in % above its own best.

        The transfer regret at every size, not only the largest: along batch size or steps it
        shows whether a miss grows with the distance from the proxy. None where undefined.
        """
        first = self.best_index[0]
        out: list[float | None] = []
        for row, best in zip(self.loss, self.best_loss, strict=True):
            out.append(None if first is None else transfer_regret(row[first], best))
        return out


def build_sweep(
    rules: str,
    sizes: Sequence[Size],
    log2_lrs: Sequence[float],
    seeds: Sequence[int],
    lookup: Lookup,
    axis: Axis = "width",
) -> Sweep:
    """Collect the grid of one parametrization from stored results (``sizes`` along ``axis``)."""
    loss: list[list[float | None]] = []
    seed_loss: list[list[list[float | None]]] = []
    flops: list[list[float]] = []
    planned: list[list[float]] = []
    seconds: list[list[float]] = []
    for size in sizes:
        row, seed_row, flop_row, planned_row, sec_row = [], [], [], [], []
        for lr in log2_lrs:
            results = [lookup(size, lr, seed) for seed in seeds]
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
        rules,
        list(sizes),
        list(log2_lrs),
        list(seeds),
        loss,
        seed_loss,
        flops,
        planned,
        seconds,
        axis,
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
    """The largest model at the proxy's LR, against sweeping the largest model directly."""

    rules: str
    proxy_size: Size
    target_size: Size
    proxy_log2_lr: float | None
    transferred_loss: float | None
    """Loss of the target at the proxy's LR (None: it diverged, or the proxy had no optimum)."""
    direct_best_log2_lr: float | None
    direct_best_loss: float | None
    regret_percent: float | None
    """(transferred − direct best) / direct best × 100; None when the transferred run diverged."""
    proxy_sweep_flops: float
    """Planned FLOPs of sweeping the smallest size (every LR and seed run to the end)."""
    direct_sweep_flops: float
    """The same for the largest size: what sweeping the target directly would cost."""
    reused_run: bool
    """True when the target run at the proxy's LR was already finished (normally: it is a run of
    the grid at the largest size), so the transfer step trained nothing new."""
    axis: Axis = "width"

    @property
    def compute_fraction(self) -> float | None:
        if self.direct_sweep_flops <= 0:
            return None
        return self.proxy_sweep_flops / self.direct_sweep_flops

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_fraction"] = self.compute_fraction
        # "proxy_width"/"target_width", "proxy_batch_size"... for readers of the JSON
        field = axis_info(self.axis).field
        data[f"proxy_{field}"], data[f"target_{field}"] = self.proxy_size, self.target_size
        return data


def transfer(sweep: Sweep, transferred_loss: float | None, reused: bool) -> Transfer:
    """Score the transfer from the smallest size of ``sweep`` to its largest.

    ``transferred_loss``: the largest model's (seed-mean) loss at the proxy's optimal LR, None if
    it diverged; the caller looks it up (or trains it) because the grid may not contain that LR.
    """
    proxy_lr = sweep.best_log2_lr[0]
    direct_lr, direct_loss = sweep.best_log2_lr[-1], sweep.best_loss[-1]
    regret = transfer_regret(transferred_loss, direct_loss)
    return Transfer(
        rules=sweep.rules,
        proxy_size=sweep.sizes[0],
        target_size=sweep.sizes[-1],
        proxy_log2_lr=proxy_lr,
        transferred_loss=transferred_loss,
        direct_best_log2_lr=direct_lr,
        direct_best_loss=direct_loss,
        regret_percent=regret,
        proxy_sweep_flops=float(sum(sweep.planned_flops[0])),
        direct_sweep_flops=float(sum(sweep.planned_flops[-1])),
        reused_run=reused,
        axis=sweep.axis,
    )


def largest_is_best(sweep: Sweep) -> bool | None:
    """Whether the largest size has the lowest optimal loss of all (None if undefined)."""
    best = sweep.best_loss
    if best[-1] is None:
        return None
    return all(b is None or best[-1] <= b for b in best[:-1])


CLAIM_PAIRS: dict[str, tuple[str, str]] = {
    "width": ("sp", "mup"),
    "depth": ("mup", "completep"),
    "batch": ("sp", "mup"),
    "seq-len": ("sp", "mup"),
    "steps": ("sp", "mup"),
    "schedule": ("sp", "mup"),
}
"""(reference, candidate) whose claims each axis checks: SP vs µP across widths; µP (no depth
rule) vs CompleteP across depths; along the other axes µP, with SP beside it at the same width."""

MAX_DRIFT_OCTAVES = 1.0
"""The bar of "the optimum stays put": its spread across the sizes, in octaves."""
MAX_REGRET_PERCENT = 1.0
"""The bar of "transferring the proxy's LR is (nearly) free": the target's loss above its own
best, in %."""

SIZE_AXES = ("width", "depth")
"""The axes a parametrization is built for: the smallest size is its base, and the demo claims
that the optimum stays put. Along the others it *measures* whether it does (``transfers``)."""


def claims(
    reference: Sweep,
    candidate: Sweep,
    reference_transfer: Transfer,
    candidate_transfer: Transfer,
) -> dict[str, Any]:
    """The demo's claims, each with the measured numbers and whether it held on this run.

    Across widths the candidate is µP and the reference SP; across depths CompleteP and µP.

    1. The candidate's optimum moves at most 1 octave across the sizes; the reference's moves
       at least 2 octaves (widths: SP's drift is the textbook failure) or, across depths, more
       than the candidate's (µP without depth rules drifts, but less dramatically).
    2. Under the candidate the largest model is the best one at its optimum.
    3. Transferring the proxy's LR costs ≤ 1 % of loss under the candidate, and clearly more
       under the reference.

    Along batch size, sequence length, steps and schedule nothing is claimed in advance: the
    two checks of ``transfers`` (does µP's optimum stay within 1 octave, does the proxy's LR
    cost ≤ 1 %) are the measurement.
    """
    if candidate.axis not in SIZE_AXES:
        return transfers(candidate, candidate_transfer)
    axis = candidate.axis
    ref, cand = reference.rules, candidate.rules
    ref_key, cand_key = ref.replace("-", "_"), cand.replace("-", "_")
    ref_name, cand_name = display_name(ref), display_name(cand)
    plural = f"{axis}s"
    cand_drift, ref_drift = candidate.drift_octaves, reference.drift_octaves
    cand_regret = candidate_transfer.regret_percent
    ref_regret = reference_transfer.regret_percent
    ref_regret_worse = cand_regret is not None and (
        ref_regret is None or ref_regret > max(2 * cand_regret, cand_regret + 1.0)
    )
    if axis == "width":
        moves = ref_drift is not None and ref_drift >= 2
        moves_rule = f"{ref_name} optimum moves >= 2 octaves across the {plural}"
    else:
        moves = ref_drift is not None and (cand_drift is None or ref_drift > cand_drift)
        moves_rule = f"{ref_name} optimum moves more than {cand_name}'s across the {plural}"
    largest = "widest" if axis == "width" else "deepest"
    return {
        f"{cand_key}_optimum_stable": {
            "holds": cand_drift is not None and cand_drift <= MAX_DRIFT_OCTAVES,
            f"{cand_key}_drift_octaves": cand_drift,
            "rule": f"{cand_name} optimum moves <= 1 octave across the {plural}",
        },
        f"{ref_key}_optimum_moves": {
            "holds": moves,
            f"{ref_key}_drift_octaves": ref_drift,
            "rule": moves_rule,
        },
        f"{cand_key}_{'wider' if axis == 'width' else 'deeper'}_is_better": {
            "holds": bool(largest_is_best(candidate)),
            f"{cand_key}_best_loss": candidate.best_loss,
            "rule": f"under {cand_name} the {largest} model has the lowest loss at its optimum",
        },
        f"{cand_key}_transfer_regret_small": {
            "holds": cand_regret is not None and cand_regret <= MAX_REGRET_PERCENT,
            f"{cand_key}_regret_percent": cand_regret,
            "rule": f"{cand_name} transfer regret at the {largest} {axis} <= 1 %",
        },
        f"{ref_key}_transfer_regret_larger": {
            "holds": ref_regret_worse,
            f"{ref_key}_regret_percent": ref_regret,
            "rule": (
                f"{ref_name} transfer regret clearly larger (> 2x and > 1 point above "
                f"{cand_name}'s)"
            ),
        },
    }


def transfers_as_is(drift: float | None, regret: float | None) -> bool:
    """Both bars of ``transfers`` at once: the optimum stays within ``MAX_DRIFT_OCTAVES`` and
    the first setting's LR costs at most ``MAX_REGRET_PERCENT`` at the last."""
    return (
        drift is not None
        and drift <= MAX_DRIFT_OCTAVES
        and regret is not None
        and regret <= MAX_REGRET_PERCENT
    )


def transfers(sweep: Sweep, transfer: Transfer) -> dict[str, Any]:
    """Does the LR found at the axis's first setting serve as is at its last? Two checks.

    The same two numbers as the width claims (drift ≤ 1 octave, regret ≤ 1 %); an axis that
    fails them is one whose optimum moves and needs a rule (``mutransfer transfer``).
    """
    info = axis_info(sweep.axis)
    key, name = sweep.rules.replace("-", "_"), display_name(sweep.rules)
    drift, regret = sweep.drift_octaves, transfer.regret_percent
    return {
        f"{key}_optimum_stable": {
            "holds": drift is not None and drift <= MAX_DRIFT_OCTAVES,
            f"{key}_drift_octaves": drift,
            "rule": f"{name} optimum moves <= 1 octave across the {info.plural}",
        },
        f"{key}_transfer_regret_small": {
            "holds": regret is not None and regret <= MAX_REGRET_PERCENT,
            f"{key}_regret_percent": regret,
            "rule": (
                f"{name}: the {info.smallest} setting's LR costs <= 1 % at the "
                f"{info.largest} ({setting_label(sweep.axis, transfer.target_size)})"
            ),
        },
    }


def finding(sweep: Sweep, transfer: Transfer) -> str:
    """One sentence: whether the LR transfers along the axis, and if not, which way it moves.

    "Transfers as is" needs both checks of ``transfers`` (``transfers_as_is``); otherwise the
    sentence gives the signed shift from the first setting to the last, on the grid and
    parabola-refined. An optimum on the edge of the LR grid makes either verdict a guess, and
    the sentence says so.
    """
    info = axis_info(sweep.axis)
    name = display_name(sweep.rules)
    first, last = sweep.sizes[0], sweep.sizes[-1]
    lrs, fitted = sweep.best_log2_lr, sweep.fitted_log2_lr
    if lrs[0] is None or lrs[-1] is None:
        return (
            f"{name}: no optimum at {setting_label(sweep.axis, first)} or "
            f"{setting_label(sweep.axis, last)} (diverged)"
        )
    shift = sweep.shift_octaves or 0.0
    refined = (
        f", parabola-refined {fitted[-1] - fitted[0]:+.2f}"
        if fitted[0] is not None and fitted[-1] is not None
        else ""
    )
    regret = transfer.regret_percent
    cost = "it diverges there" if regret is None else f"it costs {regret:.2f} % there"
    holds = transfers_as_is(sweep.drift_octaves, regret)
    verdict = "transfers as is" if holds else "moves"
    edges = sweep.edge_optima
    if edges:  # the true optimum may lie outside the grid: neither verdict is measured
        where = ", ".join(setting_label(sweep.axis, e) for e in edges)
        verdict = f"cannot be judged (optimum on the LR grid's edge at {where}); as measured it"
        verdict += " transfers" if holds else " moves"
    return (
        f"{name} {verdict} across the {info.plural}: the optimum goes from 2^{lrs[0]:g} at "
        f"{setting_label(sweep.axis, first)} to 2^{lrs[-1]:g} at "
        f"{setting_label(sweep.axis, last)} ({shift:+g} octave{'' if abs(shift) == 1 else 's'}"
        f"{refined}; drift over all settings {sweep.drift_octaves:g}); the {info.smallest} "
        f"setting's LR: {cost}"
    )
