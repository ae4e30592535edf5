"""Reading a coordinate check: slopes, verdicts, explanations, and the report that holds them.

For every recorded series (module × quantity) and step, the slope of log RMS against log width
is fitted by least squares for each seed and averaged over seeds. Under a correct µP every slope
is near 0; a violation shows as a slope near +½ or +1 (an update or logit growing like √n or n)
that *grows* over steps, a too-slow learner as a negative slope.

Two shrinkages are correct µP and are explained rather than flagged:

- the readout's output at step 0 when the readout is initialised non-zero: µP's readout
  multiplier 1/m makes the initial logits shrink like 1/√width; the first update makes them Θ(1);
- attention logits at step 0 under 1/d attention: q and k start independent, so q·k grows like
  √d while the scale is 1/d; training aligns them and the logits become Θ(1).

In depth mode, a residual branch whose output the depth rules scale by ``m_L^a`` is expected to
scale with slope ``a``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]

STABLE = "stable"
BLOWS_UP = "blows up"
VANISHES = "vanishes"
EXPECTED = "expected"
ZERO = "zero"
ABSENT = "-"

READOUT_SHRINKS = (
    "readout output: µP's readout multiplier 1/m with a non-zero init makes its initial part "
    "shrink like 1/√width, while the part learned by the updates is Θ(1); the sum shrinks at "
    "step 0 and less and less as training goes on (TP5 §3)"
)
LOGITS_SHRINK = (
    "attention logits: q and k start independent, so q·k grows like √d while µP scales by 1/d; "
    "the logits shrink like 1/√d until training aligns q and k (their learned part, Δlogits, "
    "must be Θ(1)) (TP5 §4)"
)
RESIDUAL_BRANCH = (
    "residual branch scaled by m_L^{a} by the depth rules: each branch contributes "
    "O(L^{a}) by design so that their sum over L blocks stays bounded"
)
ZERO_INIT = "exactly zero at every size (zero-initialised, e.g. zero_init_readout or query)"


@dataclass(frozen=True)
class Thresholds:
    """Slope limits of the verdict (d log RMS / d log size, averaged over seeds).

    Calibrated on real runs (docs/coord-check.md, tests/test_coord_calibration.py): at widths
    32–256 over 4 pairs of seeds, the largest slope of a correct µP model was +0.14, while the
    faulty layers of the broken variants reached at least +0.34 (1/√d attention; one of two
    attention modules dipped to +0.27), +0.56 (missing readout multiplier) and +0.62 (SP,
    unscaled hidden LR). Correct models shrink by at most −0.4 at those widths (finite width);
    a fault that makes learning too slow gives −0.5 or less.
    """

    blow_up: float = 0.25
    vanish: float = -0.4
    init_shrink: float = -0.5
    """The shrinkage explained at step 0 (1/√width); tolerated down to ``init_shrink - margin``."""
    margin: float = 0.2


@dataclass
class CoordRow:
    """One series: a module's output, update term or attention logits across steps."""

    module: str
    quantity: str
    slopes: list[float | None]
    statuses: list[str]
    verdict: str
    notes: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return (self.module, self.quantity)

    @property
    def worst_step(self) -> int | None:
        """The step where the verdict is most pronounced (largest |slope| among bad steps)."""
        bad = [
            (abs(s), t)
            for t, (s, st) in enumerate(zip(self.slopes, self.statuses, strict=True))
            if st == self.verdict and s is not None
        ]
        return max(bad)[1] if bad else None

    def describe(self) -> str:
        t = self.worst_step
        if t is None:
            return f"{self.module} ({self.quantity})"
        slope = self.slopes[t]
        return f"{self.module} ({self.quantity}: slope {slope:+.2f} at t={t})"


