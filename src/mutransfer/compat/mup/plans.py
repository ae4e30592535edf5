"""From mup's infshapes to mutransfer plans that reproduce mup's numbers.

microsoft/mup's rules, written as a mutransfer ``Rules`` table (``MUP_COMPAT``):

- Adam-like (``MuAdam``): hidden weights (two width dims) get LR / m_in and weight decay × m_in;
  everything else keeps the base LR. No ε scaling (mup has none).
- SGD-like (``MuSGD``): hidden weights LR × m_out/m_in, tensors with one width dim (input
  weights, readouts, biases, norm gains) LR × that dim's multiplier; weight decay inversely.
- The readout's 1/width forward multiplier is applied by ``MuReadout`` itself, as in mup, so the
  table has no multipliers; mup does not re-initialise weights either (``set_base_shapes`` only
  rescales a few tensors, see ``shape.py``), so the plan's init entries say "default".

Roles come from mutransfer's inference, which reads each weight's layout from the module that
owns it (mup assumes every weight is ``(fan_out, fan_in)``). For raw ``nn.Parameter`` s of
custom modules, whose layout no module type tells, the compat layer follows mup's convention
exactly (``set_base_shapes`` warns when one of them is a readout without a multiplier).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from typing import Any

from torch import nn

from ...build import parametrize
from ...plan import Plan, TensorPlan
from ...roles import RoleError, canonical_name, owner_layout
from ...rules import RoleRule, Rules, Scaling
from .infshape import InfShape
from .state import MupCompatError

FAMILIES = ("adam", "sgd")


def _adam() -> dict[str, RoleRule]:
    return {
        "input": RoleRule(),
        "hidden": RoleRule(init=Scaling(-0.5), lr=Scaling(-1.0), wd=Scaling(1.0)),
        "output": RoleRule(),
        "vector": RoleRule(),
        "scalar": RoleRule(),
    }


def _sgd() -> dict[str, RoleRule]:
    one_dim_out = RoleRule(lr=Scaling(0.0, 1.0), wd=Scaling(0.0, -1.0))
    return {
        "input": one_dim_out,
        "hidden": RoleRule(init=Scaling(-0.5), lr=Scaling(-1.0, 1.0), wd=Scaling(1.0, -1.0)),
        "output": RoleRule(lr=Scaling(1.0), wd=Scaling(-1.0)),
        "vector": one_dim_out,
        "scalar": RoleRule(),
    }


MUP_COMPAT = Rules(
    name="mup-compat",
    families={"adam": _adam(), "sgd": _sgd()},
    description=(
        "microsoft/mup 1.0 as a table: MuAdam/MuSGD learning rates and weight decay; the "
        "readout multiplier is applied by MuReadout."
    ),
)


def mup_scales(infshape: InfShape, family: str) -> tuple[float, float]:
    """(LR scale, weight-decay scale) that mup's MuAdam / MuSGD give a tensor of this shape."""
    ninf = infshape.ninf()
    if ninf > 2:
        raise MupCompatError(
            f"a tensor with {ninf} width dimensions ({infshape!r}) has no mup rule; declare its "
            "role with set_base_shapes(..., roles={name: 'hidden'})"
        )
    if family == "adam":
        if ninf == 2:
            m = infshape.width_mult()
            return 1.0 / m, m
        return 1.0, 1.0
    if ninf == 1:
        m = infshape.width_mult()
        return m, 1.0 / m
    if ninf == 2:
        ratio = infshape.fanin_fanout_mult_ratio()
        return 1.0 / ratio, ratio
    return 1.0, 1.0


def _fallback_roles(
    model: nn.Module,
    infshapes: Mapping[str, InfShape],
    aliases: Mapping[str, str],
    user_patterns: list[str],
) -> dict[str, str]:
    """Roles, by mup's convention, of width tensors whose owner has no known layout."""
    modules = {canonical_name(n): m for n, m in model.named_modules(remove_duplicate=False)}
    roles: dict[str, str] = {}
    for name, primary in aliases.items():
        shape = infshapes[primary]
        if shape.ninf() == 0 or any(fnmatch.fnmatchcase(name, p) for p in user_patterns):
            continue
        parent, _, leaf = name.rpartition(".")
        if owner_layout(modules.get(parent), leaf, len(shape)) is not None:
            continue
        if shape.ninf() >= 2:
            roles[name] = "hidden"
        elif len(shape) == 2:  # mup's convention: (fan_out, fan_in)
            roles[name] = "input" if shape[0].isinf() else "output"
        else:
            roles[name] = "vector"
    return roles


