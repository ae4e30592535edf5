"""Several claimed trials of one width, trained as one stacked model (``sweep.stack``).

A worker that stacks claims up to K trials whose configs differ only in per-run
hyperparameters (``sweep.packing``) and hands them here. One
``training.stacked.train_stacked`` call trains every (trial, seed) run, and each trial is told
exactly what the one-trial path (``runner.Worker._run_trial``, the objective called once per
seed) would have told it:

* a run the run store already holds is reused, not trained (``reused_run``), as alone;
* the first seed's smoothed loss is reported to the pruner every ``report_every`` steps
  (``objective.LossReports``, the same code); a trial the pruner stops leaves the pack;
* a trial's outcome is decided seed by seed, in the order the one-trial path runs them: the
  first seed that diverges — once every earlier seed completed — makes it diverged with that
  seed's reason; a pruned first seed makes it pruned; every seed complete gives the mean loss.
  Seeds the one-trial path would not have reached are stopped, and not saved;
* each whole run (complete or diverged) is saved to the run store as it leaves the pack, and
  each trial is told the moment its outcome is known, while the others train on.

The worker records the outcome (``runner.Worker._conclude``, shared with the one-trial path),
so a stacked trial's state, value, attributes, failure reason and curve are those it would have
had alone, up to float32 rounding in the losses (docs/stacked.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna

from .objective import LossReports, TrainerObjective, TrialHandle
from .trials import TrialOutcome

if TYPE_CHECKING:
    from ..training.proxy import TrainResult

Tell = Callable[[optuna.Trial, dict[str, Any], TrialOutcome], None]
"""``tell(trial, params, outcome)``: record a trial's outcome (called once per trial)."""


@dataclass
class _SeedRun:
    """One seed of one trial: its result once known (``TrainResult.to_dict()``)."""

    config: Any
    result: dict[str, Any] | None = None
    reused: bool = False
    stop: bool = False
    """The trial's outcome is known without this run: stop it at its next step."""
    stopped: bool = False
    """Stopped on our request (pruned or no longer needed): its result is not a run."""


@dataclass
class _Member:
    """One claimed trial in the pack."""

    trial: optuna.Trial
    params: dict[str, Any]
    seeds: list[_SeedRun]
    handles: list[TrialHandle]
    reports: LossReports
    pruned: str | None = None
    outcome: TrialOutcome | None = field(default=None)


class StackedTrials:
    """Train claimed trials of one width together and tell each its own outcome."""

    def __init__(
        self,
        objective: TrainerObjective,
        width: int,
        seeds: Sequence[int],
        *,
        memory_budget: int,
    ) -> None:
        self.objective = objective
        self.width = width
        self.seeds = tuple(seeds)
        self.memory_budget = memory_budget

    def run(self, trials: Sequence[tuple[optuna.Trial, dict[str, Any]]], tell: Tell) -> int:
        """Train ``(trial, params)`` pairs; ``tell`` each outcome as soon as it is known.

        Returns the number of runs trained in the pack (runs found in the store are not).
        An exception (from training, or from ``tell``) stops the whole pack; the trials not
        told yet are the caller's to record.
        """
        members = [self._member(trial, params) for trial, params in trials]
        for member in members:
            self._settle(member, tell)  # every seed already in the store: told at once
        jobs = [
            (member, run)
            for member in members
            if member.outcome is None
            for run in member.seeds
            if run.result is None
        ]
        if not jobs:
            return 0

        def on_step(index: int, step: int, loss: float) -> bool:
            member, run = jobs[index]
            if member.outcome is not None or run.stop:
                run.stopped = True
                return True
            if run is member.seeds[0]:
                try:
                    member.reports(step, loss)
                except optuna.TrialPruned as exc:
                    member.pruned = str(exc) or "pruned"
                    run.stopped = True
                    return True
            return False

        def on_result(index: int, result: TrainResult) -> None:
            member, run = jobs[index]
            # A run we stopped (pruned) or one the one-trial path would not have reached is
            # not kept; a whole run is, as alone.
            if not run.stopped and member.outcome is None:
                run.result = result.to_dict()
                self.objective.keep(run.config, run.result)
            self._settle(member, tell)

        from ..training.stacked import train_stacked

        configs = [run.config for _, run in jobs]
        train_stacked(
            configs,
            source=self.objective.source(configs[0]),
            memory_budget=self.memory_budget,
            on_step=on_step,
            on_result=on_result,
            device=self.objective.device,
        )
        undecided = [m.trial.number for m in members if m.outcome is None]
        assert not undecided, f"trials {undecided} left the pack without an outcome"
        return len(jobs)

    def _member(self, trial: optuna.Trial, params: dict[str, Any]) -> _Member:
        handles = [
            TrialHandle(trial, width=self.width, seed=seed, seed_index=i, n_seeds=len(self.seeds))
            for i, seed in enumerate(self.seeds)
        ]
        runs = []
        for seed in self.seeds:
            config = self.objective.config(params, self.width, seed)
            found = self.objective.stored(config)
            runs.append(_SeedRun(config, found, reused=found is not None))
        reports = LossReports(handles[0], self.objective.report_every)
        return _Member(trial, dict(params), runs, handles, reports)

    def _settle(self, member: _Member, tell: Tell) -> None:
        """Decide the trial's outcome if its seeds say enough; then record it and stop the
        runs it no longer needs."""
        if member.outcome is not None:
            return
        decided = self._decide(member)
        if decided is None:
            return
        member.outcome, counted = decided
        for i in range(counted):  # the seeds the one-trial path would have run
            run = member.seeds[i]
            assert run.result is not None
            self.objective.record(member.handles[i], run.result, reused=run.reused)
        for run in member.seeds:
            if run.result is None:
                run.stop = True
        tell(member.trial, member.params, member.outcome)

    @staticmethod
    def _decide(member: _Member) -> tuple[TrialOutcome, int] | None:
        """The one-trial path's outcome, seed by seed in order, and how many seeds it ran;
        ``None`` while a seed it needs is still training."""
        losses: list[float] = []
        seconds = 0.0
        for i, run in enumerate(member.seeds):
            if i == 0 and member.pruned is not None:
                return TrialOutcome("pruned", reason=member.pruned), 0
            if run.result is None:
                return None
            if not run.reused:
                seconds += float(run.result["seconds"])
            if run.result["diverged"] or run.result["val_loss"] is None:
                reason = run.result.get("reason") or "diverged"
                return TrialOutcome("diverged", reason=reason), i + 1
            losses.append(float(run.result["val_loss"]))
        outcome = TrialOutcome("complete", losses=tuple(losses), seconds=seconds)
        return outcome, len(member.seeds)