@dataclass
class CoordReport:
    """The result of ``coord_check``: raw RMS values, slopes, a verdict per series."""

    vary: str
    sizes: list[int]
    seeds: list[int]
    steps: int
    rows: list[CoordRow]
    values: dict[Key, list[list[list[float | None]]]]
    """``values[(module, quantity)][t][size index][seed index]``: RMS (None: not recorded)."""
    losses: list[list[list[float | None]]]
    settings: dict[str, Any]
    thresholds: Thresholds = field(default_factory=Thresholds)

    # ------------------------------------------------------------------------- verdicts
    @property
    def ok(self) -> bool:
        """True when nothing blows up (vanishing series are warnings, see ``vanishing``)."""
        return not self.blowing_up()

    def blowing_up(self) -> list[CoordRow]:
        return [r for r in self.rows if r.verdict == BLOWS_UP]

    def vanishing(self) -> list[CoordRow]:
        return [r for r in self.rows if r.verdict == VANISHES]

    def row(self, module: str, quantity: str = "out") -> CoordRow:
        for r in self.rows:
            if r.module == module and r.quantity == quantity:
                return r
        raise KeyError(f"no series {module!r} ({quantity}) in this report")

    def culprits(self, verdict: str = BLOWS_UP) -> list[CoordRow]:
        """The series that point at the faulty layers, not every activation downstream.

        A layer's own update term (or its attention logits) going wrong is the cause; an
        activation that is already wrong at step 0 is an initialisation fault. Only when
        neither exists are the first activations that go wrong named.
        """
        bad = [r for r in self.rows if r.verdict == verdict]
        causes = [
            r
            for r in bad
            if r.quantity in ("update", "logits", "Δlogits")
            or (r.statuses and r.statuses[0] == verdict)
        ]
        return causes or bad[:1]

    # -------------------------------------------------------------------------- display
    def table(self, *, only_bad: bool = False) -> str:
        size_word = "depths" if self.vary == "depth" else "widths"
        status = "PASS" if self.ok else "FAIL"
        s = self.settings
        head = (
            f"coord check [{status}]: rules={s.get('rules')} optimizer={s.get('optimizer')} "
            f"lr={s.get('lr')} {size_word} {','.join(map(str, self.sizes))} "
            f"seeds {len(self.seeds)} steps {self.steps}"
        )
        header = ["module", "quantity", *[f"t={t}" for t in range(self.steps + 1)], "verdict"]
        lines: list[list[str]] = [header]
        for r in self.rows:
            if only_bad and r.verdict == STABLE and not r.notes:
                continue
            cells = [
                "·" if sl is None else f"{sl:+.2f}" + _MARK.get(st, "")
                for sl, st in zip(r.slopes, r.statuses, strict=True)
            ]
            verdict = r.verdict + (" (explained)" if r.verdict == STABLE and r.notes else "")
            lines.append([r.module, r.quantity, *cells, verdict])
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        body = [
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        ]
        body.insert(1, "  ".join("-" * w for w in widths))
        size = "depth" if self.vary == "depth" else "width"
        foot = [
            f"slope = d log RMS / d log {size}, least squares per seed, averaged; "
            f"stable within [{self.thresholds.vanish:+.2f}, {self.thresholds.blow_up:+.2f}]. "
            "! blows up, v vanishes, e explained, 0 exactly zero."
        ]
        foot += self._explanations()
        foot.append(self.summary())
        return "\n".join([head, *body, *foot])

    def _explanations(self) -> list[str]:
        seen: dict[str, list[str]] = {}
        for r in self.rows:
            for note in r.notes:
                seen.setdefault(note, []).append(f"{r.module} ({r.quantity})")
        return [f"explained: {', '.join(where)}: {note}" for note, where in seen.items()]

    def summary(self) -> str:
        if not self.ok:
            names = _names(self.culprits())
            lines = [
                f"FAIL: {len(self.blowing_up())} series blow up with {self._size()}. "
                f"At fault: {names}."
            ]
        else:
            lines = [f"PASS: no series grows with {self._size()}."]
        if self.vanishing():
            names = _names(self.culprits(VANISHES))
            lines.append(
                f"warning: {len(self.vanishing())} series shrink (learning too "
                f"slowly at large {self._size()}): {names}."
            )
        return "\n".join(lines)

    def _size(self) -> str:
        return "depth" if self.vary == "depth" else "width"

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | None = None, **kwargs: Any) -> Any:
        """A figure: one panel per step, RMS against size, faulty series highlighted."""
        from .coord_plot import plot_report

        return plot_report(self, path, **kwargs)

    # ------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "mutransfer.coord/1",
            "ok": self.ok,
            "vary": self.vary,
            "sizes": self.sizes,
            "seeds": self.seeds,
            "steps": self.steps,
            "settings": self.settings,
            "thresholds": dataclasses.asdict(self.thresholds),
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "values": [{"module": m, "quantity": q, "rms": v} for (m, q), v in self.values.items()],
            "losses": self.losses,
            "culprits": [r.describe() for r in self.culprits()] if not self.ok else [],
        }

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False, default=_json_default)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoordReport:
        if data.get("format") != "mutransfer.coord/1":
            raise ValueError(f"not a mutransfer coord-check report (format={data.get('format')!r})")
        return cls(
            vary=data["vary"],
            sizes=list(data["sizes"]),
            seeds=list(data["seeds"]),
            steps=int(data["steps"]),
            rows=[CoordRow(**r) for r in data["rows"]],
            values={(v["module"], v["quantity"]): v["rms"] for v in data["values"]},
            losses=data["losses"],
            settings=dict(data["settings"]),
            thresholds=Thresholds(**data["thresholds"]),
        )

    @classmethod
    def from_json(cls, text_or_path: str) -> CoordReport:
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as fh:
                text = fh.read()
        return cls.from_dict(json.loads(text))


_MARK = {BLOWS_UP: "!", VANISHES: "v", EXPECTED: "e", ZERO: "0"}
MAX_NAMED = 8


def _names(rows: list[CoordRow]) -> str:
    named = "; ".join(r.describe() for r in rows[:MAX_NAMED])
    return named + (f"; and {len(rows) - MAX_NAMED} more" if len(rows) > MAX_NAMED else "")


def _json_default(x: Any) -> Any:
    raise TypeError(f"cannot serialise {type(x).__name__}")


