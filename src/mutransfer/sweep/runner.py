"""The worker loop, and a pool of worker processes on this machine.

A worker is a plain loop over Optuna's storage — no scheduler of our own: claim a waiting trial
(an enqueued grid point or a retry) or, for random/TPE, ask the sampler for a new one while the
width's budget lasts; run the objective; tell the result. Before each claim it looks for trials
whose worker died (``liveness.recover_lost``) and queues them again. When nothing is left to
claim but other workers are still running trials, it waits: one of them may die and its trial
would need a home. Every worker, on any machine, runs exactly this loop against the same storage;
``mutransfer sweep --workers N`` starts N of them here, each with one CPU thread.

Widths are served evenly (the least-advanced width first), so a sweep stopped half-way has
results at every width rather than all of the small ones.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from .config import SweepSpec
from .errors import Diverged, SweepError
from .liveness import Heartbeat, Owner, recover_lost
from .objective import TrialHandle, load_objective
from .storage import open_storage, study_name
from .trials import (
    ATTR_FAIL_KIND,
    ATTR_FAIL_REASON,
    ATTR_WIDTH,
    ATTR_WORKER,
    DIVERGED,
    ERROR,
    INTERRUPTED,
    counts_toward_budget,
    fail_and_retry,
    pop_waiting,
    storage_of,
    trial_id,
)

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


@dataclass
class WorkerStats:
    complete: int = 0
    pruned: int = 0
    diverged: int = 0
    recovered: int = 0

    @property
    def trials(self) -> int:
        return self.complete + self.pruned + self.diverged


def format_value(value: Any) -> str:
    """``2^-6`` for powers of two (how µP hyperparameters are read), else 4 significant digits."""
    if isinstance(value, bool | int) or not isinstance(value, float):
        return str(value)
    if value > 0:
        exponent = math.log2(value)
        if abs(exponent - round(exponent)) < 1e-9 and abs(exponent) >= 1:
            return f"2^{round(exponent)}"
    return f"{value:.4g}"


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in params.items())


def make_sampler(spec: SweepSpec, width: int, index: int) -> optuna.samplers.BaseSampler:
    """The sampler of one worker for one width.

    Seeds differ per worker and machine: parallel workers with one seed would draw the same
    points. A single worker with a given ``sampler_seed`` is reproducible.
    """
    key = f"{spec.sampler_seed}/{width}/{index}/{socket.gethostname() if index else ''}"
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    if spec.sampler == "tpe":
        startup = max(1, min(10, (spec.trials or 2) // 2))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    # The grid never samples (its points are enqueued); random draws log-uniformly.
    return optuna.samplers.RandomSampler(seed=seed)


class Worker:
    """One worker: claims trials from the sweep's studies until there is nothing left to do."""

    def __init__(
        self,
        spec: SweepSpec,
        objective: Callable[..., float],
        storage_url: str,
        *,
        index: int = 0,
        log: Log | None = _print,
        poll_seconds: float = 1.0,
    ) -> None:
        self.spec = spec
        self.objective = objective
        self.storage_url = storage_url
        self.index = index
        self.log = log or (lambda message: None)
        self.poll_seconds = poll_seconds
        self.here = Owner.current()
        self.stats = WorkerStats()

    # ------------------------------------------------------------------------- loop
    def run(self, max_trials: int | None = None) -> WorkerStats:
        storage = open_storage(
            self.storage_url,
            heartbeat_interval=self.spec.heartbeat_interval,
            grace_period=self.spec.grace_period,
            max_retry=self.spec.max_retry,
        )
        studies = {
            width: optuna.load_study(
                study_name=study_name(self.spec.name, width),
                storage=storage,
                sampler=make_sampler(self.spec, width, self.index),
                pruner=self.spec.pruner.build() if self.spec.pruner else optuna.pruners.NopPruner(),
            )
            for width in self.spec.widths
        }
        started = 0
        while max_trials is None or started < max_trials:
            self._recover(studies)
            claimed = self._claim(studies)
            if claimed is None:
                running = (TrialState.RUNNING,)
                if any(s.get_trials(deepcopy=False, states=running) for s in studies.values()):
                    # Others are busy; one may die, and its trial would need a new home.
                    time.sleep(self.poll_seconds)
                    continue
                break
            started += 1
            self._run_trial_safely(studies[claimed[0]], *claimed)
        return self.stats

    def _recover(self, studies: dict[int, optuna.Study]) -> None:
        for width, study in studies.items():
            for number in recover_lost(
                study,
                grace_period=self.spec.grace_period,
                max_retry=self.spec.max_retry,
                here=self.here,
            ):
                self.stats.recovered += 1
                self.log(f"[worker {self.index}] w={width} #{number}: worker lost; queued again")

    def _claim(self, studies: dict[int, optuna.Study]) -> tuple[int, optuna.Trial] | None:
        budget = self.spec.points_per_width
        progress = {}
        for width, study in studies.items():
            trials = study.get_trials(deepcopy=False)
            busy = sum(t.state != TrialState.WAITING and counts_toward_budget(t) for t in trials)
            progress[width] = (busy / max(1, budget), width)
        for width in sorted(studies, key=progress.__getitem__):
            study = studies[width]
            trial = pop_waiting(study)
            if trial is not None:
                return width, trial
            if self.spec.sampler != "grid":
                taken = sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
                if taken < budget:
                    with warnings.catch_warnings():
                        # We drive heartbeats ourselves (ask/tell instead of Study.optimize).
                        warnings.filterwarnings("ignore", message="Heartbeat of storage")
                        return width, study.ask()
        return None

    # ------------------------------------------------------------------------ trial
    def _run_trial_safely(self, study: optuna.Study, width: int, trial: optuna.Trial) -> None:
        """Run a claimed trial; on Ctrl-C/SIGTERM at *any* point before it is told, fail it
        as interrupted and queue it again, so that no claimed trial is left RUNNING."""
        try:
            self._run_trial(study, width, trial)
        except KeyboardInterrupt:
            frozen = storage_of(study).get_trial(trial_id(trial))
            if not frozen.state.is_finished():
                fail_and_retry(
                    study,
                    trial,
                    INTERRUPTED,
                    "interrupted (Ctrl-C or SIGTERM)",
                    self.spec.max_retry,
                )
            raise

    def _run_trial(self, study: optuna.Study, width: int, trial: optuna.Trial) -> None:
        start = time.perf_counter()
        trial.set_user_attr(ATTR_WORKER, self.here.to_attr())
        trial.set_user_attr(ATTR_WIDTH, width)
        params: dict[str, Any] = {}
        losses: list[float] = []
        head = f"[worker {self.index}] w={width} #{trial.number}"
        try:
            with Heartbeat(trial, self.spec.heartbeat_interval):
                params = self.spec.space.suggest(trial)
                for i, seed in enumerate(self.spec.seeds):
                    handle = TrialHandle(
                        trial, width=width, seed=seed, seed_index=i, n_seeds=len(self.spec.seeds)
                    )
                    loss = float(self.objective(dict(params), width, handle))
                    if not math.isfinite(loss):
                        where = f" (seed {seed})" if len(self.spec.seeds) > 1 else ""
                        raise Diverged(f"the objective returned {loss}{where}")
                    losses.append(loss)
        except optuna.TrialPruned as exc:
            self._tell(study, trial, TrialState.PRUNED, reason=str(exc) or "pruned")
            self.stats.pruned += 1
            self.log(f"{head} {format_params(params)} → pruned ({exc})")
            return
        except Diverged as exc:
            self._tell(study, trial, TrialState.FAIL, kind=DIVERGED, reason=str(exc))
            self.stats.diverged += 1
            self.log(f"{head} {format_params(params)} → diverged: {exc}")
            return
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._tell(study, trial, TrialState.FAIL, kind=ERROR, reason=reason)
            self.log(f"{head} {format_params(params)} → error: {reason}")
            raise
        value = statistics.fmean(losses)
        if len(losses) > 1:
            trial.set_user_attr("loss_per_seed", losses)
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
        if self._tell(study, trial, TrialState.COMPLETE, value=value):
            self.stats.complete += 1
            seconds = time.perf_counter() - start
            self.log(f"{head} {format_params(params)} → {value:.4f} ({seconds:.1f} s)")

    def _tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        state: TrialState,
        *,
        value: float | None = None,
        kind: str | None = None,
        reason: str | None = None,
    ) -> bool:
        try:
            if kind is not None:
                trial.set_user_attr(ATTR_FAIL_KIND, kind)
            if reason is not None:
                trial.set_user_attr(ATTR_FAIL_REASON, reason)
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
            if not study.get_trials(deepcopy=False)[trial.number].state.is_finished():
                raise
            # Another worker declared this trial lost meanwhile (its retry is queued).
            self.log(f"[worker {self.index}] #{trial.number}: declared lost meanwhile; dropped")
            return False
        return True


