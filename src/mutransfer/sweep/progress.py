"""A progress bar for sweeps: trials finished out of the total, with an ETA (tqdm).

The counts come from the storage, not from this machine's workers: with workers on several
machines (or a second command on this one) the bar shows the whole sweep. They are read every
couple of seconds from study objects kept open, so a journal file is read incrementally rather
than replayed at every refresh.

The bar is drawn on stderr, only when stderr is a terminal (or when asked), and every log line is
printed *above* it (``tqdm.write``): a bar redrawn while worker processes print to the same
terminal would be torn apart, so worker processes send their lines to the parent (see
``runner.run_processes``), which prints them here.

The total of an independent search is an upper bound until its last stage is known (a combined
point that has already run is not run again), so the bar may end before reaching it; the ETA
is tqdm's smoothed rate of finished trials over the remaining ones.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from .config import SweepSpec

Counter = Callable[[], tuple[int, int]]


def finished(trial: optuna.trial.FrozenTrial) -> bool:
    """Does this trial count as done for the progress bar (a result: loss, pruned, diverged)?"""
    from .trials import point_taken

    return trial.state.is_finished() and point_taken(trial)


def left_in(study: optuna.Study, spec: SweepSpec) -> int:
    """Trials still to run in one width's study: waiting, running, grid points not yet
    covered, unspent random/TPE budget, or what the independent search still needs."""
    from optuna.trial import TrialState

    from .trials import point_of, point_taken

    if spec.strategy == "independent":
        from .stages import study_stages

        return study_stages(study, spec).left
    trials = study.get_trials(deepcopy=False)
    left = sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)
    taken = [point_of(t) for t in trials if point_taken(t)]
    if spec.sampler == "grid":
        left += sum(point not in taken for point in spec.space.grid())
    else:
        left += max(0, spec.points_per_width - len(taken))
    return left


def storage_counter(studies: Callable[[], dict[int, optuna.Study]], spec: SweepSpec) -> Counter:
    """``() -> (finished, total)`` over the sweep's studies, opened once on first use."""
    opened: dict[int, optuna.Study] = {}

    def count() -> tuple[int, int]:
        if not opened:
            opened.update(studies())
        done = left = 0
        for study in opened.values():
            done += sum(finished(t) for t in study.get_trials(deepcopy=False))
            left += left_in(study, spec)
        return done, done + left

    return count


class Progress:
    """A tqdm bar fed from the storage; ``write`` prints a line above it.

    ``enabled=None`` draws the bar when stderr is a terminal and tqdm is installed; ``False``
    never draws it (``write`` then just prints).
    """

    def __init__(
        self, count: Counter, *, enabled: bool | None = None, interval: float = 1.0
    ) -> None:
        self.count = count
        self.interval = interval
        self._bar: Any = None
        self._last = -float("inf")
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # the `sweep` extra is not installed: no bar
                return
            done, total = count()
            self._bar = tqdm(
                total=total,
                initial=done,
                unit="trial",
                desc="trials",
                dynamic_ncols=True,
                smoothing=0.1,
            )
            self._last = time.monotonic()

    @property
    def active(self) -> bool:
        return self._bar is not None

    def write(self, message: str) -> None:
        if self._bar is None:
            print(message, flush=True)
        else:
            self._bar.write(message)

    def refresh(self, force: bool = False) -> None:
        """Re-read the counts (at most every ``interval`` seconds unless ``force``)."""
        if self._bar is None or (not force and time.monotonic() - self._last < self.interval):
            return
        self._last = time.monotonic()
        try:
            done, total = self.count()
        except Exception:  # a storage hiccup must not stop the sweep; try again later
            return
        self._bar.total = max(total, done)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)  # feeds tqdm's rate estimate (the ETA)
        else:
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self.refresh(force=True)
            self._bar.close()
            self._bar = None
