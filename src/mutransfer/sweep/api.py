"""The Python face of sweeps: ``Sweep`` and ``run_sweep``.

    from mutransfer.sweep import Sweep

    def objective(params, width, trial):
        return train_my_model(width, lr=params["lr"], seed=trial.seed)

    sweep = Sweep("mlp-lr", widths=[64, 128, 256], space={"lr": {"log2": [-10, -4]}},
                  objective=objective)
    results = sweep.run(workers=2)
    print(results.table())

The same sweep from a TOML file is ``Sweep.from_config("sweep.toml")``; the command line
(``mutransfer sweep``) is a thin wrapper over this class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import (
    BUILTIN,
    DEFAULT_STACK_MEMORY_MB,
    PrunerSpec,
    SweepSpec,
    load_config,
    parse_pruner,
)
from .errors import SweepError
from .journal import StorageWriteError
from .objective import check_device_for, load_objective
from .progress import Progress, storage_counter
from .results import SweepResults
from .runner import STORAGE_WRITE_FAILED, Log, Worker, WorkerStats, print_line, run_processes
from .space import Space
from .storage import (
    open_storage,
    patiently,
    redact,
    runs_dir,
    setup_studies,
    storage_kind,
    storage_url,
    study_name,
    tensorboard_dir,
)
from .tensorboard import check_available as check_tensorboard

T = TypeVar("T")

if TYPE_CHECKING:
    import optuna


class Sweep:
    """A µTransfer sweep: one Optuna study per proxy width, in a durable storage.

    ``objective`` is ``"builtin"`` (mutransfer's trainer; set its options with ``train=``), a
    function ``objective(params, width, trial) -> loss``, or a ``"file.py:function"`` /
    ``"package.module:function"`` string (needed to run it on other machines). The remaining
    arguments are the fields of ``SweepSpec`` (see docs/sweeps.md); ``strategy="independent"``
    runs u-µP's independent search (the LR first, then each other hyperparameter alone at the
    best LR, then their combination) instead of the whole grid; ``stack=True`` (built-in
    trainer) lets each worker train several trials of one width as one stacked model.
    """

    def __init__(
        self,
        name: str,
        widths: list[int] | tuple[int, ...],
        space: Space | Mapping[str, Any],
        objective: str | Callable[..., float] = BUILTIN,
        *,
        sampler: str = "grid",
        strategy: str = "grid",
        trials: int | None = None,
        seeds: list[int] | tuple[int, ...] = (0,),
        sampler_seed: int = 0,
        pruner: str | Mapping[str, Any] | PrunerSpec | None = None,
        train: Mapping[str, Any] | None = None,
        storage: str | None = None,
        report_every: int = 10,
        heartbeat_interval: int = 10,
        grace_period: int = 30,
        max_retry: int = 3,
        reconnect_timeout: int = 120,
        runs_dir: str | None = None,
        tensorboard: bool | str = False,
        stack: bool = False,
        stack_memory_mb: float = DEFAULT_STACK_MEMORY_MB,
    ) -> None:
        spec = SweepSpec(
            name=name,
            widths=tuple(widths),
            space=Space.of(space),
            sampler=sampler,  # type: ignore[arg-type]
            strategy=strategy,  # type: ignore[arg-type]
            trials=trials,
            seeds=tuple(seeds),
            sampler_seed=sampler_seed,
            pruner=pruner if isinstance(pruner, PrunerSpec) else parse_pruner(pruner, "pruner"),
            objective=objective if isinstance(objective, str) else _callable_name(objective),
            train=dict(train or {}),
            storage=storage,
            report_every=report_every,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
            reconnect_timeout=reconnect_timeout,
            runs_dir=runs_dir,
            tensorboard=tensorboard,
            stack=stack,
            stack_memory_mb=stack_memory_mb,
        )
        self._init(spec, None if isinstance(objective, str) else objective)

    def _init(self, spec: SweepSpec, objective: Callable[..., float] | None) -> None:
        self.spec = spec
        self._objective = objective
        self.storage_url = storage_url(spec)

    @classmethod
    def from_spec(
        cls,
        spec: SweepSpec,
        objective: Callable[..., float] | None = None,
        *,
        storage: str | None = None,
    ) -> Sweep:
        """A sweep from a validated spec; ``storage`` overrides the spec's storage."""
        self = cls.__new__(cls)
        self._init(spec.with_(storage=storage) if storage else spec, objective)
        return self

    @classmethod
    def from_config(cls, path: str | Path, *, storage: str | None = None) -> Sweep:
        """The sweep described by a TOML file (``storage`` overrides ``sweep.storage``)."""
        return cls.from_spec(load_config(path), storage=storage)

    # ------------------------------------------------------------------------- running
    @property
    def objective(self) -> str | Callable[..., float]:
        """What workers run: the callable given, else the spec's objective string."""
        return self._objective if self._objective is not None else self.spec.objective

    def load_objective(self, device: str = "cpu") -> Callable[..., float]:
        """What a worker calls per trial; ``device``: where the built-in trainer trains."""
        if self._objective is not None:
            check_device_for(self.spec.objective, device)
            return self._objective
        return load_objective(
            self.spec.objective,
            train=self.spec.train,
            report_every=self.spec.report_every,
            runs_dir=runs_dir(self.spec, self.storage_url),
            device=device,
        )

    def storage(self) -> optuna.storages.BaseStorage:
        return open_storage(
            self.storage_url,
            heartbeat_interval=self.spec.heartbeat_interval,
            grace_period=self.spec.grace_period,
            max_retry=self.spec.max_retry,
            reconnect_timeout=self.spec.reconnect_timeout,
        )

    def _patiently(self, action: Callable[[], T]) -> T:
        """``action()`` while a database storage may be restarting (see ``patiently``)."""
        return patiently(action, redact(self.storage_url), self.spec.reconnect_timeout)

    def prepare(self) -> dict[int, optuna.Study]:
        """Create the studies (once) and enqueue missing grid points; safe to call again."""
        if tensorboard_dir(self.spec, self.storage_url) is not None:
            check_tensorboard()  # said before any trial runs, not by each worker after one
        return self._patiently(lambda: setup_studies(self.spec, self.storage(), self.storage_url))

    def work(
        self,
        *,
        worker_index: int = 0,
        max_trials: int | None = None,
        log: Log | None = print_line,
        device: str = "cpu",
    ) -> WorkerStats:
        """Run one worker in this process until the sweep is done (or ``max_trials``);
        ``device``: where the built-in trainer trains (see ``run``)."""
        objective = self.load_objective(_device(device))
        worker = Worker(self.spec, objective, self.storage_url, index=worker_index, log=log)
        return worker.run(max_trials=max_trials)

    def run(
        self,
        workers: int = 1,
        *,
        processes: bool | None = None,
        log: Log | None = print_line,
        progress: bool | None = False,
        device: str = "cpu",
    ) -> SweepResults:
        """Prepare the sweep, run ``workers`` workers until it is done, return the results.

        With one worker it runs in this process (``processes=False``); with more, each worker
        is a separate single-threaded process. Re-running resumes: finished trials are kept and
        lost ones retried. ``progress`` draws a bar of finished trials with an ETA (tqdm; ``None``:
        when stderr is a terminal); the log lines are then printed above it. ``device``: where
        the built-in trainer's runs train in every worker — "cpu" (default), "auto" (the GPU
        if torch sees one) or a torch device name; a property of this machine, not of the
        sweep (not stored: another machine may join the same sweep with its own device).
        """
        if workers < 1:
            raise SweepError(f"workers must be >= 1, got {workers}")
        if workers > 1 and storage_kind(self.storage_url) == "sqlite":
            raise SweepError(
                "SQLite storage supports a single worker (two writers crash it); use the "
                "default journal file for several workers on one machine, or PostgreSQL"
            )
        use_processes = workers > 1 if processes is None else processes
        if workers > 1 and not use_processes:
            raise SweepError("several workers need processes=True")
        device = _device(device)
        self.load_objective(device)  # fail here, before any worker starts, if it cannot be loaded
        self.prepare()
        bar = Progress(storage_counter(self.studies, self.spec), enabled=progress)
        say: Log = bar.write if log is not None and bar.active else log or (lambda m: None)
        try:
            if not use_processes:
                Worker(self.spec, self.load_objective(device), self.storage_url, log=say).run(
                    on_trial=bar.refresh
                )
            else:
                codes = run_processes(
                    self.spec,
                    self.objective,
                    self.storage_url,
                    workers,
                    log=say,
                    progress=bar,
                    device=device,
                )
                self._check_exit_codes(codes, workers, say)
        finally:
            bar.close()
        return self.results()

    def _check_exit_codes(self, codes: list[int], workers: int, log: Log) -> None:
        failed = [(i, c) for i, c in enumerate(codes) if c != 0]
        if any(c == STORAGE_WRITE_FAILED for _, c in failed):
            raise StorageWriteError(
                f"the sweep's storage {redact(self.storage_url)} could not be written or "
                "reached (the worker's line above says why: a full disk, a file-size limit, a "
                "database that went away). Nothing half-written was left in it: every trial "
                "finished before is kept. Run the same command to resume once it is fixed."
            )
        if failed and self._patiently(self.unfinished) == 0:
            # The survivors finished the work (and retried the dead workers' trials).
            log(f"note: {len(failed)} worker(s) stopped early; the others finished the sweep")
        elif failed:
            detail = ", ".join(f"worker {i}: status {c}" for i, c in failed)
            raise SweepError(
                f"{len(failed)} of {workers} worker(s) stopped with an error ({detail}); "
                "finished trials are saved — fix the problem and run the same command to "
                "resume"
            )

    def studies(self) -> dict[int, optuna.Study]:
        """The sweep's studies, one per width (they must exist: run or prepare first)."""
        import optuna

        storage = self.storage()
        try:
            return {
                w: optuna.load_study(study_name=study_name(self.spec.name, w), storage=storage)
                for w in self.spec.widths
            }
        except KeyError:
            raise SweepError(
                f"sweep {self.spec.name!r} has not been started in {self.storage_url!r}"
            ) from None

    def unfinished(self) -> int:
        """Trials still to run: waiting, running, grid points not yet covered, unspent budget,
        or what an independent search still needs (counting its later stages in full)."""
        from .progress import left_in

        return sum(left_in(study, self.spec) for study in self.studies().values())

    def progress(self) -> tuple[int, int]:
        """(finished trials, total trials) over every width, as the progress bar shows it."""
        from .progress import storage_counter

        return storage_counter(self.studies, self.spec)()

    def results(self) -> SweepResults:
        return self._patiently(lambda: SweepResults.load(self.spec.name, self.storage_url))


def run_sweep(
    name: str,
    widths: list[int] | tuple[int, ...],
    space: Space | Mapping[str, Any],
    objective: str | Callable[..., float] = BUILTIN,
    *,
    workers: int = 1,
    **options: Any,
) -> SweepResults:
    """``Sweep(name, widths, space, objective, **options).run(workers)``."""
    return Sweep(name, widths, space, objective, **options).run(workers)


def _device(name: str) -> str:
    """``name`` checked and resolved ("auto" → "cuda" or "cpu") before any worker starts."""
    from ..devices import resolve_device

    return str(resolve_device(name))


def _callable_name(func: Callable[..., Any]) -> str:
    """A descriptive objective string for a Python callable (stored with the study)."""
    module = getattr(func, "__module__", None) or "python"
    qualname = getattr(func, "__qualname__", None) or type(func).__name__
    return f"{module}:{qualname}"
