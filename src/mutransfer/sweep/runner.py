"""The worker loop, and a pool of worker processes on this machine.

A worker is a plain loop over Optuna's storage — no scheduler of our own: claim a waiting trial
(an enqueued grid point or a retry) or, for random/TPE, ask the sampler for a new one while the
width's budget lasts; run the objective; tell the result. Before each claim it looks for trials
whose worker died (``liveness.recover_lost``) and queues them again; in an independent search it
also queues the next stage of every width whose current stage is complete (``stages.py``, under
the set-up lock, so the stage is queued once whichever worker gets there). When nothing is left to
claim but other workers are still running trials, it waits: one of them may die and its trial
would need a home. Every worker, on any machine, runs exactly this loop against the same storage;
``mutransfer sweep --workers N`` starts N of them here, each with one CPU thread.

Widths are served evenly (the least-advanced width first), so a sweep stopped half-way has
results at every width rather than all of the small ones.
"""

from __future__ import annotations

import functools
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

from . import tensorboard
from .config import SweepSpec
from .errors import Diverged, SweepError
from .formatting import format_params, format_value
from .journal import StorageWriteError
from .liveness import Heartbeat, Owner, recover_lost
from .objective import TrainerObjective, TrialHandle, load_objective
from .packing import Packer
from .progress import Progress
from .storage import (
    connection_lost,
    first_line,
    open_storage,
    patiently,
    redact,
    runs_dir,
    study_name,
    tensorboard_dir,
)
from .trials import (
    ATTR_FAIL_KIND,
    ATTR_FAIL_REASON,
    ATTR_WIDTH,
    ATTR_WORKER,
    DIVERGED,
    ERROR,
    INTERRUPTED,
    TrialOutcome,
    counts_toward_budget,
    fail_and_retry,
    pop_waiting,
    storage_of,
    trial_id,
)

Log = Callable[[str], None]


