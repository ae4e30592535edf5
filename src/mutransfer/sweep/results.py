"""A sweep's results read back from storage: trials per width, the best point per width.

This is the one reader behind ``mutransfer report``, ``mutransfer transfer`` and the Python API,
so all three agree on what "best" means: the lowest mean loss among *completed* trials (a pruned
trial stopped early and a diverged one has no loss).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import SweepSpec
from .errors import SweepError
from .formatting import format_value
from .storage import find_sweep_studies, open_storage, redact
from .trials import (
    ATTR_FAIL_KIND,
    ATTR_SPEC,
    ATTR_STAGE,
    DIVERGED,
    RETRIED_KINDS,
    fail_reason,
    point_of,
)

if TYPE_CHECKING:
    import optuna

    from .report import Report
    from .stages import Stages
    from .transfer import Transfer


@dataclass(frozen=True)
class TrialRecord:
    """One trial, flattened: what the report and transfer need."""

    width: int
    number: int
    state: str
    """``complete``, ``pruned``, ``diverged``, ``lost`` (worker killed or run interrupted; the
    point was queued again), ``failed`` (the objective raised), ``running`` or ``waiting``."""
    value: float | None
    params: dict[str, Any]
    reason: str = ""
    seconds: float | None = None
    stage: str | None = None
    """Independent search: the stage that queued the trial (``"1:lr"``, ``"2:init_std"``,
    ``"3:combined"``); ``None`` for grid, random and TPE sweeps."""


@dataclass
class SweepResults:
    """Every trial of a sweep, by width."""

    spec: SweepSpec
    storage: str
    trials: dict[int, list[TrialRecord]] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, storage: str) -> SweepResults:
        """Read the sweep ``name`` from the storage URL (or journal path) ``storage``."""
        import optuna

        studies = find_sweep_studies(storage, name)
        backend = open_storage(storage)
        trials: dict[int, list[TrialRecord]] = {}
        spec_data: dict[str, Any] | None = None
        for width, sname in studies.items():
            study = optuna.load_study(study_name=sname, storage=backend)
            spec_data = study.user_attrs.get(ATTR_SPEC) or spec_data
            trials[width] = [record(width, t) for t in study.get_trials(deepcopy=False)]
        if spec_data is None:
            raise SweepError(f"sweep {name!r} in {redact(storage)!r} has no stored config")
        spec = SweepSpec.from_dict(spec_data)
        return cls(spec=spec, storage=storage, trials=trials)

    @property
    def widths(self) -> list[int]:
        return sorted(self.trials)

    def completed(self, width: int) -> list[TrialRecord]:
        return [t for t in self.trials.get(width, []) if t.state == "complete"]

    def best(self, width: int) -> TrialRecord | None:
        done = [t for t in self.completed(width) if t.value is not None]
        return min(done, key=lambda t: (t.value, t.number)) if done else None

    def stages(self, width: int) -> Stages:
        """Independent search: where the search at ``width`` stands, what each stage chose."""
        from .stages import outcome_of_record, plan

        return plan(self.spec.space, (outcome_of_record(t) for t in self.trials.get(width, [])))

    def counts(self, width: int) -> Counter[str]:
        return Counter(t.state for t in self.trials.get(width, []))

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.spec.space.names

    def rows(self) -> list[dict[str, Any]]:
        """One summary row per width: counts, best loss and the best point."""
        rows = []
        for width in self.widths:
            counts = self.counts(width)
            best = self.best(width)
            row: dict[str, Any] = {
                "width": width,
                "complete": counts["complete"],
                "pruned": counts["pruned"],
                "diverged": counts["diverged"],
                "lost": counts["lost"],
                "failed": counts["failed"],
                "pending": counts["running"] + counts["waiting"],
                "best loss": None if best is None else best.value,
                "trial": None if best is None else best.number,
            }
            if self.spec.strategy == "independent":
                row["stage"] = None if best is None else best.stage
            for name in self.param_names:
                row[name] = None if best is None else best.params.get(name)
            rows.append(row)
        return rows

    def table(self, markdown: bool = False) -> str:
        """The per-width summary as an aligned text table, or as Markdown."""
        rows = self.rows()
        if not rows:
            return "(no trials)"
        headers = list(rows[0])
        cells = [[_cell(h, row[h]) for h in headers] for row in rows]
        if markdown:
            lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(c) + " |" for c in cells]
            return "\n".join(lines)
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join(lines)

    def transfer(self, to_width: int, from_width: int | None = None, **beyond: Any) -> Transfer:
        """The best point (at ``from_width``, default the widest finished) at ``to_width``;
        ``beyond``: ``to_depth``, ``to_batch``, ``to_steps``, ``batch_rule``, ``steps_rule``."""
        from .transfer import transfer

        return transfer(self, to_width, from_width, **beyond)

    def report(self, out_dir: str | Path) -> Report:
        """Write the figures and report.md to ``out_dir``."""
        from .report import make_report

        return make_report(self, out_dir)

    def failures(self) -> list[TrialRecord]:
        bad = ("diverged", "lost", "failed")
        return [t for w in self.widths for t in self.trials[w] if t.state in bad]


def _cell(header: str, value: Any) -> str:
    if value is None:
        return "–"
    if header == "best loss" and isinstance(value, float):
        return f"{value:.4f}"
    return format_value(value)


def record(width: int, trial: optuna.trial.FrozenTrial) -> TrialRecord:
    from optuna.trial import TrialState

    state = {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }.get(trial.state)
    if state is None:
        kind = trial.user_attrs.get(ATTR_FAIL_KIND)
        # No kind: failed by Optuna's heartbeat check (databases), i.e. lost.
        lost = kind is None or kind in RETRIED_KINDS
        state = "diverged" if kind == DIVERGED else "lost" if lost else "failed"
    seconds = trial.user_attrs.get("seconds")
    return TrialRecord(
        width=width,
        number=trial.number,
        state=state,
        value=trial.value if trial.state == TrialState.COMPLETE else None,
        params=point_of(trial),
        reason=fail_reason(trial) if state in ("diverged", "lost", "failed") else "",
        seconds=float(seconds) if isinstance(seconds, int | float) else None,
        stage=stage if isinstance(stage := trial.user_attrs.get(ATTR_STAGE), str) else None,
    )
