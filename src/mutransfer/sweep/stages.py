"""The independent search of u-µP: one 1-D grid per hyperparameter instead of their product.

Under u-µP (Blake et al. 2024) the hyperparameters barely interact: the best output multiplier
hardly depends on the init scale, and none of them moves the best learning rate much. Then the
optimum can be found one dimension at a time, which costs the *sum* of the 1-D grids instead of
their product (7 LRs × 5 values × 5 values = 175 grid trials; 7 + 4 + 4 + 1 = 16 here):

1. **stage 1**: the first dimension (the learning rate) over its grid, every other
   hyperparameter at its ``default``;
2. **stage 2**: each other dimension over its grid, one at a time, at the best stage-1 LR and
   the others' defaults. The point where the dimension sits at its default is the stage-1 best,
   already run, so it is reused rather than run again;
3. **combined**: one trial at the best LR with every dimension at its own best value — the check
   that the optima do combine. It is skipped when that point has already run.

Under a parametrization where the hyperparameters interact (SP, or µP's multipliers at other
scales) the combination can be worse than a stage's best point; the report says so, and
"best" stays the lowest loss measured.

This module is the planner only: from the trials a width's study holds, it derives which stage
the search is in, what each finished stage chose, and which points the current stage still
needs. It looks trials up by their *point*, not by a stored label, so every worker (and every
restart) derives the same plan from the same storage; a stage's points are enqueued once the
previous stage is complete (``enqueue_stage``, called under the sweep's set-up lock). Each
enqueued trial carries its stage as the user attribute ``stage`` (``"1:lr"``,
``"2:output_multiplier"``, ``"3:combined"``) for the dashboard and the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .space import Choice, Dim, Space
from .trials import ATTR_FAIL_KIND, ATTR_STAGE, ATTR_WIDTH, DIVERGED, point_of

if TYPE_CHECKING:
    import optuna

    from .config import SweepSpec
    from .results import TrialRecord

COMBINED = "combined"
DONE = 4
"""``Stages.stage`` once the search is complete."""

Point = dict[str, Any]
Key = tuple[tuple[str, Any], ...]

_FINISHED = ("complete", "pruned", "diverged")


def key(point: Point) -> Key:
    return tuple(sorted(point.items()))


def label(stage: int, name: str) -> str:
    """The ``stage`` user attribute: ``"1:lr"``, ``"2:init_std"``, ``"3:combined"``."""
    return f"{stage}:{name}"


def parse_label(value: Any) -> tuple[int, str] | None:
    if not isinstance(value, str) or ":" not in value:
        return None
    number, _, name = value.partition(":")
    return (int(number), name) if number.isdigit() else None


@dataclass(frozen=True)
class Outcome:
    """One trial as the planner sees it."""

    number: int
    point: Point
    status: str
    """``complete``, ``pruned``, ``diverged`` (finished); ``pending`` (waiting or running);
    ``failed`` (lost, interrupted or errored: the point still needs a run)."""
    value: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in _FINISHED


def outcome_of_trial(trial: optuna.trial.FrozenTrial) -> Outcome:
    from optuna.trial import TrialState

    status = {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.WAITING: "pending",
        TrialState.RUNNING: "pending",
    }.get(trial.state)
    if status is None:
        status = "diverged" if trial.user_attrs.get(ATTR_FAIL_KIND) == DIVERGED else "failed"
    value = trial.value if trial.state == TrialState.COMPLETE else None
    return Outcome(trial.number, point_of(trial), status, value)


def outcome_of_record(record: TrialRecord) -> Outcome:
    status = {"running": "pending", "waiting": "pending", "lost": "failed"}.get(
        record.state, record.state
    )
    return Outcome(record.number, dict(record.params), status, record.value)


@dataclass(frozen=True)
class Pick:
    """What a finished stage chose for one hyperparameter: the value of its best trial."""

    name: str
    value: Choice
    loss: float
    trial: int


@dataclass
class Stages:
    """The independent search of one width, as far as its trials go."""

    lead: str
    """The dimension searched first (the learning rate)."""
    stage: int
    """The stage in progress: 1, 2, 3 (the combination), or ``DONE``."""
    curves: dict[str, list[tuple[Choice, Outcome | None]]] = field(default_factory=dict)
    """Per dimension, its 1-D sweep so far: (value, the trial at that value or ``None``)."""
    picks: dict[str, Pick] = field(default_factory=dict)
    """The chosen value of each dimension whose stage is complete."""
    combined: Point | None = None
    """The combination of the picks (once stage 2 is complete)."""
    combined_outcome: Outcome | None = None
    todo: list[tuple[str, Point, str]] = field(default_factory=list)
    """The current stage's points without a finished trial: (stage label, point, status), status
    ``missing`` (never tried), ``failed`` (tried, lost or errored, no retry waiting) or
    ``pending`` (waiting or running)."""
    left: int = 0
    """Trials still to run for this width, counting later stages in full (an upper bound)."""
    blocked: str | None = None
    """Why the search cannot go on (no stage-1 trial completed), else ``None``."""

    @property
    def done(self) -> bool:
        return self.stage == DONE

    def to_enqueue(self, rerun: bool) -> list[tuple[str, Point]]:
        """Points to enqueue now: never-tried ones; with ``rerun`` (a new command), also the
        failed ones whose retries ran out or whose objective raised — as a grid resumes."""
        wanted = ("missing", "failed") if rerun else ("missing",)
        return [(stage, point) for stage, point, status in self.todo if status in wanted]


def stage_budget(space: Space) -> int:
    """At most how many trials one width's independent search runs."""
    lead, others = space.dims[0], space.dims[1:]
    total = len(lead.grid()) + sum(len(_off_default(d)) for d in others)
    return total + (1 if others else 0)


