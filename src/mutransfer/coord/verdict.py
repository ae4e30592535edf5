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

What fails the check (``CoordReport.ok`` is False):

- a series that grows with width at any step (``blows up``): the µP violation;
- a trained layer's own update (``update``, ``Δlogits``; see ``LAZY_JUDGED``) whose slope,
  averaged over the steps, is below ``Thresholds.lazy`` (``learns too slowly``): µP promises
  that every layer's update stays Θ(1), so a layer whose learning rate or multiplier carries
  one factor of width too many (slope −1: e.g. a readout LR divided by width) is as wrong as
  one that blows up.
  The shrinkages µP itself produces are at most 1/√width (slope −½: an incoherent sum, such as
  the first SGD updates of attention queries and keys, which need the readout to have learned),
  so the threshold sits between −½ and −1, where the calibration puts it.

Other shrinking series are warnings (``vanishes``) unless the check is strict
(``coord_check(strict=True)``, the CLI's ``--strict``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .status import ABSENT, BLOWS_UP, EXPECTED, LAZY, NOISY, STABLE, VANISHES, ZERO

Key = tuple[str, str]

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

LEARNED = ("update", "Δbias", "Δlogits")
"""The quantities that are a layer's own update: µP keeps each of them Θ(1) at every step."""
LAZY_JUDGED = ("update", "Δlogits")
"""The updates that fail when they shrink like 1/width. Not ``Δbias``: a bias's Adam update is
Θ(LR) whatever its scaling, unless its gradient is zero — a key projection's bias, to which
softmax is blind (shift-invariant), gets rounding noise below Adam's ε, and that noise shrinks
with width (measured on BERT: slope −1.2). A bias's LR rule is the norm gains' (``vector``),
judged on their ``update``."""


@dataclass(frozen=True)
class Thresholds:
    """Slope limits of the verdict (d log RMS / d log size, averaged over seeds).

    Calibrated on real runs (docs/coord-check.md; ``bench/coord_faults.py --only calibration``;
    tests/test_coord_calibration.py): the reference GPT and MLP, Adam and SGD, widths 32–256
    and 64–512, 3 steps, 4 pairs of seeds. The largest slope of correct µP was +0.20 (GPT under
    SGD at 32–256; +0.14 under Adam), the weakest fault +0.34 (1/√d attention), the others
    +0.46 or more. The slowest correct update, averaged over the steps, was −0.66 (SGD's
    attention queries and keys), the fastest readout with its LR divided by width −0.87.
    Correct models shrink by at most −0.4 at those widths (finite width).
    """

    blow_up: float = 0.25
    vanish: float = -0.4
    """Below it a series ``vanishes``: a warning, a failure only when strict."""
    init_shrink: float = -0.5
    """The shrinkage explained at step 0 (1/√width); tolerated down to ``init_shrink - margin``."""
    margin: float = 0.2
    lazy: float = -0.75
    """A layer's own update (``LEARNED``) whose slope, averaged over the steps, is below it
    ``learns too slowly``: a failure. Halfway between µP's own incoherent shrinkage (−½) and a
    fault of one factor of width (−1)."""
    significance: float = 2.0
    """A step blows up only if its slope is also this many standard errors above 0: a slope
    made by points scattered around the line (a few seeds of a noisy series) is no evidence."""


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
    errors: list[float | None] = field(default_factory=list)
    """Standard error of each step's slope (see ``fit_series``)."""

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
        if self.verdict == LAZY:
            mean = lazy_slope(self)
            return f"{self.module} ({self.quantity}: slope {mean:+.2f} on average over the steps)"
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
    strict: bool = False
    """Fail on series that vanish too (activations included), not only warn."""

    # ------------------------------------------------------------------------- verdicts
    @property
    def ok(self) -> bool:
        """True when nothing blows up and every layer's own update keeps up with width.

        Other shrinking series are warnings (see ``vanishing``), failures when ``strict``. The
        printed verdict (``summary``, ``table``) is derived from this same property, so it
        never contradicts it (nor the CLI's exit status, which is ``not ok``).
        """
        return not self.failing()

    def failing(self) -> list[CoordRow]:
        """The series that make the check fail: they blow up or learn too slowly (or, when
        ``strict``, vanish)."""
        failing = (BLOWS_UP, LAZY, VANISHES) if self.strict else (BLOWS_UP, LAZY)
        return [r for r in self.rows if r.verdict in failing]

    def blowing_up(self) -> list[CoordRow]:
        return [r for r in self.rows if r.verdict == BLOWS_UP]

    def learning_too_slowly(self) -> list[CoordRow]:
        """Layers whose own update shrinks with width over the steps (see ``Thresholds.lazy``)."""
        return [r for r in self.rows if r.verdict == LAZY]

    def vanishing(self) -> list[CoordRow]:
        return [r for r in self.rows if r.verdict == VANISHES]

    def row(self, module: str, quantity: str = "out") -> CoordRow:
        for r in self.rows:
            if r.module == module and r.quantity == quantity:
                return r
        raise KeyError(f"no series {module!r} ({quantity}) in this report")

    def culprits(self, verdict: str | None = None) -> list[CoordRow]:
        """The series that point at the faulty layers, not every activation downstream.

        A layer's own update term (or its attention logits) going wrong is the cause; an
        activation that is already wrong at step 0 is an initialisation fault. Only when
        neither exists are the first activations that go wrong named. Without ``verdict``:
        the culprits of the failure, those that blow up, then the layers that learn too slowly
        (each of those is its own cause); with one (``BLOWS_UP``, ``LAZY``, ``VANISHES``): the
        culprits of that verdict only.
        """
        if verdict is None:
            strict = [*self.culprits(VANISHES)] if self.strict and self.vanishing() else []
            return [*self.culprits(BLOWS_UP), *self.culprits(LAZY), *strict]
        bad = [r for r in self.rows if r.verdict == verdict]
        causes = [
            r
            for r in bad
            if r.quantity in (*LEARNED, "logits") or (r.statuses and r.statuses[0] == verdict)
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
            "! blows up, v vanishes, e explained, 0 exactly zero, ? past +"
            f"{self.thresholds.blow_up:.2f} but within {self.thresholds.significance:g} standard "
            "errors of 0 (noise, not counted). A layer's own update "
            f"(update, Δlogits) below {self.thresholds.lazy:+.2f} on average over the "
            "steps learns too slowly (a failure)."
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
        """The verdict in words: ``PASS``/``FAIL`` exactly when ``ok`` says so."""
        size = self._size()
        up, slow, shrink = self.blowing_up(), self.learning_too_slowly(), self.vanishing()
        if self.ok:
            line = f"PASS: no series grows with {size} and every layer's own update keeps up."
            if self.strict:
                line += " (strict: no series shrinks either.)"
            lines = [line]
        else:
            reasons = []
            if up:
                reasons.append(f"{len(up)} series {_verb(up, 'blow')} up with {size}")
            if slow:
                layers = "layer" if len(slow) == 1 else "layers"
                reasons.append(f"{len(slow)} {layers} {_verb(slow, 'learn')} too slowly")
            if self.strict and shrink:
                reasons.append(
                    f"{len(shrink)} series {_verb(shrink, 'shrink')} with {size} (strict)"
                )
            lines = [f"FAIL: {'; '.join(reasons)}. At fault: {_names(self.culprits())}."]
        if shrink and not self.strict:
            lines.append(
                f"warning: {len(shrink)} series {_verb(shrink, 'shrink')} with {size} (learning "
                f"too slowly at large {size}?; strict fails on them): "
                f"{_names(self.culprits(VANISHES))}."
            )
        return "\n".join(lines)

    def _size(self) -> str:
        return "depth" if self.vary == "depth" else "width"

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | None = None, **kwargs: Any) -> Any:
        """A figure: one panel per step, RMS against size, faulty series highlighted."""
        from .plot import plot_report

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
            "strict": self.strict,
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
            strict=bool(data.get("strict", False)),
        )

    @classmethod
    def from_json(cls, text_or_path: str) -> CoordReport:
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as fh:
                text = fh.read()
        return cls.from_dict(json.loads(text))