def print_line(message: str) -> None:
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
        workers: int = 1,
        log: Log | None = print_line,
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
        self.tensorboard = tensorboard_dir(spec, storage_url)
        self.packer: Packer | None = None
        """With ``sweep.stack`` and the built-in trainer: chooses the trials trained together
        (``workers``: how many workers this command started, for the fair share)."""
        if spec.stack and isinstance(objective, TrainerObjective):
            self.packer = Packer(spec, objective, workers=workers, here=self.here)

    # ------------------------------------------------------------------------- loop
    def run(
        self, max_trials: int | None = None, on_trial: Callable[[], None] | None = None
    ) -> WorkerStats:
        """Claim and run trials until none is left (or ``max_trials``); ``on_trial`` is called
        after each (the progress bar's refresh)."""
        storage = open_storage(
            self.storage_url,
            heartbeat_interval=self.spec.heartbeat_interval,
            grace_period=self.spec.grace_period,
            max_retry=self.spec.max_retry,
            reconnect_timeout=self.spec.reconnect_timeout,
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
        if self.tensorboard is not None and self.index == 0:
            self._write_missing_curves(self.tensorboard, studies)
        if self.spec.stack and self.packer is None:
            self.log(
                f"[worker {self.index}] sweep.stack needs the built-in trainer; this objective "
                "is a function of your own: its trials run one at a time"
            )
        started = 0
        while max_trials is None or started < max_trials:
            try:
                self._recover(studies)
                if self.spec.strategy == "independent":
                    self._advance(studies)  # queue the next stage of widths whose stage is done
                limit = None if max_trials is None else max_trials - started
                claimed = self._claim(studies, limit)
                if claimed is None:
                    running = (TrialState.RUNNING,)
                    if any(s.get_trials(deepcopy=False, states=running) for s in studies.values()):
                        # Others are busy; one may die, and its trial would need a new home.
                        time.sleep(self.poll_seconds)
                        continue
                    break
                width, trials, packed = claimed
                started += len(trials)
                if packed:
                    self._run_pack_safely(studies[width], width, trials)
                else:
                    self._run_trial_safely(studies[width], width, trials[0])
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                self._wait_for_storage(storage, exc)
                continue
            if on_trial is not None:
                on_trial()
        if self.spec.strategy == "independent" and (max_trials is None or started < max_trials):
            self._report_blocked(studies)
        return self.stats

    def _wait_for_storage(self, storage: Any, exc: BaseException) -> None:
        """The database went away: retry with backoff for ``reconnect_timeout`` seconds.

        A trial interrupted by the outage stays RUNNING in the database; once it is back, its
        missing heartbeats mark it lost and it is queued again (by this worker or another).
        """
        where = redact(self.storage_url)
        self.log(
            f"[worker {self.index}] lost the connection to {where} ({first_line(exc)}); "
            f"retrying for up to {self.spec.reconnect_timeout} s"
        )
        patiently(storage.get_all_studies, where, self.spec.reconnect_timeout, first_error=exc)
        self.log(f"[worker {self.index}] {where} is back; going on")

    def _advance(self, studies: dict[int, optuna.Study]) -> bool:
        """Queue the next stage of every width whose current stage is complete.

        Checked without the lock first (it is nearly always "nothing to do"), then again under
        the set-up lock, where reading the trials and enqueueing are one step: two workers
        finishing a stage at the same moment queue its successor once.
        """
        from .stages import enqueue_stage, study_stages
        from .storage import setup_lock

        queued = False
        for width, study in studies.items():
            if not study_stages(study, self.spec).to_enqueue(rerun=False):
                continue
            with setup_lock(self.storage_url):
                added = enqueue_stage(study, self.spec, width, rerun=False)
            if added:
                queued = True
                self.log(f"[worker {self.index}] w={width} {_describe_stage(added)}")
        return queued

    def _report_blocked(self, studies: dict[int, optuna.Study]) -> None:
        from .stages import study_stages

        for width, study in studies.items():
            reason = study_stages(study, self.spec).blocked
            if reason:
                self.log(f"[worker {self.index}] w={width}: independent search stopped: {reason}")

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

    def _claim(
        self, studies: dict[int, optuna.Study], limit: int | None = None
    ) -> tuple[int, list[optuna.Trial], bool] | None:
        """The next trial(s) to run, all of one width, the least advanced width first:
        ``(width, trials, packed)`` — one trial, or with stacking the trials of one pack (at
        most ``limit``; ``packed``: train them with ``_run_pack``)."""
        budget = self.spec.points_per_width
        progress = {}
        found = {}
        for width, study in studies.items():
            trials = found[width] = study.get_trials(deepcopy=False)
            busy = sum(t.state != TrialState.WAITING and counts_toward_budget(t) for t in trials)
            progress[width] = (busy / max(1, budget), width)
        share = self.packer.share(found) if self.packer is not None else 1
        if limit is not None:
            share = min(share, limit)
        for width in sorted(studies, key=progress.__getitem__):
            study = studies[width]
            claimed: list[optuna.Trial] = []
            if self.packer is not None:
                claimed = self.packer.claim(study, width, found[width], share)
            packed = bool(claimed) and len(claimed) * len(self.spec.seeds) > 1
            if not claimed:
                trial = pop_waiting(study)
                if trial is None and self.spec.sampler != "grid":
                    taken = sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
                    if taken < budget:
                        with warnings.catch_warnings():
                            # We drive heartbeats ourselves (ask/tell instead of Study.optimize).
                            warnings.filterwarnings("ignore", message="Heartbeat of storage")
                            trial = study.ask()
                claimed = [] if trial is None else [trial]
            if claimed:
                for trial in claimed:  # whose trial it is, before anything else happens
                    trial.set_user_attr(ATTR_WORKER, self.here.to_attr())
                    trial.set_user_attr(ATTR_WIDTH, width)
                return width, claimed, packed
        return None

    # ------------------------------------------------------------------------ trial
    def _run_trial_safely(self, study: optuna.Study, width: int, trial: optuna.Trial) -> None:
        """Run a claimed trial; on Ctrl-C/SIGTERM at *any* point before it is told, fail it
        as interrupted and queue it again, so that no claimed trial is left RUNNING."""
        try:
            self._run_trial(study, width, trial)
        except KeyboardInterrupt:
            self._requeue_interrupted(study, [trial])
            raise

    def _requeue_interrupted(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        """Fail each of ``trials`` not told yet as interrupted, and queue it again."""
        for trial in trials:
            if not storage_of(study).get_trial(trial_id(trial)).state.is_finished():
                fail_and_retry(
                    study,
                    trial,
                    INTERRUPTED,
                    "interrupted (Ctrl-C or SIGTERM)",
                    self.spec.max_retry,
                )

    def _run_trial(self, study: optuna.Study, width: int, trial: optuna.Trial) -> None:
        start = time.perf_counter()
        params: dict[str, Any] = {}
        losses: list[float] = []
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
            outcome = TrialOutcome("pruned", reason=str(exc) or "pruned")
        except Diverged as exc:
            outcome = TrialOutcome("diverged", reason=str(exc))
        except Exception as exc:
            self._error(study, width, trial, params, exc)
            raise
        else:
            seconds = time.perf_counter() - start
            outcome = TrialOutcome("complete", losses=tuple(losses), seconds=seconds)
        self._conclude(study, width, trial, params, outcome)

    def _run_pack_safely(self, study: optuna.Study, width: int, trials: list[optuna.Trial]) -> None:
        """Run claimed trials as one pack; on Ctrl-C/SIGTERM, fail every one not told yet as
        interrupted and queue it again (as ``_run_trial_safely`` does for one)."""
        try:
            self._run_pack(study, width, trials)
        except KeyboardInterrupt:
            self._requeue_interrupted(study, trials)
            raise

    def _run_pack(self, study: optuna.Study, width: int, trials: list[optuna.Trial]) -> None:
        """Train claimed trials of one width as one stacked model (``stacked_trials``); each
        is told as soon as its outcome is known, and beats until then."""
        from .stacked_trials import StackedTrials

        assert self.packer is not None and isinstance(self.objective, TrainerObjective)
        pack = StackedTrials(
            self.objective, width, self.spec.seeds, memory_budget=self.packer.memory_budget
        )
        told: set[int] = set()
        entries: list[tuple[optuna.Trial, dict[str, Any]]] = []
        try:
            with Heartbeat(trials, self.spec.heartbeat_interval) as heartbeat:

                def tell(
                    trial: optuna.Trial, params: dict[str, Any], outcome: TrialOutcome
                ) -> None:
                    heartbeat.release(trial)
                    told.add(trial.number)
                    self._conclude(study, width, trial, params, outcome)

                entries = [(trial, self.spec.space.suggest(trial)) for trial in trials]
                numbers = ", ".join(f"#{trial.number}" for trial in trials)
                self.log(
                    f"[worker {self.index}] w={width} {numbers}: {len(trials)} trials "
                    f"× {len(self.spec.seeds)} seed(s) stacked"
                )
                pack.run(entries, tell)
        except Exception as exc:
            points = dict((trial.number, params) for trial, params in entries)
            for trial in trials:
                if trial.number not in told:
                    self._error(study, width, trial, points.get(trial.number, {}), exc)
            raise

    def _error(
        self,
        study: optuna.Study,
        width: int,
        trial: optuna.Trial,
        params: dict[str, Any],
        exc: Exception,
    ) -> None:
        """The objective raised (a bug, not a result): fail the trial with the error; the
        caller stops the worker with it."""
        reason = f"{type(exc).__name__}: {exc}"
        self._tell(study, trial, TrialState.FAIL, kind=ERROR, reason=reason)
        head = f"[worker {self.index}] w={width} #{trial.number}"
        self.log(f"{head} {format_params(params)} → error: {reason}")

    def _conclude(
        self,
        study: optuna.Study,
        width: int,
        trial: optuna.Trial,
        params: dict[str, Any],
        outcome: TrialOutcome,
    ) -> None:
        """Record how a trial ended: its state, value, attributes and curve, and a log line.
        One place for a trial trained alone and one trained in a pack."""
        head = f"[worker {self.index}] w={width} #{trial.number}"
        if outcome.state == "pruned":
            self._tell(study, trial, TrialState.PRUNED, reason=outcome.reason)
            self._write_curve(study, width, trial)
            self.stats.pruned += 1
            self.log(f"{head} {format_params(params)} → pruned ({outcome.reason})")
            return
        if outcome.state == "diverged":
            self._tell(study, trial, TrialState.FAIL, kind=DIVERGED, reason=outcome.reason)
            self._write_curve(study, width, trial)
            self.stats.diverged += 1
            self.log(f"{head} {format_params(params)} → diverged: {outcome.reason}")
            return
        value = statistics.fmean(outcome.losses)
        if len(outcome.losses) > 1:
            trial.set_user_attr("loss_per_seed", list(outcome.losses))
        trial.set_user_attr("seconds", round(outcome.seconds, 3))
        if self._tell(study, trial, TrialState.COMPLETE, value=value):
            self._write_curve(study, width, trial)
            self.stats.complete += 1
            self.log(f"{head} {format_params(params)} → {value:.4f} ({outcome.seconds:.1f} s)")

    def _write_curve(self, study: optuna.Study, width: int, trial: optuna.Trial) -> None:
        """The finished trial's TensorBoard curve, when the sweep asks for them."""
        if self.tensorboard is not None:
            folder = self.tensorboard
            frozen = storage_of(study).get_trial(trial_id(trial))
            self._guard_view(lambda: tensorboard.write_trial(folder, width, frozen))

    def _write_missing_curves(self, folder: str, studies: dict[int, optuna.Study]) -> None:
        """Curves of finished trials a killed worker did not get to write."""
        for width, study in studies.items():
            trials = study.get_trials(deepcopy=False)
            self._guard_view(functools.partial(tensorboard.write_missing, folder, width, trials))

    def _guard_view(self, write: Callable[[], object]) -> None:
        """The curves are a view of the storage: failing to write one never stops a sweep
        (the next start writes it), but it is said."""
        try:
            write()
        except OSError as exc:
            self.log(
                f"[worker {self.index}] TensorBoard curve not written ({exc}); kept in the storage"
            )

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


def _describe_stage(added: list[tuple[str, dict[str, Any]]]) -> str:
    """``stage 2 at lr=2^-6: queued 3 init_std, 4 output_multiplier``."""
    from .stages import parse_label

    parsed = [(parse_label(stage), point) for stage, point in added]
    numbers = sorted({p[0] for p, _ in parsed if p is not None})
    if numbers == [3]:
        return f"stage 3: queued the combination {format_params(added[0][1])}"
    if numbers == [2]:
        counts: dict[str, int] = {}
        for p, _ in parsed:
            assert p is not None
            counts[p[1]] = counts.get(p[1], 0) + 1
        first = parsed[0][1]
        lead = next(iter(first))
        return f"stage 2 at {lead}={format_value(first[lead])}: queued " + ", ".join(
            f"{n} {name}" for name, n in counts.items()
        )
    return f"queued {len(added)} point(s) of stage {'/'.join(map(str, numbers))}"


# ------------------------------------------------------------------------ processes
def _raise_interrupt(signum: int, frame: Any) -> None:
    """First Ctrl-C/SIGTERM: stop, requeueing the current trial; ignore repeats meanwhile
    (a second signal would cut that clean-up short and leave the trial RUNNING)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


class _PipeLog:
    """A worker process's log: each line goes to the parent, which prints it above its progress
    bar. Falls back to printing if the parent is gone, so a worker outliving it still logs."""

    MAX_BYTES = 3000  # one pipe write (< PIPE_BUF) is atomic: a kill -9 cannot tear a line

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn

    def __call__(self, message: str) -> None:
        text = message.encode()[: self.MAX_BYTES].decode(errors="ignore")
        try:
            self.conn.send(text)
        except (OSError, ValueError):
            print(message, flush=True)


def _worker_main(
    spec_data: dict[str, Any],
    objective: Any,
    storage_url: str,
    index: int,
    conn: multiprocessing.connection.Connection | None = None,
    workers: int = 1,
    device: str = "cpu",
) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter, one CPU thread);
    ``workers``: how many the command started (a stacking worker's fair share); ``device``:
    where the built-in trainer trains."""
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
        objective = load_objective(
            objective,
            train=spec.train,
            report_every=spec.report_every,
            runs_dir=runs_dir(spec, storage_url),
            device=device,
        )
    log: Log = _PipeLog(conn) if conn is not None else print_line
    try:
        Worker(spec, objective, storage_url, index=index, workers=workers, log=log).run()
    except KeyboardInterrupt:
        sys.exit(130)
    except StorageWriteError as exc:
        log(f"[worker {index}] {exc}")
        sys.exit(STORAGE_WRITE_FAILED)


STORAGE_WRITE_FAILED = 75
"""Exit status of a worker that could not write to or reach the sweep's storage
(EX_TEMPFAIL): its last log line says which."""


def run_processes(
    spec: SweepSpec,
    objective: str | Callable[..., float],
    storage_url: str,
    workers: int,
    *,
    log: Log = print_line,
    progress: Progress | None = None,
    device: str = "cpu",
) -> list[int]:
    """Start ``workers`` worker processes here and wait for them; returns their exit codes.

    Each worker sends its log lines through its own pipe (no lock shared between workers, which
    a killed worker could leave held); they are printed here with ``log``, above the progress
    bar when there is one, which is refreshed while the workers run.
    """
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
    pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(spec.to_dict(), objective, storage_url, i, pipes[i][1], workers, device),
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
        for _, writer in pipes:
            writer.close()  # the workers hold their own copies
    readers = {procs[i]: reader for i, (reader, _) in enumerate(pipes)}
    log(f"started {workers} worker process(es): pids {', '.join(str(p.pid) for p in procs)}")
    pending = list(procs)
    timeout = progress.interval if progress is not None and progress.active else None
    try:
        while pending:
            waitables: list[Any] = [p.sentinel for p in pending]
            waitables += [readers[p] for p in pending if p in readers]
            ready = multiprocessing.connection.wait(waitables, timeout=timeout)
            for p in list(pending):
                if p in readers and readers[p] in ready:
                    _drain(readers, p, log, until_empty=False)
            for p in [p for p in pending if p.sentinel in ready]:
                p.join()  # reap at once: a zombie would look alive to the other workers
                _drain(readers, p, log, until_empty=True)
                pending.remove(p)
                if p.exitcode:
                    log(f"worker {procs.index(p)} (pid {p.pid}) exited with status {p.exitcode}")
            if progress is not None:
                progress.refresh()
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
        for p in procs:
            _drain(readers, p, log, until_empty=True)
        raise
    return [int(p.exitcode or 0) for p in procs]


def _drain(
    readers: dict[Any, multiprocessing.connection.Connection],
    proc: Any,
    log: Log,
    *,
    until_empty: bool,
) -> None:
    """Print what a worker sent. After it exited (``until_empty``), read what is left and close
    the pipe without waiting for an end-of-file that a lingering grandchild (a data-loader
    process holding the inherited pipe) could withhold."""
    conn = readers.get(proc)
    if conn is None:
        return
    try:
        while conn.poll(0):
            log(conn.recv())
            if not until_empty:
                break
    except (EOFError, OSError):
        until_empty = True
    if until_empty:
        conn.close()
        del readers[proc]
