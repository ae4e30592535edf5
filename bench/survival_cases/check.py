"""One training step and its comparison with the reference step.

What a step records: the loss before the update (it depends on every forward multiplier: the
readout's 1/m, the attention logit scale) and each parameter's update ΔW (under Adam, the first
update is ±LR per entry, so a lost per-parameter LR scale shows up as a factor in ΔW's size).
Parameter names are normalised (``module.`` of DDP, ``_orig_mod.`` of ``torch.compile``
removed) and DTensor shards gathered, so every wrapper is compared with the plain reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

LOSS_TOL = 1e-4
"""Relative tolerance on the loss: float32 reorderings (compile, sharding) stay far below."""
UPDATE_TOL = 1e-2
"""Relative tolerance on ‖ΔW − ΔW_ref‖ / ‖ΔW_ref‖ per tensor. A lost LR scale is a factor ≥ √2
(the smallest width ratio it could be), i.e. an error ≥ 0.4; float noise flips at most the odd
near-zero gradient."""

PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.")


def clean_name(name: str) -> str:
    """A parameter name without the prefixes wrappers add."""
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
        name = name.replace("._orig_mod.", ".").replace("._checkpoint_wrapped_module.", ".")
    return name


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) parameter, detached, on CPU."""
    full_tensor = getattr(t, "full_tensor", None)
    out = full_tensor() if callable(full_tensor) else t
    return out.detach().cpu().clone()


@dataclass
class Step:
    """The loss before the step and every parameter's update, by clean name."""

    loss: float
    updates: dict[str, torch.Tensor] = field(default_factory=dict)


def step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    batch: Any,
    reduce_loss: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> Step:
    """One optimizer step on ``batch``; ``reduce_loss`` averages it across ranks if needed."""
    before = {clean_name(n): full(p) for n, p in model.named_parameters()}
    loss = loss_fn(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    after = {clean_name(n): full(p) for n, p in model.named_parameters()}
    value = reduce_loss(loss.detach().clone()).item()
    return Step(value, {n: after[n] - before[n] for n in before})


def compare(ref: Step, got: Step) -> dict[str, Any]:
    """``ok`` or ``wrong`` with the evidence: loss error and the worst update error."""
    loss_err = abs(got.loss - ref.loss) / max(abs(ref.loss), 1e-12)
    missing = sorted(set(ref.updates) - set(got.updates))
    if missing:
        return {"status": "wrong", "detail": f"parameters missing after the operation: {missing}"}
    worst, worst_name, ratio = 0.0, "", 1.0
    for name, d_ref in ref.updates.items():
        d_got = got.updates[name]
        scale = d_ref.norm().item()
        err = (d_got - d_ref).norm().item() / max(scale, 1e-30)
        if err > worst:
            worst, worst_name = err, name
            ratio = d_got.norm().item() / max(scale, 1e-30)
    ok = loss_err <= LOSS_TOL and worst <= UPDATE_TOL
    detail = f"loss rel. error {loss_err:.1e}, worst update rel. error {worst:.1e}"
    if worst > UPDATE_TOL:
        detail += f" on {worst_name} (update size × {ratio:.3g} of the reference)"
    return {
        "status": "ok" if ok else "wrong",
        "detail": detail,
        "loss_rel_error": loss_err if math.isfinite(loss_err) else None,
        "worst_update_rel_error": worst,
        "worst_update_param": worst_name,
    }


def failure(err: BaseException) -> dict[str, Any]:
    """A ``fails`` cell with the first line of the error."""
    text = f"{type(err).__name__}: {err}".strip().splitlines()[0]
    return {"status": "fails", "detail": text[:300]}