_MARK = {BLOWS_UP: "!", VANISHES: "v", EXPECTED: "e", ZERO: "0", NOISY: "?"}
"""Per-step marks; a series that learns too slowly is mostly ``v``."""
MAX_NAMED = 8


def _names(rows: list[CoordRow]) -> str:
    named = "; ".join(r.describe() for r in rows[:MAX_NAMED])
    return named + (f"; and {len(rows) - MAX_NAMED} more" if len(rows) > MAX_NAMED else "")


def lazy_slope(row: CoordRow) -> float | None:
    """The mean slope of a series over its steps (exactly-zero steps left out): what the
    ``lazy`` threshold is compared with for a layer's own update."""
    slopes = [
        s for s, st in zip(row.slopes, row.statuses, strict=True) if s is not None and st != ZERO
    ]
    return sum(slopes) / len(slopes) if slopes else None


def _verb(rows: list[CoordRow], verb: str) -> str:
    return verb + "s" if len(rows) == 1 else verb


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


@dataclass(frozen=True)
class SeriesFit:
    """The slope of one series at one step, its standard error, or a status instead."""

    slope: float | None
    error: float | None = None
    """Standard error of ``slope`` from the scatter of the points around each seed's line
    (pooled over seeds); None when no point is left over to estimate it (two sizes)."""
    status: str | None = None


