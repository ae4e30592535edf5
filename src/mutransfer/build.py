"""Building a plan: ``parametrize(model, base, rules, optimizer)``.

Infers the roles (``roles.py``), looks up each role's rule (``rules.py``), folds or hooks the
forward multipliers, finds attention modules and residual branches, and returns the ``Plan``
(``plan.py``), already attached to the model and (by default) with the model initialised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from . import ops
from .own_init import BaseInit, OwnInit, declared_rules, has_values, own_init_at_base
from .plan import AttentionPlan, Mode, ModuleScale, Plan, PlanError, TensorPlan
from .roles import (
    DepthMap,
    RoleError,
    Shapes,
    TensorRole,
    canonical_name,
    check_patterns_used,
    infer_roles,
    named_shapes,
)
from .rules import (
    FAMILY_ALGEBRA,
    FamilyAlgebra,
    Rules,
    UnknownOptimizerError,
    get_rules,
    optimizer_family,
)


def _shapes_of(spec: Any, what: str) -> dict[str, tuple[int, ...]]:
    if isinstance(spec, nn.Module):
        return named_shapes(spec)
    if isinstance(spec, Mapping):
        try:
            return {canonical_name(str(k)): tuple(int(d) for d in v) for k, v in spec.items()}
        except (TypeError, ValueError):
            raise TypeError(
                f"{what} given as a mapping must map parameter names to shapes (lists of ints)"
            ) from None
    raise TypeError(
        f"{what} must be an nn.Module (e.g. built on device='meta'), a mapping of parameter "
        "names to shapes, or (for base) a width factory with base_width=; "
        f"got {type(spec).__name__}"
    )


def build_on_meta(factory: Callable[[int], nn.Module], width: int) -> nn.Module:
    with torch.device("meta"):
        module = factory(width)
    if not isinstance(module, nn.Module):
        raise TypeError(f"the width factory returned {type(module).__name__}, not an nn.Module")
    return module


# Measured own inits of width factories' bases: a coordinate check or a sweep builds many plans
# from one factory, and the base it builds for real to measure is the same every time.
_FACTORY_BASES: weakref.WeakKeyDictionary[Any, dict[int, nn.Module]] = weakref.WeakKeyDictionary()


def _build_for_real(factory: Callable[[int], nn.Module], width: int) -> nn.Module:
    """The factory's model at ``width`` with its own init, drawn from a fixed seed.

    The global RNG is restored afterwards: measuring the base must not change what the user's
    next draw gives. Built once per factory and width (small: it is the base).
    """
    try:
        cached = _FACTORY_BASES.get(factory)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None and width in cached:
        return cached[width]
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(0)
        module = factory(width)
    if not isinstance(module, nn.Module):
        raise TypeError(f"the width factory returned {type(module).__name__}, not an nn.Module")
    with contextlib.suppress(TypeError):
        _FACTORY_BASES.setdefault(factory, {})[width] = module
    return module


def _rebuild_from_config(base: nn.Module) -> nn.Module | None:
    """A meta base that carries its ``config`` (the Hugging Face convention) built for real from
    it, so that its own init is read exactly at the base width; None for other modules."""
    config = getattr(base, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return None
    try:
        return _build_for_real(lambda _: type(base)(config), 0)
    except Exception:  # an unusual constructor: read the model's values instead
        return None


def _resolve_base_init(model: nn.Module, rules: Rules, base_init: BaseInit | None) -> BaseInit:
    """``model`` (read the model's own init) unless the rules or the model say otherwise."""
    if base_init is not None:
        if base_init not in ("model", "rules"):
            raise ValueError(f"base_init must be 'model' or 'rules', got {base_init!r}")
        return base_init
    if rules.init_base == "unit" or declared_rules(model):
        return "rules"  # u-µP has no base width; the reference models have no init of their own
    return "model"


def parametrize(
    model: nn.Module,
    base: nn.Module | Shapes | Callable[[int], nn.Module],
    rules: str | Rules = "mup",
    optimizer: Any = "adam",
    *,
    delta: nn.Module | Shapes | None = None,
    base_width: int | None = None,
    mode: Mode = "absorbed",
    roles: Mapping[str, str] | None = None,
    layouts: Mapping[str, str] | None = None,
    zero_init: Iterable[str] = (),
    residual_branches: Iterable[str] = (),
    base_head_dim: int | None = None,
    attention: bool = True,
    base_init: BaseInit | None = None,
    base_init_std: Mapping[str, float] | None = None,
    strict: bool = False,
    init: bool = True,
    seed: int | None = None,
    **constants: Any,
) -> Plan:
    """Make ``model`` width-aware: build its plan, install multipliers and (by default) init it.

    Args:
        model: the model to train (any ``nn.Module``; may be on ``meta``, then ``init=False``).
        base: the same architecture at base width (and base depth), an ``nn.Module`` — build it
            on ``device="meta"`` to pay nothing — or its parameter shapes as a mapping, or a
            width factory ``f(width) -> nn.Module`` together with ``base_width=``.
        rules: a preset name (``"sp"``, ``"mup"``) or a ``Rules`` object.
        optimizer: the optimizer family's name, class or instance (``"adam"``, ``torch.optim.SGD``).
        delta: the architecture at a second width; needed only when ``model`` has base width.
        mode: ``"absorbed"`` folds forward multipliers into init and per-tensor LR/ε/WD (no
            change to the model); ``"explicit"`` applies them as forward hooks. Tied
            embedding/readout multipliers are always explicit.
        roles / layouts: fnmatch patterns of parameter names → role / layout overrides.
        zero_init: patterns of parameters to initialise to zero (e.g. ``"*.q.weight"``).
        residual_branches: patterns of modules whose output is a residual branch; the depth
            rules scale them by ``m_L**residual_depth_exponent``.
        base_head_dim: head dimension at base width when ``base`` is given as shapes.
        attention: set the logit scale of attention modules (``head_dim`` + ``scaling``);
            ``False`` leaves attention to the model's own code (e.g. the mup compat layer).
        base_init: where each tensor's init std at the base width comes from: ``"model"``
            (default) reads the model's own init, so that at the base width the plan *is* the
            model as its authors wrote it (see ``mutransfer.own_init``); ``"rules"`` uses the
            rules' σ/√fan_in. σ (``init_std=``) multiplies either.
        base_init_std: fnmatch patterns of parameter names → their init std at the base width
            (replaces what ``base_init`` gives for those tensors).
        strict: raise ``PlanError`` (instead of warning) when a module computes attention
            with a scale the plan cannot set (e.g. a bare ``scaled_dot_product_attention``).
        init: initialise the model now (skipped automatically on ``meta``).
        seed: seed for that initialisation.
        **constants: tunable constants of the rules, e.g. ``output_multiplier=2.0``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"parametrize() needs the model as an nn.Module, got {type(model).__name__}"
        )
    rules_obj = get_rules(rules)
    if constants:
        unknown = [k for k in constants if k not in {f.name for f in dataclasses.fields(Rules)}]
        if unknown:
            raise TypeError(f"unknown parametrize() argument(s): {', '.join(unknown)}")
        rules_obj = rules_obj.with_(**constants)
    family = optimizer_family(optimizer)
    rules_obj.rule(family, "hidden")  # raises UnknownOptimizerError naming the known families
    if family not in FAMILY_ALGEBRA:
        raise UnknownOptimizerError(
            f"optimizer family {family!r} has rules but no absorption algebra; add it to "
            "mutransfer.rules.FAMILY_ALGEBRA"
        )
    if mode not in ("absorbed", "explicit"):
        raise ValueError(f"mode must be 'absorbed' or 'explicit', got {mode!r}")

    init_from = _resolve_base_init(model, rules_obj, base_init)
    base_module: nn.Module | None = None
    measured_base: nn.Module | None = None
    if callable(base) and not isinstance(base, nn.Module):
        if base_width is None:
            raise TypeError("base given as a width factory needs base_width=")
        base_module = build_on_meta(base, base_width)
        if delta is None:
            delta = build_on_meta(base, 2 * base_width)
        if init_from == "model" and not declared_rules(base_module):
            measured_base = _build_for_real(base, base_width)
    elif isinstance(base, nn.Module):
        base_module = base
        if init_from == "model":
            measured_base = base if has_values(base) else _rebuild_from_config(base)
    base_shapes = _shapes_of(base if base_module is None else base_module, "base")
    delta_shapes = _shapes_of(delta, "delta") if delta is not None else None

    tensor_roles = infer_roles(model, base_shapes, delta_shapes, roles=roles, layouts=layouts)
    all_names = [n for r in tensor_roles.values() for n in r.names]
    zero_patterns = list(zero_init)
    if zero_patterns:
        check_patterns_used("zero_init", {p: True for p in zero_patterns}, all_names)
    std_overrides = dict(base_init_std or {})
    check_patterns_used("base_init_std", std_overrides, all_names)
    own: dict[str, OwnInit] = {}
    if init_from == "model":
        own = own_init_at_base(model, tensor_roles, measured_base)
    modules = {canonical_name(n): m for n, m in model.named_modules()}
    algebra = FAMILY_ALGEBRA[family]
    tensors: dict[str, TensorPlan] = {}
    module_scales: dict[str, ModuleScale] = {}
    for name, role in tensor_roles.items():
        own_init = own.get(name)
        override = next(
            (
                v
                for p, v in std_overrides.items()
                if any(fnmatch.fnmatchcase(n, p) for n in role.names)
            ),
            None,
        )
        if override is not None:
            own_init = OwnInit(float(override), None, "base_init_std")
        tensors[name] = _tensor_plan(
            role, rules_obj, family, algebra, mode, zero_patterns, modules, module_scales, own_init
        )

    _add_residual_scales(model, base_shapes, rules_obj, residual_branches, module_scales)
    delta_module = delta if isinstance(delta, nn.Module) else None
    attention_plans = (
        _attention_plans(model, base_module, delta_module, rules_obj, base_head_dim)
        if attention
        else {}
    )
    if attention and rules_obj.attention != "sp":
        _report_unscaled_attention(model, attention_plans, strict)
    plan = Plan(
        rules=rules_obj,
        family=family,
        mode=mode,
        tensors=tensors,
        module_scales=module_scales,
        attention=attention_plans,
        base_shapes=dict(base_shapes),
    )
    plan._model_ref = weakref.ref(model)
    plan.attach(model)
    on_meta = any(p.is_meta for p in model.parameters())
    if init and not on_meta:
        plan.init_(model, seed=seed)
    return plan


def _tensor_plan(
    role: TensorRole,
    rules: Rules,
    family: str,
    algebra: FamilyAlgebra,
    mode: Mode,
    zero_patterns: Sequence[str],
    modules: Mapping[str, nn.Module],
    module_scales: dict[str, ModuleScale],
    own: OwnInit | None = None,
) -> TensorPlan:
    rule = rules.rule(family, role.role)
    m = role.scaling_args
    init: Literal["normal", "zeros", "ones", "default"] = "normal"
    if own is None or own.source == "rules":
        source = "rules"
        base_std = 1.0 if rules.init_base == "unit" else 1.0 / math.sqrt(role.base_fan_in)
        if len(role.shape) <= 1:
            init = "zeros" if role.name.rpartition(".")[2] == "bias" else "default"
    else:
        source = own.source
        base_std = own.std
        if own.constant is not None:
            init = {0.0: "zeros", 1.0: "ones"}.get(own.constant, "default")  # type: ignore[assignment]
        elif not own.centered:
            init = "default"  # e.g. gains drawn around 1: the module's own init keeps them
    init_std = rules.sigma(role.role) * base_std * rule.init(*m)
    lr_scale = rule.lr(*m) * rules.lr_multiplier(role.role)
    eps_scale = rule.eps(*m)
    # the table's wd exponents are for coupled decay; independent decay is the same per step
    # at every width and depth (and invariant to absorbed multipliers)
    independent_wd = rules.weight_decay == "independent"
    wd_scale = 1.0 if independent_wd else rule.wd(*m)
    multiplier = rule.multiplier(*m)
    if role.role == "input":
        multiplier *= rules.input_multiplier
    elif role.role == "output":
        multiplier *= rules.output_multiplier

    if any(fnmatch.fnmatchcase(n, p) for p in zero_patterns for n in role.names):
        init = "zeros"
    if rules.zero_init_readout and role.is_tied and "output" in role.tied_roles:
        warnings.warn(
            f"zero_init_readout does not apply to {role.name!r}: the readout is tied to the "
            "input embedding, and zeroing it would zero the embedding too. It keeps its init; "
            "untie the readout to zero-initialise it, or tune output_multiplier instead.",
            UserWarning,
            stacklevel=4,
        )
    if role.role == "output" and rules.zero_init_readout and not role.is_tied:
        init = "zeros"

    absorbed = 1.0
    if role.is_tied:
        # One tensor, two uses: embedding (input multiplier) and readout (output multiplier).
        # Neither can be folded into the shared weight, so both become hooks on their modules.
        alias_roles: dict[str, str] = role.extra["alias_roles"]
        readout_rule = rules.rule(family, "output")
        # the readout sees the embedding matrix transposed: its fan-in is the embedding's fan-out
        out_mult = rules.output_multiplier * readout_rule.multiplier(
            role.m_out, 1.0, role.m_depth, role.m_out * role.base_fan_out, 1.0
        )
        for alias, alias_role in alias_roles.items():
            owner = alias.rpartition(".")[0]
            if alias_role == "output" and out_mult != 1.0:
                _add_scale(
                    module_scales, modules, owner, "input", out_mult, "tied readout multiplier"
                )
            elif alias_role == "input" and multiplier != 1.0:
                _add_scale(module_scales, modules, owner, "output", multiplier, "input multiplier")
        multiplier = 1.0
    elif multiplier != 1.0 and mode == "absorbed" and init != "default":
        absorbed = multiplier
        init_std *= multiplier
        lr_scale *= multiplier**algebra.lr_power
        eps_scale *= multiplier**algebra.eps_power
        if not independent_wd:
            wd_scale *= multiplier**algebra.wd_power
        multiplier = 1.0
    elif multiplier != 1.0:
        owner = role.name.rpartition(".")[0]
        kind: Literal["input", "output"] = "output" if role.role == "input" else "input"
        module = modules.get(owner)
        if isinstance(module, nn.Embedding | nn.EmbeddingBag):
            kind = "output"
        _add_scale(module_scales, modules, owner, kind, multiplier, f"{role.role} multiplier")
    return TensorPlan(
        name=role.name,
        shape=role.shape,
        role=role.role,
        m_in=role.m_in,
        m_out=role.m_out,
        m_depth=role.m_depth,
        init_std=init_std,
        lr_scale=lr_scale,
        wd_scale=wd_scale,
        eps_scale=eps_scale,
        multiplier=multiplier,
        absorbed=absorbed,
        init=init,
        aliases=role.aliases,
        tied_roles=role.tied_roles,
        init_source=source,
        alias_roles=tuple(role.extra["alias_roles"][n] for n in role.names) if role.is_tied else (),
    )


_HOOKABLE_INPUT = (nn.Linear, nn.modules.conv._ConvNd)


def _add_scale(
    module_scales: dict[str, ModuleScale],
    modules: Mapping[str, nn.Module],
    owner: str,
    kind: Literal["input", "output"],
    multiplier: float,
    reason: str,
) -> None:
    module = modules.get(owner)
    if module is None:
        raise RoleError(f"cannot apply a multiplier to {owner!r}: no such module")
    if kind == "input" and not isinstance(module, _HOOKABLE_INPUT):
        raise RoleError(
            f"the {reason} of {owner!r} ({type(module).__name__}) can only be applied as a hook "
            "on a Linear or Conv module; use mode='absorbed', or apply plan.forward[...] in the "
            "model with mutransfer.ops.scale"
        )
    if owner in module_scales:
        prev = module_scales[owner]
        multiplier *= prev.multiplier
        reason = f"{prev.reason}; {reason}"
    module_scales[owner] = ModuleScale(owner, kind, multiplier, reason)


def _add_residual_scales(
    model: nn.Module,
    base_shapes: Shapes,
    rules: Rules,
    patterns: Iterable[str],
    module_scales: dict[str, ModuleScale],
) -> None:
    patterns = list(patterns)
    if not patterns:
        return
    depth = DepthMap(named_shapes(model), base_shapes)
    matched = False
    for name, module in model.named_modules():
        key = canonical_name(name)
        if not any(fnmatch.fnmatchcase(key, p) for p in patterns):
            continue
        matched = True
        m_depth = depth.depth_multiplier(key + ".x")
        multiplier = m_depth**rules.residual_depth_exponent
        if multiplier != 1.0:
            module_scales[key] = ModuleScale(key, "output", multiplier, "residual branch (depth)")
        del module
    if not matched:
        raise RoleError(
            f"residual_branches patterns {patterns} match no module; use names from "
            "model.named_modules(), e.g. 'blocks.*.attn'"
        )


HEAD_DIM_ATTRIBUTES = ("head_dim", "attention_head_size", "head_size", "key_value_proj_dim")
"""Names under which attention modules expose their head dimension: Llama-style ``head_dim``,
BERT's ``attention_head_size``, GPT-NeoX's ``head_size``, T5's ``key_value_proj_dim``."""


def attention_head_dim(module: nn.Module) -> int | None:
    """The head dimension of an attention module whose logit scale is a float ``scaling``
    attribute (the Hugging Face convention, which the reference GPT follows) or of torch's
    ``nn.MultiheadAttention`` (rescaled through ``ops.ScaledMultiheadAttention``); else None."""
    if isinstance(module, nn.MultiheadAttention):
        return int(module.head_dim)
    if not isinstance(getattr(module, "scaling", None), float):
        return None
    for attr in HEAD_DIM_ATTRIBUTES:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _attention_plans(
    model: nn.Module,
    base: nn.Module | None,
    delta: nn.Module | None,
    rules: Rules,
    base_head_dim: int | None,
) -> dict[str, AttentionPlan]:
    """The logit scale of every attention module that exposes a float ``scaling``.

    µP scales the logits by 1/d relative to the model's own scale at the base width:
    ``α · s_base · d_base/d``. For the usual s = 1/√d that is ``α·√d_base/d``; a model with
    another convention (T5 folds 1/√d into the query init and has s = 1) keeps its own at the
    base. SP follows the model's own law across widths (read from ``delta`` or the model).
    """
    base_modules = _named_modules(base)
    delta_modules = _named_modules(delta)
    plans: dict[str, AttentionPlan] = {}
    for name, module in model.named_modules():
        head_dim = attention_head_dim(module)
        if head_dim is None:
            continue
        key = canonical_name(name)
        base_mod = _counterpart(base_modules, key, module)
        base_dim = base_head_dim if base_head_dim is not None else attention_head_dim(base_mod)
        if base_dim is None:
            raise RoleError(
                f"attention module {key!r} has head dimension {head_dim} but the base head "
                "dimension is unknown (base given as shapes); pass base_head_dim="
            )
        base_scale = _own_scaling(base_mod, base_dim) if base_mod is not None else None
        if base_scale is None:
            base_scale = 1.0 / math.sqrt(base_dim)
        own_law = _own_scale_law(module, head_dim, base_dim, base_scale, delta_modules, key)
        if rules.attention == "mup":
            scale = rules.attention_multiplier * base_scale * base_dim / head_dim
        elif rules.attention == "sp":
            scale = rules.attention_multiplier * base_scale * (head_dim / base_dim) ** own_law
        else:
            scale = ops.attention_scale(
                head_dim, kind=rules.attention, multiplier=rules.attention_multiplier
            )
        plans[key] = AttentionPlan(key, head_dim, base_dim, scale)
    return plans


def _named_modules(module: nn.Module | None) -> dict[str, nn.Module]:
    return {canonical_name(n): m for n, m in module.named_modules()} if module is not None else {}


def _counterpart(modules: Mapping[str, nn.Module], key: str, module: nn.Module) -> Any:
    """The module of the same name in a base (or delta), or, in a deeper model, any attention
    module of the same type there."""
    found = modules.get(key)
    if found is None and modules:
        found = next((m for m in modules.values() if type(m) is type(module)), None)
    return found


def _own_scale_law(
    module: nn.Module,
    head_dim: int,
    base_dim: int,
    base_scale: float,
    delta_modules: Mapping[str, nn.Module],
    key: str,
) -> float:
    """The exponent p of the model's own logit scale s(d) = s_base·(d/d_base)^p (−½ for 1/√d),
    measured between the base and a second width (``delta``, else the model itself)."""
    other = _counterpart(delta_modules, key, module)
    for candidate in (other, module):
        dim = attention_head_dim(candidate) if candidate is not None else None
        scale = _own_scaling(candidate, dim) if dim is not None else None
        if dim is not None and dim != base_dim and scale is not None and scale > 0:
            return math.log(scale / base_scale) / math.log(dim / base_dim)
    return -0.5


def _own_scaling(module: nn.Module, head_dim: int) -> float | None:
    """The logit scale a module applies by itself: its float ``scaling``, or torch's 1/√d for
    an ``nn.MultiheadAttention`` the plan has not rescaled yet."""
    scale = module.__dict__.get("scaling", getattr(module, "scaling", None))
    if isinstance(scale, float):
        return scale
    if isinstance(module, nn.MultiheadAttention):
        return 1.0 / math.sqrt(head_dim)
    return None


class UnscaledAttentionWarning(UserWarning):
    """A module computes attention logits with a scale the plan cannot set (µP needs 1/d)."""


# What in a forward's source says "this module computes attention logits itself".
_ATTENTION_CALLS = ("scaled_dot_product_attention", "flash_attn")
HAND_WRITTEN_ATTENTION = "softmax(q·kᵀ/√d)"


def _computes_attention(cls: type) -> str | None:
    """The attention call in the source of ``cls`` (its own methods and those of its user-
    defined bases, since the call often sits in a helper method), or None: a bare SDPA /
    flash-attention call, or a softmax over a product scaled by a square root (hand-written
    attention)."""
    import inspect

    for klass in cls.__mro__:
        if klass.__module__.startswith(("torch.", "builtins")) or klass is object:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # built-in or generated: nothing to read
            continue
        for call in _ATTENTION_CALLS:
            if call in source:
                return call
        if "softmax" in source and any(s in source for s in ("sqrt", "** -0.5", "**-0.5")):
            return HAND_WRITTEN_ATTENTION
    return None


# what _computes_attention found per class: reading and parsing a class's source takes
# ~10 ms, and a plan is built for every width (and seed) of a coordinate check or a sweep
_ATTENTION_SOURCES: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()


def _computes_attention_once(cls: type) -> str | None:
    """``_computes_attention``, read once per class."""
    if cls not in _ATTENTION_SOURCES:
        _ATTENTION_SOURCES[cls] = _computes_attention(cls)
    return _ATTENTION_SOURCES[cls]


def computes_attention_by_hand(module: nn.Module) -> bool:
    """True when ``module``'s class computes attention itself, as a softmax over a product
    scaled by a square root, rather than through ``scaled_dot_product_attention`` (read from
    its source, as for the plan's warning). The coordinate check reads such a module's logits
    at its softmax, since no SDPA call shows them."""
    if type(module).__module__.startswith("torch."):
        return False
    return _computes_attention_once(type(module)) == HAND_WRITTEN_ATTENTION


def _report_unscaled_attention(
    model: nn.Module, planned: Mapping[str, AttentionPlan], strict: bool
) -> None:
    """Warn (or raise, ``strict``) about attention whose logit scale stays the model's own.

    Modules the plan rescales (a float ``scaling``, ``nn.MultiheadAttention``) and their
    children are fine; torch's own modules are not inspected. Never silent: µP's 1/d matters
    most in exactly the wide models the proxy is meant for.
    """
    covered = tuple(f"{name}." for name in planned)
    candidates: dict[str, tuple[str, str]] = {}  # module name → (class name, call)
    for name, module in model.named_modules():
        key = canonical_name(name)
        if (
            key in planned
            or key.startswith(covered)
            or type(module).__module__.startswith("torch.")
        ):
            continue
        call = _computes_attention_once(type(module))
        if call is not None:
            candidates[key] = (type(module).__name__, call)
    # the innermost modules only: a container of attention (the model itself, a block) is not
    # the one computing it, and a container of attention the plan rescales is fine
    found: dict[str, list[str]] = {}
    calls: dict[str, str] = {}
    for key, (cls, call) in candidates.items():
        if any(
            other != key and (key == "" or other.startswith(f"{key}."))
            for other in [*candidates, *planned]
        ):
            continue
        found.setdefault(cls, []).append(key or "(root)")
        calls[cls] = call
    if not found:
        return
    listing = "; ".join(
        f"{cls} ({calls[cls]}) in {', '.join(names[:3])}"
        + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        for cls, names in found.items()
    )
    message = (
        f"attention the plan cannot rescale: {listing}. These modules compute their logits "
        "with their own scale (1/sqrt(d) unless they say otherwise), not µP's 1/d, so the "
        "logits will grow with width. Fix: give each such module an int `head_dim` and a "
        "float `scaling`, and pass scale=self.scaling to scaled_dot_product_attention (the "
        "plan then sets it); or compute the scale with plan.attention_scale(head_dim, "
        "base_head_dim). The coordinate check shows the effect (Δlogits blow up)."
    )
    if strict:
        raise PlanError(message)
    warnings.warn(message, UnscaledAttentionWarning, stacklevel=3)
