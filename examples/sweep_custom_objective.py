"""A µTransfer sweep over *your own* training code: the objective is a plain function.

The model here is a small MLP learning a fixed random "teacher" function (synthetic data, so the
example needs nothing but torch). The objective builds the model at the trial's width, makes it
width-aware with ``mutransfer.parametrize`` (µP against a base width of 32), trains it with the
trial's hyperparameters and returns the validation loss. It reports its loss as it goes, so a
pruner (``pruner = "median"``) can stop hopeless trials early.

Run it from Python (two worker processes, one study per width, results in ``runs/``)::

    python examples/sweep_custom_objective.py

or from the command line with the TOML next to this file, which names this function::

    mutransfer sweep examples/sweep_custom_objective.toml --workers 2
    mutransfer report examples/sweep_custom_objective.toml

Under µP the best learning rate is the same at every width (the report's curves line up).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import mutransfer
from mutransfer.sweep import Sweep, TrialHandle

BASE_WIDTH = 32
IN_FEATURES = 16
STEPS = 60
BATCH = 64


def make_mlp(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(IN_FEATURES, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 1),
    )


def teacher_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a fixed random function (the same teacher for every seed)."""
    teacher = torch.Generator().manual_seed(1234)
    w1 = torch.randn(IN_FEATURES, 32, generator=teacher) / math.sqrt(IN_FEATURES)
    w2 = torch.randn(32, 1, generator=teacher) / math.sqrt(32)
    x = torch.randn(n, IN_FEATURES, generator=torch.Generator().manual_seed(seed))
    return x, torch.tanh(x @ w1) @ w2


def objective(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
    """Train the MLP at ``width`` with ``params``; return the validation MSE."""
    torch.manual_seed(trial.seed)
    model = make_mlp(width)
    plan = mutransfer.parametrize(
        model,
        make_mlp,
        base_width=BASE_WIDTH,
        rules="mup",
        optimizer="adam",
        seed=trial.seed,
        output_multiplier=params.get("output_multiplier", 1.0),
    )
    optimizer = torch.optim.Adam(plan.param_groups(lr=params["lr"]))
    x, y = teacher_data(BATCH * STEPS, seed=trial.seed)
    x_val, y_val = teacher_data(512, seed=10_000)
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        loss = F.mse_loss(model(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 9:
            trial.report(step + 1, loss.item())  # lets a pruner stop this trial early
    with torch.no_grad():
        return F.mse_loss(model(x_val), y_val).item()  # nan/inf → recorded as diverged


def main() -> None:
    sweep = Sweep(
        "custom-mlp",
        widths=[32, 64, 128],
        space={"lr": {"log2": [-12, -2]}},
        objective=objective,
    )
    results = sweep.run(workers=2)
    print(results.table())
    target = results.transfer(to_width=1024)
    print(f"width 1024 uses the proxy's best point: {target.params}")


if __name__ == "__main__":
    main()