def _off_default(dim: Dim) -> list[Choice]:
    return [v for v in dim.grid() if v != dim.default]


def _with_default(dim: Dim) -> list[Choice]:
    """The dimension's grid with its default among it, in the grid's order."""
    values = list(dim.grid())
    if dim.default is None or dim.default in values:
        return values
    if dim.values is None:
        return sorted([*values, dim.default])
    return [*values, dim.default]


def plan(space: Space, outcomes: Iterable[Outcome]) -> Stages:
    """Where one width's independent search stands, from its trials (see the module doc)."""
    by_point: dict[Key, list[Outcome]] = {}
    for outcome in outcomes:
        by_point.setdefault(key(outcome.point), []).append(outcome)

    def result(point: Point) -> Outcome | None:
        """The trial that settles a point: its first completed run, else its first finished
        one; a pending or failed trial if there is nothing better; ``None`` if none."""
        found = sorted(by_point.get(key(point), []), key=lambda o: o.number)
        for wanted in (("complete",), _FINISHED, ("pending",), ("failed",)):
            for o in found:
                if o.status in wanted:
                    return o
        return None

    def status(found: Outcome | None) -> str:
        return "missing" if found is None else found.status

    lead, others = space.dims[0], space.dims[1:]
    defaults = {d.name: d.default for d in others}
    stages = Stages(lead=lead.name, stage=1)
    remaining_later = sum(len(_off_default(d)) for d in others) + (1 if others else 0)

    # stage 1: the LR alone, the others at their defaults
    curve = [(v, result({lead.name: v, **defaults})) for v in lead.grid()]
    stages.curves[lead.name] = curve
    open_points = [(v, o) for v, o in curve if o is None or not o.finished]
    if open_points:
        stages.todo = [
            (label(1, lead.name), {lead.name: v, **defaults}, status(o)) for v, o in open_points
        ]
        stages.left = len(open_points) + remaining_later
        return stages
    best = _best(curve)
    if best is None:
        stages.blocked = (
            f"no trial of stage 1 completed (all {len(curve)} diverged or were pruned); widen "
            f"the range of {lead.name} towards smaller values"
        )
        return stages
    stages.picks[lead.name] = Pick(lead.name, best[0], _loss(best[1]), best[1].number)
    base = {lead.name: best[0], **defaults}

    # stage 2: each other dimension alone, at the best LR
    stages.stage = 2
    for dim in others:
        stages.curves[dim.name] = [(v, result({**base, dim.name: v})) for v in _with_default(dim)]
    todo = [
        (label(2, dim.name), {**base, dim.name: v}, status(o))
        for dim in others
        for v, o in stages.curves[dim.name]
        if o is None or not o.finished
    ]
    if todo:
        stages.todo = todo
        stages.left = len(todo) + 1
        return stages
    for dim in others:
        pick = _best(stages.curves[dim.name])
        assert pick is not None  # the stage-1 best is on every curve
        stages.picks[dim.name] = Pick(dim.name, pick[0], _loss(pick[1]), pick[1].number)

    # stage 3: the combination of the per-dimension optima
    stages.stage = 3
    stages.combined = {name: p.value for name, p in stages.picks.items()}
    found = result(stages.combined)
    stages.combined_outcome = found
    if found is None or not found.finished:
        stages.todo = [(label(3, COMBINED), dict(stages.combined), status(found))]
        stages.left = 1
        return stages
    stages.stage = DONE
    return stages


def _best(curve: list[tuple[Choice, Outcome | None]]) -> tuple[Choice, Outcome] | None:
    """The completed point of lowest loss (the earlier trial on a tie), or ``None``."""
    done = [(v, o) for v, o in curve if o is not None and o.status == "complete"]
    if not done:
        return None
    return min(done, key=lambda vo: (_loss(vo[1]), vo[1].number))


def _loss(outcome: Outcome) -> float:
    return math.inf if outcome.value is None else float(outcome.value)


# ------------------------------------------------------------------------- storage side
def study_stages(study: optuna.Study, spec: SweepSpec) -> Stages:
    return plan(spec.space, (outcome_of_trial(t) for t in study.get_trials(deepcopy=False)))


def enqueue_stage(
    study: optuna.Study, spec: SweepSpec, width: int, *, rerun: bool
) -> list[tuple[str, Point]]:
    """Enqueue what the current stage still needs; returns what was enqueued.

    Call it under the sweep's set-up lock (``storage.setup_lock``): it reads the trials and
    enqueues in one step, and two workers doing that at once would enqueue a stage twice.
    """
    stages = study_stages(study, spec)
    added = stages.to_enqueue(rerun)
    for stage, point in added:
        study.enqueue_trial(point, user_attrs={ATTR_WIDTH: width, ATTR_STAGE: stage})
    return added