def fit_series(sizes: Sequence[int], per_size_seed: Sequence[Sequence[float | None]]) -> SeriesFit:
    """Mean over seeds of the per-seed slope, with its standard error.

    The error comes from how far the points lie from each seed's power law (the residuals of
    the per-seed fits, pooled): a series whose RMS jumps up and down between widths gives a
    slope that means little, however large it is. Status ``ZERO`` when every value is exactly
    zero, ``BLOWS_UP`` (slope inf) when a value overflowed, ``ABSENT`` when not recorded.
    """
    n_seeds = max((len(v) for v in per_size_seed), default=0)
    slopes: list[float] = []
    spreads: list[float] = []  # Σ (x − x̄)² of each seed's fit
    residual = 0.0
    dof = 0
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
            return SeriesFit(math.inf, None, BLOWS_UP)
        if any(y != 0.0 for y in ys):
            all_zero = False
        positive = [(math.log(s), math.log(float(v))) for s, v in points if v is not None and v > 0]
        if len(positive) >= 2:
            mx = sum(x for x, _ in positive) / len(positive)
            my = sum(y for _, y in positive) / len(positive)
            sxx = sum((x - mx) ** 2 for x, _ in positive)
            slope = sum((x - mx) * (y - my) for x, y in positive) / sxx
            residual += sum((y - my - slope * (x - mx)) ** 2 for x, y in positive)
            dof += len(positive) - 2
            slopes.append(slope)
            spreads.append(sxx)
    if not recorded:
        return SeriesFit(None, None, ABSENT)
    if all_zero:
        return SeriesFit(None, None, ZERO)
    if not slopes:
        return SeriesFit(None, None, ABSENT)
    error = None
    if dof > 0:
        variance = residual / dof
        error = math.sqrt(sum(variance / sxx for sxx in spreads)) / len(slopes)
    return SeriesFit(sum(slopes) / len(slopes), error)


def series_slope(
    sizes: Sequence[int], per_size_seed: Sequence[Sequence[float | None]]
) -> tuple[float | None, str | None]:
    """Mean over seeds of the per-seed slope; a status when no slope applies.

    Returns ``(slope, None)``, ``(None, ZERO)`` when every value is exactly zero,
    ``(inf, BLOWS_UP)`` when a value overflowed, ``(None, ABSENT)`` when not recorded.
    """
    fit = fit_series(sizes, per_size_seed)
    return fit.slope, fit.status


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
    strict: bool = False,
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
        strict=strict,
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
    errors: list[float | None] = []
    statuses: list[str] = []
    notes: list[str] = []
    for t, per_size in enumerate(series):
        fit = fit_series(sizes, per_size)
        slope, status = fit.slope, fit.status
        if status is None and slope is not None:
            status, note = _classify(module, quantity, t, slope, fit.error, th, context, roles)
            if note and note not in notes:
                notes.append(note)
        elif status == ZERO and ZERO_INIT not in notes:
            notes.append(ZERO_INIT)
        slopes.append(None if slope is None or math.isinf(slope) else slope)
        errors.append(fit.error)
        statuses.append(status or ABSENT)
    row = CoordRow(module, quantity, slopes, statuses, STABLE, notes, roles, errors)
    mean = lazy_slope(row)
    if BLOWS_UP in statuses:
        row.verdict = BLOWS_UP
    elif quantity in LAZY_JUDGED and mean is not None and mean < th.lazy:
        row.verdict = LAZY  # shrinks like 1/width over the steps, unlike µP's own shrinkages
    elif VANISHES in statuses:
        row.verdict = VANISHES
    return row


def _classify(
    module: str,
    quantity: str,
    t: int,
    slope: float,
    error: float | None,
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
        if error is not None and deviation <= th.significance * error:
            return NOISY, None  # past the threshold, but within the scatter of its own points
        return BLOWS_UP, None
    if deviation < th.vanish:
        return VANISHES, None
    return (EXPECTED if note else STABLE), note
