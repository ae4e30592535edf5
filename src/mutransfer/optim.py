"""Adam-atan2: Adam without ε (Everett et al. 2024, "Scaling Exponents Across Parameterizations
and Optimizers", §4.3).

Adam's ε must shrink with width under µP (hidden gradients shrink like 1/width), which the plan
handles by scaling ε per tensor. Replacing ``m / (√v + ε)`` by ``atan2(m, √v)`` removes ε
altogether: the update is exactly invariant to the scale of the gradient, so no ε schedule is
needed at any width and absorbed multipliers are exact.

Written here rather than taken from a package because torch has no such optimizer and the
algorithm is a few lines of Adam; a dependency would bring more surface than code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class AdamAtan2(torch.optim.Optimizer):
    """Adam with ``a · atan2(m̂, b · √v̂)`` as the update (decoupled weight decay as in AdamW).

    ``a = 1.27`` and ``b = 1`` follow the paper: atan2 saturates at ±π/2, and
    a · atan2(x, 1) ≈ x for small x, so the LR means what it means for Adam.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        a: float = 1.27,
        b: float = 1.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay, "a": a, "b": b}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1.0 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                m_hat = m / (1.0 - beta1**t)
                v_hat = v / (1.0 - beta2**t)
                if group["weight_decay"]:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                update = torch.atan2(m_hat, group["b"] * v_hat.sqrt())
                p.add_(update, alpha=-group["lr"] * group["a"])
        return loss


# --------------------------------------------------------------------- the optimizer table
class BuiltinOptimizer:
    """One optimizer the built-in runs know by name: its display name and how to get its class.

    The one table of optimizer names for the trainers, the coordinate check and the reports
    (the µP rule of each optimizer *family* lives in ``rules``).
    """

    def __init__(self, name: str, display: str, load: Callable[[], Any]) -> None:
        self.name = name
        self.display = display
        self._load = load

    def cls(self) -> Any:
        """The optimizer class (Lion is imported from lion-pytorch on first use)."""
        return self._load()


def _lion() -> Any:
    try:
        from lion_pytorch import Lion
    except ImportError:
        raise ImportError(
            "optimizer='lion' needs the package lion-pytorch: pip install lion-pytorch"
        ) from None
    return Lion


OPTIMIZERS: dict[str, BuiltinOptimizer] = {
    o.name: o
    for o in (
        BuiltinOptimizer("adamw", "AdamW", lambda: torch.optim.AdamW),
        BuiltinOptimizer("adam", "Adam", lambda: torch.optim.Adam),
        BuiltinOptimizer("sgd", "SGD", lambda: torch.optim.SGD),
        BuiltinOptimizer("lion", "Lion", _lion),
        BuiltinOptimizer("muon", "Muon (hidden) + AdamW", lambda: torch.optim.Muon),
    )
}
"""The optimizers known by name, in the order the help texts list them."""


def optimizer_class(name: str, allowed: Iterable[str] | None = None) -> Any:
    """The class of a named optimizer; a clear ``ValueError`` for an unknown name."""
    key = name.lower()
    choices = list(allowed) if allowed is not None else list(OPTIMIZERS)
    if key not in choices:
        raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(choices)}")
    return OPTIMIZERS[key].cls()
