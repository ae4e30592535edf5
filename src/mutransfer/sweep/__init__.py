"""Sweeps that scale out: the µTransfer workflow on Optuna.

Tune hyperparameters on small proxy widths with many cheap trials — one process or many, one
machine or many — without losing finished work, then transfer the best point to the target width::

    from mutransfer.sweep import Sweep

    sweep = Sweep("gpt-lr", widths=[32, 64, 128], space={"lr": {"log2": [-10, -4]}},
                  train={"steps": 200})          # the built-in trainer, or objective=my_fn
    results = sweep.run(workers=2)
    print(results.table())                       # best point per width
    target = results.transfer(to_width=1024)     # target config + µP plan
    results.report("runs/gpt-lr-report")         # figures: is the optimum stable?

``Sweep(..., strategy="independent")`` runs u-µP's independent search instead of the whole grid:
the LR alone, then each other hyperparameter alone at the best LR, then their combination.

Names are imported lazily so that ``mutransfer --help`` does not load Optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Sweep, run_sweep
    from .config import PrunerSpec, SweepSpec, load_config
    from .errors import ConfigError, Diverged, SweepError
    from .objective import CallbackHandle, TrainerObjective, TrialHandle
    from .report import Report, make_report
    from .results import SweepResults, TrialRecord
    from .space import Dim, Space
    from .transfer import Transfer

_EXPORTS = {
    "Sweep": "api",
    "run_sweep": "api",
    "PrunerSpec": "config",
    "SweepSpec": "config",
    "load_config": "config",
    "ConfigError": "errors",
    "Diverged": "errors",
    "SweepError": "errors",
    "CallbackHandle": "objective",
    "TrainerObjective": "objective",
    "TrialHandle": "objective",
    "Report": "report",
    "make_report": "report",
    "SweepResults": "results",
    "TrialRecord": "results",
    "Dim": "space",
    "Space": "space",
    "Transfer": "transfer",
}

__all__ = [
    "CallbackHandle",
    "ConfigError",
    "Dim",
    "Diverged",
    "PrunerSpec",
    "Report",
    "Space",
    "Sweep",
    "SweepError",
    "SweepResults",
    "SweepSpec",
    "TrainerObjective",
    "Transfer",
    "TrialHandle",
    "TrialRecord",
    "load_config",
    "make_report",
    "run_sweep",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mutransfer.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
