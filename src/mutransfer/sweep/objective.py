"""What a trial runs: the user's objective, or mutransfer's built-in proxy trainer.

An objective is any function ``objective(params, width, trial) -> loss``:

* ``params`` — the sampled hyperparameters, e.g. ``{"lr": 0.015625, "init_std": 1.0}``;
* ``width`` — the proxy width this trial trains at;
* ``trial`` — a ``TrialHandle``: ``trial.seed`` to seed the run, ``trial.report(step, loss)`` to
  let the pruner stop a hopeless run early, ``trial.set_attr(key, value)`` to record extras.

It returns the loss to minimise (lower is better). Returning ``nan``/``inf`` or raising
``mutransfer.sweep.Diverged`` records the trial as *diverged*. With several seeds the objective is
called once per seed and the trial's value is the mean.

Objectives are named in configs as ``"builtin"``, ``"path/to/file.py:function"`` or
``"package.module:function"`` so that every worker process (on any machine) can load them.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .config import BUILTIN
from .errors import Diverged, SweepError

if TYPE_CHECKING:
    import optuna


class TrialHandle:
    """One trial as the objective sees it: width, seed, pruning, extra attributes."""

    def __init__(
        self,
        trial: optuna.Trial,
        *,
        width: int,
        seed: int,
        seed_index: int = 0,
        n_seeds: int = 1,
    ) -> None:
        self.optuna_trial = trial
        self.width = width
        self.seed = seed
        self.seed_index = seed_index
        self.n_seeds = n_seeds

    @property
    def number(self) -> int:
        return self.optuna_trial.number

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.optuna_trial.params)

    def report(self, step: int, loss: float) -> None:
        """Report an intermediate loss; raises ``optuna.TrialPruned`` if the pruner says stop.

        Only the first seed reports: pruners compare trials at equal steps, and every trial
        runs its seeds in the same order, so the first seed's curve is the fair comparison.
        """
        if self.seed_index != 0 or not math.isfinite(loss):
            return
        import optuna

        self.optuna_trial.report(float(loss), int(step))
        if self.optuna_trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (loss {loss:.4g})")

    def set_attr(self, key: str, value: Any) -> None:
        """Record a JSON-able value on the trial (suffixed by the seed when there are several)."""
        name = key if self.n_seeds == 1 else f"{key}[seed={self.seed}]"
        self.optuna_trial.set_user_attr(name, value)


class CallbackHandle:
    """A trial handle without Optuna, for driving an objective from elsewhere.

    Ray Tune, a notebook loop or a test can call ``objective(params, width, handle)`` with
    ``CallbackHandle(width, seed, on_report=...)``: ``report`` forwards to ``on_report(step,
    loss)`` (which may raise to stop the run), ``set_attr`` stores into ``attrs``.
    """

    def __init__(
        self,
        width: int,
        seed: int = 0,
        on_report: Callable[[int, float], None] | None = None,
    ) -> None:
        self.width = width
        self.seed = seed
        self.on_report = on_report
        self.attrs: dict[str, Any] = {}
        self.reports: list[tuple[int, float]] = []

    def report(self, step: int, loss: float) -> None:
        self.reports.append((int(step), float(loss)))
        if self.on_report is not None:
            self.on_report(int(step), float(loss))

    def set_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = value


class Objective(Protocol):
    def __call__(self, params: dict[str, Any], width: int, trial: TrialHandle) -> float: ...


class LossReports:
    """The built-in trainer's intermediate losses for the pruner, as ``on_step(step, loss)``.

    Pruners compare single numbers, and an average over the last steps is less noisy than one
    step's loss: a smoothed training loss (``0.9 · previous + 0.1 · loss``) is reported every
    ``every`` steps. ``TrialHandle.report`` raises ``optuna.TrialPruned`` when the pruner says
    stop. One class for the one-trial path and the stacked one, so both report the same curve.
    """

    def __init__(self, trial: TrialHandle, every: int) -> None:
        self.trial = trial
        self.every = every
        self.smoothed: float | None = None

    def __call__(self, step: int, loss: float) -> None:
        self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        if (step + 1) % self.every == 0:
            self.trial.report(step + 1, self.smoothed)


@dataclass
class TrainerObjective:
    """The built-in objective: ``mutransfer.training.proxy.train`` at the trial's width and seed.

    ``train`` holds the fixed ``TrainConfig`` options; the swept hyperparameters, the width and
    the seed complete them. The data is loaded once per worker process, not once per trial.
    With ``sweep.stack``, a worker trains several of its trials together
    (``sweep.stacked_trials``) through the same config, data, store and records as here.
    """

    train: Mapping[str, Any] = field(default_factory=dict)
    report_every: int = 10
    runs_dir: str | None = None
    """Where finished runs are kept (``training.runs.RunStore``): a run the demo, a benchmark or
    an earlier sweep already trained with the same config and data is not trained again."""
    device: str = "cpu"
    """Where this worker trains its runs (``mutransfer.devices.resolve_device``). Not part of a
    run's identity: the same config on another device differs by float rounding only."""
    _sources: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    _fingerprints: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def config(self, params: Mapping[str, Any], width: int, seed: int) -> Any:
        from ..training.proxy import TrainConfig

        return TrainConfig.from_dict({**self.train, **params, "width": width, "seed": seed})

    def __call__(self, params: dict[str, Any], width: int, trial: TrialHandle) -> float:
        from ..training.proxy import train

        config = self.config(params, width, trial.seed)
        found = self.stored(config)
        if found is None:
            on_step = LossReports(trial, self.report_every)
            result = train(
                config, source=self.source(config), on_step=on_step, device=self.device
            ).to_dict()
            self.keep(config, result)  # a pruned run raised above: only whole runs are kept
        else:
            result = found
        self.record(trial, result, reused=found is not None)
        if result["diverged"] or result["val_loss"] is None:
            raise Diverged(result.get("reason") or "diverged")
        return float(result["val_loss"])

    @staticmethod
    def record(trial: TrialHandle, result: Mapping[str, Any], *, reused: bool) -> None:
        """What a seed's run leaves on its trial (``result``: a ``TrainResult.to_dict()``)."""
        if reused:
            trial.set_attr("reused_run", True)
        trial.set_attr("train_seconds", round(float(result["seconds"]), 3))
        trial.set_attr("flops", result["flops"])

    # ------------------------------------------------------------------ data and store
    def source(self, config: Any) -> Any:
        """The data of ``config`` (loaded once per model and corpus in this process)."""
        from ..training.proxy import load_source

        key = (config.model, config.data)
        if key not in self._sources:
            self._sources[key] = load_source(config)
        return self._sources[key]

    def stored(self, config: Any) -> dict[str, Any] | None:
        """The run store's result of ``config`` (``TrainResult.to_dict()``), or ``None``."""
        store = self._store(config)
        return store.load(config) if store is not None else None

    def keep(self, config: Any, result: dict[str, Any]) -> None:
        """Save a whole run (complete or diverged; never one stopped by the pruner)."""
        store = self._store(config)
        if store is not None:
            store.save_dict(config, result)

    def _store(self, config: Any) -> Any:
        if self.runs_dir is None:
            return None
        from ..training.runs import RunStore, source_fingerprint

        key = (config.model, config.data)
        if key not in self._fingerprints:  # a hash of the whole corpus: once per process
            self._fingerprints[key] = source_fingerprint(self.source(config))
        return RunStore(self.runs_dir, self._fingerprints[key])

    # ---------------------------------------------------------------------- stacking
    def stack_key(self, params: Mapping[str, Any], width: int) -> tuple[Any, ...] | None:
        """What two trials must share to be trained in one pack (``training.stacked.pack_key``:
        everything but the per-run hyperparameters); ``None`` when this trial is trained alone
        (``training.stacked.worth_stacking`` says no)."""
        from ..training.stacked import pack_key, worth_stacking

        config = self.config(params, width, 0)
        return pack_key(config) if worth_stacking(config) else None

    def trials_per_pack(
        self, params: Mapping[str, Any], width: int, seeds: int, memory_budget: int
    ) -> int:
        """How many trials like this one (``seeds`` runs each) fit in one pack (at least 1)."""
        from ..training.stacked import pack_size

        return max(1, pack_size(self.config(params, width, 0), memory_budget) // seeds)


def load_objective(
    spec: str,
    *,
    train: Mapping[str, Any] | None = None,
    report_every: int = 10,
    runs_dir: str | None = None,
    device: str = "cpu",
) -> Callable[..., float]:
    """Resolve ``"builtin"``, ``"file.py:function"`` or ``"package.module:function"``;
    ``device``: where the built-in trainer trains (a user's function chooses its own)."""
    if spec == BUILTIN:
        return TrainerObjective(dict(train or {}), report_every, runs_dir, device)
    check_device_for(spec, device)
    target, sep, func_name = spec.rpartition(":")
    if not sep or not target or not func_name:
        raise SweepError(
            f"objective {spec!r}: expected 'builtin', 'path/to/file.py:function' or "
            "'package.module:function'"
        )
    if target.endswith(".py"):
        module = _load_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SweepError(f"objective {spec!r}: cannot import {target!r}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise SweepError(f"objective {spec!r}: {target} has no function {func_name!r}")
    return func


def check_device_for(objective: str, device: str) -> None:
    """``device`` is the built-in trainer's: refuse it for a user's objective, which puts its
    model where it wants (silently ignoring it would leave a GPU sweep on the CPU)."""
    if device != "cpu":
        raise SweepError(
            f"device {device!r} is where the built-in trainer trains; the objective "
            f"{objective!r} is your own function and chooses its own device (e.g. from "
            "torch.cuda.is_available()): leave the device at 'cpu' (no --device)"
        )


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise SweepError(f"objective file {str(path)!r} does not exist")
    name = f"mutransfer_objective_{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise SweepError(f"objective file {str(path)!r} cannot be loaded as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module