def identity_plan(
    model: nn.Module, infshapes: Mapping[str, InfShape], aliases: Mapping[str, str], family: str
) -> Plan:
    """No width dimension anywhere (``set_base_shapes(model, None)``): every scale is 1."""
    by_primary: dict[str, list[str]] = {}
    for name, primary in aliases.items():
        by_primary.setdefault(primary, []).append(name)
    tensors = {
        primary: TensorPlan(
            name=primary,
            shape=tuple(d.dim or 0 for d in infshapes[primary]),
            role="scalar",
            m_in=1.0,
            m_out=1.0,
            m_depth=1.0,
            init_std=1.0,
            lr_scale=1.0,
            wd_scale=1.0,
            eps_scale=1.0,
            multiplier=1.0,
            init="default",
            aliases=tuple(n for n in names if n != primary),
        )
        for primary, names in by_primary.items()
    }
    return Plan(rules=MUP_COMPAT, family=family, mode="absorbed", tensors=tensors)


def build_plans(
    model: nn.Module,
    infshapes: Mapping[str, InfShape],
    *,
    roles: Mapping[str, str] | None = None,
    layouts: Mapping[str, str] | None = None,
) -> dict[str, Plan]:
    """One plan per optimizer family for ``model``, whose width dims ``infshapes`` gives."""
    primary_of: dict[int, str] = {}
    for raw, p in model.named_parameters():
        primary_of[id(p)] = canonical_name(raw)
    aliases = {
        canonical_name(raw): primary_of[id(p)]
        for raw, p in model.named_parameters(remove_duplicate=False)
    }
    if not any(s.ninf() for s in infshapes.values()):
        return {fam: identity_plan(model, infshapes, aliases, fam) for fam in FAMILIES}

    # mup's width dims, as a base and a delta: finite dims are the model's own sizes
    base: dict[str, list[int]] = {}
    delta: dict[str, list[int]] = {}
    for name, primary in aliases.items():
        shape = infshapes[primary]
        base[name] = [d.base_dim if d.base_dim is not None else int(d.dim or 0) for d in shape]
        delta[name] = [2 * d.base_dim if d.base_dim is not None else int(d.dim or 0) for d in shape]

    user_roles = dict(roles or {})
    user_layouts = dict(layouts or {})
    fallback = _fallback_roles(model, infshapes, aliases, [*user_roles, *user_layouts])
    plans: dict[str, Plan] = {}
    for family in FAMILIES:
        plan = _parametrize_quietly(
            model,
            base,
            delta,
            family,
            roles={**fallback, **user_roles},
            layouts=user_layouts,
        )
        for name in fallback:
            primary = aliases[name]
            lr, wd = mup_scales(infshapes[primary], family)
            entry = plan.tensors[primary]
            plan.tensors[primary] = dataclasses.replace(entry, lr_scale=lr, wd_scale=wd)
        # mup keeps the modules' own init (set_base_shapes only rescales a few tensors), and so
        # does the compat layer: the plan says so rather than show an init it never applies
        plan.tensors = {k: dataclasses.replace(t, init="default") for k, t in plan.tensors.items()}
        plans[family] = plan
    return plans


def _parametrize_quietly(
    model: nn.Module,
    base: Mapping[str, list[int]],
    delta: Mapping[str, list[int]],
    family: str,
    **kwargs: Any,
) -> Plan:
    """``parametrize`` without touching attention or init: mup leaves the attention scale to
    the user's own code, and keeps the model's own init (``set_base_shapes`` only rescales a
    few tensors, see ``shape._rescale``). ``base_init="rules"``: the plan's init entries are
    never applied here (they say "default"), so there is nothing to measure on the model —
    reading its own init would cost a pass over every tensor and warn about meta bases."""
    try:
        plan = parametrize(
            model,
            base,
            MUP_COMPAT,
            family,
            delta=delta,
            init=False,
            attention=False,
            base_init="rules",
            **kwargs,
        )
    except RoleError as exc:
        raise MupCompatError(
            f"{exc} (set_base_shapes accepts roles= and layouts= as mutransfer.parametrize does)"
        ) from exc
    plan._model_ref = None
    return plan