# --------------------------------------------------------------------------------- fitting
def fit_slope(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) against log(size)."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(v) for v in values]
    mx = sum(xs) / len(xs)
    my = sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def series_slope(
    sizes: Sequence[int], per_size_seed: Sequence[Sequence[float | None]]
) -> tuple[float | None, str | None]:
    """Mean over seeds of the per-seed slope; a status when no slope applies.

    Returns ``(slope, None)``, ``(None, ZERO)`` when every value is exactly zero,
    ``(inf, BLOWS_UP)`` when a value overflowed, ``(None, ABSENT)`` when not recorded.
    """
    n_seeds = max((len(v) for v in per_size_seed), default=0)
    slopes: list[float] = []
    all_zero = True
    recorded = False
    for j in range(n_seeds):
        points = [
            (size, vals[j])
            for size, vals in zip(sizes, per_size_seed, strict=True)
            if j < len(vals) and vals[j] is not None
        ]
        if not points:
            continue
        recorded = True
        ys = [float(v) for _, v in points if v is not None]
        if any(not math.isfinite(y) for y in ys):
            return math.inf, BLOWS_UP
        if any(y != 0.0 for y in ys):
            all_zero = False
        positive = [(s, float(v)) for s, v in points if v is not None and v > 0.0]
        if len(positive) >= 2:
            slopes.append(fit_slope([s for s, _ in positive], [v for _, v in positive]))
    if not recorded:
        return None, ABSENT
    if all_zero:
        return None, ZERO
    if not slopes:
        return None, ABSENT
    return sum(slopes) / len(slopes), None


def judge(
    *,
    sizes: list[int],
    seeds: list[int],
    steps: int,
    values: Mapping[Key, Mapping[tuple[int, int, int], float]],
    losses: Mapping[tuple[int, int, int], float],
    order: Mapping[Key, int],
    context: Mapping[str, Any],
    settings: dict[str, Any],
    thresholds: Thresholds,
) -> CoordReport:
    """Turn raw ``values[key][(t, size index, seed index)]`` into a ``CoordReport``."""
    grid: dict[Key, list[list[list[float | None]]]] = {}
    for key in sorted(values, key=lambda k: order.get(k, 0)):
        found = values[key]
        grid[key] = [
            [[found.get((t, i, j)) for j in range(len(seeds))] for i in range(len(sizes))]
            for t in range(steps + 1)
        ]
    loss_grid = [
        [[losses.get((t, i, j)) for j in range(len(seeds))] for i in range(len(sizes))]
        for t in range(steps + 1)
    ]
    roles: Mapping[str, list[str]] = context.get("roles", {})
    rows = [
        _judge_series(key, series, sizes, thresholds, context, list(roles.get(key[0], [])))
        for key, series in grid.items()
    ]
    return CoordReport(
        vary=str(settings.get("vary", "width")),
        sizes=list(sizes),
        seeds=list(seeds),
        steps=steps,
        rows=rows,
        values=grid,
        losses=loss_grid,
        settings=settings,
        thresholds=thresholds,
    )


def _judge_series(
    key: Key,
    series: list[list[list[float | None]]],
    sizes: list[int],
    th: Thresholds,
    context: Mapping[str, Any],
    roles: list[str],
) -> CoordRow:
    module, quantity = key
    slopes: list[float | None] = []
    statuses: list[str] = []
    notes: list[str] = []
    for t, per_size in enumerate(series):
        slope, status = series_slope(sizes, per_size)
        if status is None and slope is not None:
            status, note = _classify(module, quantity, t, slope, th, context, roles)
            if note and note not in notes:
                notes.append(note)
        elif status == ZERO and ZERO_INIT not in notes:
            notes.append(ZERO_INIT)
        slopes.append(None if slope is None or math.isinf(slope) else slope)
        statuses.append(status or ABSENT)
    if BLOWS_UP in statuses:
        verdict = BLOWS_UP
    elif VANISHES in statuses:
        verdict = VANISHES
    else:
        verdict = STABLE
    return CoordRow(module, quantity, slopes, statuses, verdict, notes, roles)


def _classify(
    module: str,
    quantity: str,
    t: int,
    slope: float,
    th: Thresholds,
    context: Mapping[str, Any],
    roles: list[str],
) -> tuple[str, str | None]:
    depth_mode = context.get("vary") == "depth"
    expected = 0.0
    note: str | None = None
    if depth_mode and quantity == "out" and module in context.get("residual_modules", []):
        expected = float(context.get("residual_depth_exponent", 0.0))
        note = RESIDUAL_BRANCH.format(a=f"{expected:g}") if expected else None
    elif (
        not depth_mode
        and th.init_shrink - th.margin <= slope < th.vanish
        and (
            (quantity == "out" and "output" in roles)
            or (quantity == "logits" and context.get("attention") == "mup")
        )
    ):
        return EXPECTED, READOUT_SHRINKS if quantity == "out" else LOGITS_SHRINK
    deviation = slope - expected
    if deviation > th.blow_up:
        return BLOWS_UP, None
    if deviation < th.vanish:
        return VANISHES, None
    return (EXPECTED if note else STABLE), note