# ------------------------------------------------------------------------ processes
def _raise_interrupt(signum: int, frame: Any) -> None:
    """First Ctrl-C/SIGTERM: stop, requeueing the current trial; ignore repeats meanwhile
    (a second signal would cut that clean-up short and leave the trial RUNNING)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker_main(spec_data: dict[str, Any], objective: Any, storage_url: str, index: int) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter, one CPU thread)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    spec = SweepSpec.from_dict(spec_data)
    if isinstance(objective, str):
        objective = load_objective(objective, train=spec.train, report_every=spec.report_every)
    try:
        Worker(spec, objective, storage_url, index=index).run()
    except KeyboardInterrupt:
        sys.exit(130)


def run_processes(
    spec: SweepSpec,
    objective: str | Callable[..., float],
    storage_url: str,
    workers: int,
    *,
    log: Log = _print,
) -> list[int]:
    """Start ``workers`` worker processes here and wait for them; returns their exit codes."""
    if not isinstance(objective, str):
        try:
            pickle.dumps(objective)
        except Exception as exc:
            raise SweepError(
                "the objective must be picklable to run in worker processes (a module-level "
                "function, not a lambda or a closure), or give it as 'file.py:function'; "
                f"pickling failed: {exc}"
            ) from None
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(spec.to_dict(), objective, storage_url, i),
            name=f"mutransfer-sweep-worker-{i}",
        )
        for i in range(workers)
    ]
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        os.environ.update({k: "1" for k in saved})  # inherited by the spawned interpreters
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    log(f"started {workers} worker process(es): pids {', '.join(str(p.pid) for p in procs)}")
    pending = list(procs)
    try:
        while pending:
            ready = multiprocessing.connection.wait([p.sentinel for p in pending])
            for p in [p for p in pending if p.sentinel in ready]:
                p.join()  # reap at once: a zombie would look alive to the other workers
                pending.remove(p)
                if p.exitcode:
                    log(f"worker {procs.index(p)} (pid {p.pid}) exited with status {p.exitcode}")
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the workers too; a signal sent to this process alone
        # does not, so pass it on. Each worker requeues its trial and exits.
        for p in pending:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()  # SIGTERM: handled like Ctrl-C by the worker
        for p in pending:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        raise
    return [int(p.exitcode or 0) for p in procs]
