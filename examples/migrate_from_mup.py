"""A microsoft/mup training script, migrated to mutransfer by changing one import.

Before (microsoft/mup)::

    import mup

After (this file)::

    from mutransfer.compat import mup

Every other line is what a mup user already writes: base shapes from a base and a delta model
(saved to a .bsh file), a ``MuReadout``, ``mup.init``, ``MuAdamW``. Two things that break under
mup work here: an EMA copy made with ``copy.deepcopy`` (mup's width metadata lives on the
parameters and is lost by the copy) and ``OneCycleLR`` (with ``max_lr=mup.scaled_lrs(...)``
every group keeps its µP learning rate; ``OneCycleLR(max_lr=float)`` erases them, under mup
silently, here ``mup.check_optimizer`` says so).

Run: ``python examples/migrate_from_mup.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import copy
import os
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.compat import mup  # was: import mup


class MLP(nn.Module):
    def __init__(self, width: int, in_features: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, width)
        self.hidden = nn.Linear(width, width)
        self.out = mup.MuReadout(width, classes)  # µP readout: output × 1/width_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(F.relu(self.inp(x)))))


def data(steps: int, batch: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed random teacher: labels are the argmax of a random linear map."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(16, 4, generator=g)
    xs = [torch.randn(batch, 16, generator=g) for _ in range(steps)]
    return [(x, (x @ teacher).argmax(-1)) for x in xs]


def main(width: int = 256, base_width: int = 32, steps: int = 60, lr: float = 3e-3) -> dict:
    torch.manual_seed(0)
    with torch.device("meta"):  # shapes only: free to build
        base, delta = MLP(base_width), MLP(2 * base_width)
    with tempfile.TemporaryDirectory() as tmp:
        bsh = os.path.join(tmp, "mlp.bsh")
        mup.make_base_shapes(base, delta, savefile=bsh)  # the same file format as mup's
        model = mup.set_base_shapes(MLP(width), bsh)
    for name, p in model.named_parameters():
        if name in ("inp.weight", "hidden.weight"):
            mup.init.kaiming_normal_(p, nonlinearity="relu")  # hidden std shrinks like 1/√m

    opt = mup.MuAdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=mup.scaled_lrs(opt, lr), total_steps=steps
    )
    mup.check_optimizer(opt)  # raises if a scheduler had flattened the per-group LRs
    ema = copy.deepcopy(model)  # still parametrized: nothing lived on the parameters

    losses = []
    for x, y in data(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 0.1)
        losses.append(loss.item())

    x, y = data(1)[0]
    with torch.no_grad():
        ema_loss = F.cross_entropy(ema(x), y).item()
    print(mup.plan_of(model).table())  # role, LR scale and multiplier of every tensor
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} (EMA model: {ema_loss:.3f})")
    return {"losses": losses, "ema_loss": ema_loss, "lrs": [g["lr"] for g in opt.param_groups]}


if __name__ == "__main__":
    main()
