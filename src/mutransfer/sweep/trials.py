"""Trial bookkeeping on top of Optuna: which grid point a trial is, why it failed, retries.

Optuna records *that* a trial failed; a sweep also needs *why*, because the reason decides what
happens next:

* ``diverged`` — the loss blew up. A result (this LR is too high), kept, never retried.
* ``lost`` — its worker was killed or stopped beating. Queued again at the same point.
* ``interrupted`` — the user pressed Ctrl-C. Queued again.
* ``error`` — the objective raised. Not retried automatically (the same bug would fail again),
  but re-running the sweep after the fix runs that point again.

The reason is kept in the trial's user attributes (``fail_kind``, ``fail_reason``), where the
dashboard and ``mutransfer report`` show it.

The few Optuna internals used (a trial's storage id, the storage behind a study) are reached
only through this module, so an Optuna upgrade has one place to look.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

ATTR_SPEC = "mutransfer.sweep"
ATTR_WIDTH = "width"
ATTR_WORKER = "worker"
ATTR_HEARTBEAT = "heartbeat"
ATTR_FAIL_KIND = "fail_kind"
ATTR_FAIL_REASON = "fail_reason"
ATTR_STAGE = "stage"
"""Independent search only: the stage a trial belongs to, e.g. ``"2:output_multiplier"``."""

DIVERGED = "diverged"
LOST = "lost"
INTERRUPTED = "interrupted"
ERROR = "error"
RETRIED_KINDS = (LOST, INTERRUPTED)

_KEEP_ON_RETRY = (ATTR_WIDTH, ATTR_STAGE)


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended, before it is told: what the worker records, whichever way the trial
    was trained (alone, or in a stacked pack), so that both paths record it alike."""

    state: Literal["complete", "pruned", "diverged"]
    losses: tuple[float, ...] = ()
    """``complete``: the loss of each seed, in the order of ``sweep.seeds``."""
    reason: str = ""
    """``pruned`` / ``diverged``: why (the pruner's step and loss, the divergence)."""
    seconds: float = 0.0
    """``complete``: what the trial cost (alone: its wall time; in a pack: its share)."""


def storage_of(study: optuna.Study) -> BaseStorage:
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    return trial._trial_id


def native_heartbeat(study: optuna.Study) -> bool:
    """Does the study's storage run Optuna's own heartbeats (databases with an interval set)?"""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage_of(study))


def record_heartbeat(trial: optuna.Trial) -> None:
    storage_of(trial.study).record_heartbeat(trial_id(trial))  # type: ignore[attr-defined]


def point_of(trial: FrozenTrial) -> dict[str, Any]:
    """The hyperparameters a trial runs: its sampled params, or the point it was enqueued with."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def point_taken(trial: FrozenTrial) -> bool:
    """Does this trial cover its point (so a resumed grid must not enqueue the point again)?

    Finished, pruned, running and waiting trials do; so does a divergence (a result). A trial
    that was lost or interrupted does not by itself (its retry, if any, is a waiting trial), nor
    does one that errored: re-running after a fix runs the point again.
    """
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get(ATTR_FAIL_KIND) == DIVERGED
    return True


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Random/TPE sweeps stop at ``trials`` per width; lost and crashed trials do not count."""
    return point_taken(trial)


def fail_reason(trial: FrozenTrial) -> str:
    """A readable reason for a failed trial."""
    reason = trial.user_attrs.get(ATTR_FAIL_REASON)
    if reason:
        return str(reason)
    return "worker lost (no heartbeat)" if trial.state == TrialState.FAIL else ""


class RetryLostTrial(RetryHeartbeatStaleTrialCallback):
    """Queue a lost trial again at the same point, without the dead run's attributes.

    Optuna's callback copies every user attribute into the retry; a retry that later succeeds
    must not carry the dead run's failure reason, worker or heartbeat, so those are dropped.
    It is the storage's heartbeat callback for databases, and used directly for journal files.
    """

    def __init__(self, max_retry: int | None = 3) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = copy.deepcopy(trial)
        clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in _KEEP_ON_RETRY}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__call__(study, clean)


def fail_and_retry(
    study: optuna.Study,
    trial: FrozenTrial | optuna.Trial,
    kind: str,
    reason: str,
    max_retry: int | None,
) -> bool:
    """Mark a running trial failed with its reason and (for lost/interrupted) queue a retry.

    Safe when several workers spot the same dead trial: only the one whose FAIL lands first
    queues the retry; the others get ``False``.
    """
    storage = storage_of(study)
    tid = trial_id(trial)
    try:
        storage.set_trial_user_attr(tid, ATTR_FAIL_KIND, kind)
        storage.set_trial_user_attr(tid, ATTR_FAIL_REASON, reason)
        if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    if kind in RETRIED_KINDS:
        RetryLostTrial(max_retry)(study, storage.get_trial(tid))
    return True


def claim(study: optuna.Study, waiting: FrozenTrial) -> optuna.Trial | None:
    """Take one waiting trial for this worker, atomically: ``None`` if another worker took it
    first (the storage moves it from WAITING to RUNNING once)."""
    try:
        if storage_of(study).set_trial_state_values(trial_id(waiting), state=TrialState.RUNNING):
            return optuna.Trial(study, trial_id(waiting))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    return None


def pop_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Claim one waiting (enqueued or retried) trial, atomically; ``None`` if there is none.

    This is what ``Study.ask`` does first; it is separate here because for a grid an empty queue
    means *done*, whereas ``ask`` would then sample a new, extra point.
    """
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = claim(study, frozen)
        if trial is not None:
            return trial
    return None
