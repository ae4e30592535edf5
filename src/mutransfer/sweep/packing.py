"""Which trials a stacking worker claims together (``sweep.stack``).

A pack is trials of one width whose training configs differ only in per-run hyperparameters
(``training.stacked.pack_key``: LR, init scale, multipliers, weight decay...) and that are
small enough to gain from stacking (``training.stacked.worth_stacking``). How many:

* at most what fits the memory budget (``training.stacked.pack_size``, divided by the seeds:
  a trial is one run per seed);
* at most the worker's *fair share* of the claimable trials (waiting grid points and retries,
  plus a random/TPE sweep's unspent budget), divided by the number of workers, so that on a
  small grid two workers both get work instead of the first taking everything. The number of
  workers is the larger of those this command started (``--workers``) and those seen running
  trials in the storage (workers on other machines count once they hold a trial).

The trials are claimed one by one, each atomically (``trials.claim``): two workers choosing
at once never share a trial; one that loses a race trains a smaller pack.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .config import SweepSpec
from .liveness import Owner
from .objective import TrainerObjective
from .trials import ATTR_WORKER, claim, counts_toward_budget, point_of


def fair_share(claimable: int, workers: int) -> int:
    """Trials one of ``workers`` workers may take out of ``claimable`` (at least 1)."""
    return max(1, math.ceil(claimable / max(1, workers)))


def workers_seen(trials: Iterable[FrozenTrial], here: Owner) -> int:
    """Distinct workers holding running trials, this one included."""
    owners = {(here.host, here.pid)}
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            owner = Owner.from_attr(trial.user_attrs.get(ATTR_WORKER))
            if owner is not None:
                owners.add((owner.host, owner.pid))
    return len(owners)


class Packer:
    """Chooses and claims the trials of one pack for a worker."""

    def __init__(
        self, spec: SweepSpec, objective: TrainerObjective, *, workers: int, here: Owner
    ) -> None:
        self.spec = spec
        self.objective = objective
        self.workers = workers
        self.here = here
        self.memory_budget = int(spec.stack_memory_mb * 2**20)

    def share(self, trials: dict[int, list[FrozenTrial]]) -> int:
        """This worker's fair share of what is left to claim over every width."""
        everything = [t for found in trials.values() for t in found]
        claimable = sum(t.state == TrialState.WAITING for t in everything)
        if self.spec.sampler != "grid":
            budget = self.spec.points_per_width
            for found in trials.values():
                claimable += max(0, budget - sum(counts_toward_budget(t) for t in found))
        workers = max(self.workers, workers_seen(everything, self.here))
        return fair_share(claimable, workers)

    def claim(
        self, study: optuna.Study, width: int, trials: list[FrozenTrial], limit: int
    ) -> list[optuna.Trial]:
        """Claim up to ``limit`` trials of ``width`` that train together; ``[]`` when the next
        trial is better trained alone (or nothing here would form a pack of two runs)."""
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if waiting:
            return self._claim_waiting(study, width, waiting, limit)
        if self.spec.sampler != "grid":
            return self._ask(study, width, trials, limit)
        return []

    def _claim_waiting(
        self, study: optuna.Study, width: int, waiting: list[FrozenTrial], limit: int
    ) -> list[optuna.Trial]:
        """The next waiting trial and those queued after it that share its pack key."""
        first = point_of(waiting[0])
        key = self.objective.stack_key(first, width)
        if key is None:
            return []
        limit = min(limit, self._capacity(first, width))
        if limit * len(self.spec.seeds) < 2:
            return []
        claimed: list[optuna.Trial] = []
        for candidate in waiting:  # in queue order; one another worker took is skipped
            if len(claimed) == limit:
                break
            if self._same_pack(candidate, width, key):
                trial = claim(study, candidate)
                if trial is not None:
                    claimed.append(trial)
        return claimed

    def _same_pack(self, trial: FrozenTrial, width: int, key: tuple[Any, ...]) -> bool:
        from ..training.stacked import pack_key

        # Same pack key as a trial worth stacking: same shapes, so worth stacking too.
        return bool(pack_key(self.objective.config(point_of(trial), width, 0)) == key)

    def _ask(
        self, study: optuna.Study, width: int, trials: list[FrozenTrial], limit: int
    ) -> list[optuna.Trial]:
        """Random/TPE: ask the sampler for several new trials at once — only when every
        searched hyperparameter is a per-run one, so that whatever it draws packs together."""
        from ..training.stacked import PER_RUN_FIELDS

        if not set(self.spec.space.names) <= PER_RUN_FIELDS:
            return []
        sample = self.spec.space.grid()[0]  # any point: the pack key ignores per-run fields
        if self.objective.stack_key(sample, width) is None:
            return []
        left = self.spec.points_per_width - sum(counts_toward_budget(t) for t in trials)
        count = min(limit, left, self._capacity(sample, width))
        if count * len(self.spec.seeds) < 2:
            return []
        with warnings.catch_warnings():
            # We drive heartbeats ourselves (ask/tell instead of Study.optimize).
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return [study.ask() for _ in range(count)]

    def _capacity(self, params: dict[str, Any], width: int) -> int:
        return self.objective.trials_per_pack(
            params, width, len(self.spec.seeds), self.memory_budget
        )
