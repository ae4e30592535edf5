"""Finding trials whose worker died, so that the sweep retries them instead of losing them.

A worker killed with ``kill -9`` (or a machine that goes away) leaves its trial ``RUNNING``
forever. Two signals tell a live trial from a dead one:

* **Process check** (same machine): every trial records its worker's host, boot id, pid and the
  pid's start time. A worker on the same machine sees at once that the process is gone (or is a
  zombie, or the pid now belongs to another program).
* **Heartbeat** (any machine): a running trial beats every ``heartbeat_interval`` seconds; one
  silent for ``grace_period`` seconds is lost. On databases this is Optuna's own heartbeat
  (``RDBStorage(heartbeat_interval=…, grace_period=…)``, failed by ``fail_stale_trials``). Optuna's
  journal storage has no heartbeat, so there the beat is a ``heartbeat`` user attribute (one
  appended line per beat).

Every worker runs ``recover_lost`` before it takes a trial and while it waits for others, so a
killed worker's trial is failed (reason: ``lost``) and queued again by whichever worker notices
first.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .trials import (
    ATTR_HEARTBEAT,
    ATTR_WORKER,
    LOST,
    fail_and_retry,
    native_heartbeat,
    record_heartbeat,
    trial_id,
)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) of a process, from /proc (Linux)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], fields[19]


@dataclass(frozen=True)
class Owner:
    """The worker process running a trial, as recorded on the trial."""

    host: str
    boot: str
    pid: int
    started: str

    @classmethod
    def current(cls) -> Owner:
        stat = _proc_stat(os.getpid())
        return cls(socket.gethostname(), _boot_id(), os.getpid(), stat[1] if stat else "")

    @classmethod
    def from_attr(cls, value: Any) -> Owner | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(str(value["host"]), str(value["boot"]), int(value["pid"]), value["started"])
        except (KeyError, TypeError, ValueError):
            return None

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    def same_machine(self, other: Owner) -> bool:
        return self.host == other.host and self.boot == other.boot

    def alive(self) -> bool:
        """Is this process still running (on this machine)?"""
        stat = _proc_stat(self.pid)
        if stat is not None:
            state, started = stat
            return state not in ("Z", "X") and (not self.started or started == self.started)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()  # /proc exists but has no entry: gone

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def lost_reason(
    trial: FrozenTrial, here: Owner, now: float, grace_period: float, check_heartbeat: bool
) -> str | None:
    """Why a RUNNING trial counts as lost, or ``None`` while it may still be alive."""
    owner = Owner.from_attr(trial.user_attrs.get(ATTR_WORKER))
    if owner is None:
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - started > grace_period:
            return f"no worker recorded {now - started:.0f} s after the trial started"
        return None
    if owner.same_machine(here):
        # The process table is authoritative here: a live but busy worker whose heartbeat
        # thread was starved must not lose its trial.
        if owner.pid != here.pid and not owner.alive():
            return f"worker {owner} is gone (killed or crashed)"
        return None
    if check_heartbeat:
        beat = trial.user_attrs.get(ATTR_HEARTBEAT)
        if not isinstance(beat, int | float):
            beat = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - beat > grace_period:
            return f"no heartbeat from worker {owner} for {now - beat:.0f} s"
    return None


def recover_lost(
    study: optuna.Study, *, grace_period: float, max_retry: int | None, here: Owner
) -> list[int]:
    """Fail and requeue the study's lost trials; returns the numbers of those this call failed."""
    native = native_heartbeat(study)
    if native:
        # Databases: Optuna fails heartbeat-stale trials and runs the storage's retry callback.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    now = time.time()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = lost_reason(trial, here, now, grace_period, check_heartbeat=not native)
        if reason and fail_and_retry(study, trial, LOST, reason, max_retry):
            recovered.append(trial.number)
    return recovered


class Heartbeat:
    """A background thread that keeps running trials visibly alive until ``stop()``.

    One thread beats for every trial a worker holds: one trial, or the several trials of a
    stacked pack (``sweep.stacked_trials``), each with its own beat, so that each is judged
    alive or lost on its own record. ``release(trial)`` stops beating a trial once it is told
    (a beat on a finished trial would fail); a trial whose beat fails (the storage declared it
    lost, or a hiccup) is dropped and the others go on beating.
    """

    def __init__(self, trials: optuna.Trial | Sequence[optuna.Trial], interval: float) -> None:
        self._trials = [trials] if isinstance(trials, optuna.Trial) else list(trials)
        if not self._trials:
            raise ValueError("Heartbeat needs at least one trial")
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._native = native_heartbeat(self._trials[0].study)
        self._thread = threading.Thread(target=self._run, name="mutransfer-heartbeat", daemon=True)

    def _beat_one(self, trial: optuna.Trial) -> None:
        if self._native:
            record_heartbeat(trial)
        else:
            trial.set_user_attr(ATTR_HEARTBEAT, time.time())

    def beat(self) -> None:
        """Beat for every trial still held; raises if one fails (used on entry)."""
        with self._lock:
            for trial in self._trials:
                self._beat_one(trial)

    def release(self, trial: optuna.Trial) -> None:
        """Stop beating ``trial`` (it was told); the others keep beating."""
        with self._lock:
            self._trials = [t for t in self._trials if trial_id(t) != trial_id(trial)]

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                alive = []
                for trial in self._trials:
                    try:
                        self._beat_one(trial)
                    except Exception:  # the trial was declared lost, or a storage hiccup
                        continue
                    alive.append(trial)
                self._trials = alive
                if not alive:
                    return

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
