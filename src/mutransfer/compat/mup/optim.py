"""``MuAdam``, ``MuAdamW``, ``MuSGD``: optimizers whose param groups carry the plan's scales.

Each parameter's LR and weight-decay scale come from the mutransfer plan of the model that owns
it (found by identity, see ``state.py``), so the optimizers work on parameters that mup cannot
see any more (after ``deepcopy``, ``to_empty``, ``fully_shard``).

The groups are built in mup's order (per input group: hidden weights by scale, then the
rest, with mup's trailing catch-all group even when empty), so an optimizer state dict saved by
mup's optimizer loads into these and the other way round.

Every group also carries ``lr_scale`` (its LR over the optimizer's ``lr=``), which mup's lack:
``mutransfer.scaled_lrs(opt, max_lr)`` then gives ``OneCycleLR`` per-group peaks, where
``OneCycleLR(max_lr=float)`` silently sets every group to the same LR and erases µP, and
``check_optimizer(opt)`` catches a scheduler or hand-made group that did.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any

import torch

from ...plan import scaled_lrs
from .state import MupCompatError, lookup

__all__ = [
    "MuAdam",
    "MuAdamW",
    "MuSGD",
    "check_optimizer",
    "mu_param_groups",
    "process_param_groups",
    "scaled_lrs",
]

# mup's group order within each input group, per family: groups of each category appear in the
# order their first parameter does; the last category always has one group, even when empty.
_CATEGORY_ORDER = {"adam": ("matrix", "vector"), "sgd": ("matrix", "vector", "fixed")}


def _category(role: str, family: str) -> str:
    if role == "hidden":
        return "matrix"
    if role == "scalar" and family == "sgd":
        return "fixed"
    return "vector"


def _default_lr(impl: Any) -> float | None:
    try:
        default = inspect.signature(impl).parameters["lr"].default
    except (KeyError, TypeError, ValueError):
        return None
    return float(default) if isinstance(default, int | float) else None


def process_param_groups(params: Iterable[Any], **kwargs: Any) -> list[dict[str, Any]]:
    """Drop-in for ``mup.optim.process_param_groups``: ``params`` as a list of param groups,
    each with an ``lr`` (``kwargs["lr"]`` where the group has none) and a ``weight_decay``
    (``kwargs.get("weight_decay", 0.0)``).

    A list of tensors becomes one group. Unlike mup, the caller's group dicts are copied, not
    filled in place, and a missing LR or an empty list gets an error saying so (mup: a
    ``KeyError`` / ``IndexError``).
    """
    groups = list(params)
    if not groups:
        raise ValueError("the optimizer got an empty parameter list")
    if not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    result = []
    for group in groups:
        if not isinstance(group, dict):
            raise TypeError(
                "param groups must all be dicts (or all tensors), got a mix: "
                f"{type(group).__name__} after a dict"
            )
        group = dict(group)
        if "lr" not in group:
            if kwargs.get("lr") is None:
                raise TypeError(
                    "no learning rate: pass lr= to the optimizer (or an 'lr' in every param group)"
                )
            group["lr"] = kwargs["lr"]
        group.setdefault("weight_decay", kwargs.get("weight_decay", 0.0))
        result.append(group)
    return result


def mu_param_groups(
    params: Iterable[Any], family: str, *, lr: float | None = None, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Split ``params`` (tensors or param-group dicts) into groups with the plan's scales.

    ``lr_scale`` is each group's LR over ``lr`` (the optimizer's base LR); with ``lr=0`` (a
    coordinate check at LR 0, say), where that ratio is undefined, it is the plan's scale.
    """
    order = _CATEGORY_ORDER[family]
    result: list[dict[str, Any]] = []
    for group in process_param_groups(params, lr=lr, weight_decay=weight_decay):
        members = group["params"]
        members = [members] if isinstance(members, torch.Tensor) else list(members)
        base_lr = group["lr"]
        base_wd = group["weight_decay"]
        rest = {k: v for k, v in group.items() if k != "params"}
        split: dict[str, dict[tuple[float, float], list[torch.Tensor]]] = {c: {} for c in order}
        for p in members:
            state, name = lookup(p, f"Mu{family.capitalize()}")
            entry = state.plan(family)[name]
            key = (entry.lr_scale, entry.wd_scale)
            split[_category(entry.role, family)].setdefault(key, []).append(p)
        split[order[-1]].setdefault((1.0, 1.0), [])
        reference = lr if lr is not None else base_lr
        ratio = base_lr / reference if reference else 1.0
        for category in order:
            for (lr_scale, wd_scale), ps in split[category].items():
                result.append(
                    {
                        **rest,
                        "params": ps,
                        "lr": base_lr * lr_scale,
                        "weight_decay": base_wd * wd_scale,
                        "lr_scale": ratio * lr_scale,
                    }
                )
    return result


def MuAdam(
    params: Iterable[Any], impl: type[torch.optim.Optimizer] = torch.optim.Adam, **kwargs: Any
) -> torch.optim.Optimizer:
    """Drop-in for ``mup.MuAdam``: ``impl`` (any Adam-like optimizer) with µP param groups.

    Hidden weights get LR / m_in and weight decay × m_in; the rest keeps the base values.
    """
    return _build(params, impl, "adam", kwargs)


def MuAdamW(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """Drop-in for ``mup.MuAdamW``: ``MuAdam`` with ``torch.optim.AdamW``."""
    return _build(params, torch.optim.AdamW, "adam", kwargs)


def MuSGD(
    params: Iterable[Any], impl: type[torch.optim.Optimizer] = torch.optim.SGD, **kwargs: Any
) -> torch.optim.Optimizer:
    """Drop-in for ``mup.MuSGD``: ``impl`` (any SGD-like optimizer) with µP param groups.

    Hidden weights get LR × m_out/m_in, tensors with one width dimension LR × its multiplier.
    """
    return _build(params, impl, "sgd", kwargs)


def _build(
    params: Iterable[Any], impl: Any, family: str, kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    lr = kwargs.get("lr", _default_lr(impl))
    groups = mu_param_groups(
        params, family, lr=lr, weight_decay=float(kwargs.get("weight_decay", 0.0))
    )
    optimizer: torch.optim.Optimizer = impl(groups, **kwargs)
    optimizer.register_load_state_dict_post_hook(functools.partial(_restore_lr_scales, family))
    return optimizer


def _restore_lr_scales(family: str, optimizer: torch.optim.Optimizer) -> None:
    """After loading a state dict saved by mup's optimizer (whose groups have no ``lr_scale``:
    torch keeps the saved group dicts), put the plan's scales back."""
    for group in optimizer.param_groups:
        if "lr_scale" in group:
            continue
        if not group["params"]:
            group["lr_scale"] = 1.0  # mup's trailing catch-all group: base LR
            continue
        state, name = lookup(group["params"][0], "load_state_dict")
        group["lr_scale"] = state.plan(family)[name].lr_scale


def check_optimizer(optimizer: torch.optim.Optimizer, lr: float | None = None) -> None:
    """Raise if the optimizer's groups lost their µP LR ratios (e.g. ``OneCycleLR(max_lr=x)``).

    See ``mutransfer.Plan.check_optimizer``; ``lr`` is the current base LR if known.
    """
    first = next((p for g in optimizer.param_groups for p in g["params"]), None)
    if first is None:
        raise MupCompatError("the optimizer has no parameters")
    state, _ = lookup(first, "check_optimizer")
    state.plan("adam").check_optimizer(optimizer, lr)
