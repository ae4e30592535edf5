"""µP for Hugging Face ``transformers`` models, without editing their modeling code.

``parametrize_hf(model, base)`` is ``mutransfer.parametrize`` plus what a Hugging Face model
needs on top:

- **the base model** is built on ``device="meta"`` from a config at the base width
  (``config_at_width``): ``hidden_size`` (``n_embd``), the MLP width (``intermediate_size`` /
  ``n_inner``) and either the head dimension or the number of heads scale together, so the
  shapes of base, model and a second width (``delta``) tell every width dimension apart;
- **the attention logit scale** goes through the ``scaling`` float that every attention module
  of transformers ≥ 5 exposes and passes to its eager, SDPA and flash kernels (the plan sets it to
  1/d_head under µP); a config option that would silently fight the plan over it (GPT-2's
  ``scale_attn_by_inverse_layer_idx``) is refused;
- **the readout multiplier** of ``get_output_embeddings()``: absorbed into init/LR when the
  readout has its own weight (Llama), a forward pre-hook on the ``lm_head`` when it is tied to the
  input embedding (GPT-2), so the shared tensor keeps the embedding's init and LR;
- GPT-2's ``Conv1D`` stores weights as (in, out): the core recognises it by class name;
- **norm gains** are planned as ones, so ``plan.init_`` alone gives a valid model after
  ``to_empty`` (FSDP2 meta init) — HF norms have no ``reset_parameters``; ``init_buffers_``
  recomputes the rotary-embedding buffers that ``to_empty`` leaves as garbage.

HF's own ``_init_weights`` is not µP (one std for every width) and re-running it does nothing
once a model is marked initialised, so the plan's ``init_`` is the one initialisation pass.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from fractions import Fraction
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from ..build import parametrize
from ..own_init import has_values
from ..plan import Mode, Plan, PlanError
from ..roles import canonical_name
from ..rules import Rules, get_rules

INSTALL_HINT = "pip install 'mutransfer[hf]'"

Widen = Literal["head_dim", "heads"]
"""What grows with the width: the size of each head (heads fixed) or the number of heads."""

# Modules whose output is a residual branch, per ``config.model_type``: the depth rules scale
# them when the model is deeper than its base. They are the branches' last projections because
# HF attention modules return tuples, which an output hook cannot multiply.
RESIDUAL_BRANCHES: dict[str, tuple[str, ...]] = {
    "gpt2": ("transformer.h.*.attn.c_proj", "transformer.h.*.mlp.c_proj"),
    "llama": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp.down_proj"),
}

# Config flags that change the attention scale in a way the plan would overwrite silently.
_CONFLICTING_FLAGS = {
    "scale_attn_by_inverse_layer_idx": (
        True,
        "it divides the attention scale by the layer index, which the plan's scale replaces",
    ),
    "scale_attn_weights": (
        False,
        "it turns the 1/sqrt(d) logit scale off, which the plan's scale would turn back on",
    ),
}

_MLP_WIDTH_FIELDS = ("intermediate_size", "n_inner")


def require_transformers() -> ModuleType:
    """Import ``transformers`` or explain how to install it."""
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"mutransfer.integrations.hf needs Hugging Face transformers: {INSTALL_HINT}"
        ) from exc
    return transformers


# ------------------------------------------------------------------------------- configs
def hidden_size(config: Any) -> int:
    """The model width of a HF config (``hidden_size``; GPT-2 maps it to ``n_embd``)."""
    value = getattr(config, "hidden_size", None)
    if not isinstance(value, int):
        raise PlanError(
            f"{type(config).__name__} has no integer hidden_size; mutransfer.integrations.hf "
            "supports decoder models whose config has hidden_size (or n_embd)"
        )
    return value


def _scaled(value: int, ratio: Fraction, what: str) -> int:
    scaled = value * ratio
    if scaled.denominator != 1 or scaled < 1:
        raise PlanError(
            f"{what}={value} cannot be scaled by the width ratio {ratio} to a whole number; "
            "pick widths whose ratio divides it, or pass the base as a config you built"
        )
    return int(scaled)


def config_at_width(config: Any, width: int, *, widen: Widen = "head_dim") -> Any:
    """A copy of a HF config at another width: the MLP and attention widths scale with it.

    ``widen="head_dim"`` keeps the number of heads (and key-value heads) and scales the head
    dimension, like the reference GPT; ``widen="heads"`` keeps ``head_dim`` and scales the
    number of heads (the µP attention scale then equals SP's). Everything else (depth,
    vocabulary, positions) is unchanged.
    """
    if widen not in ("head_dim", "heads"):
        raise ValueError(f"widen must be 'head_dim' or 'heads', got {widen!r}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    old = hidden_size(config)
    new = copy.deepcopy(config)
    if width == old:
        return new
    ratio = Fraction(width, old)
    new.hidden_size = width
    for name in _MLP_WIDTH_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int):
            setattr(new, name, _scaled(value, ratio, name))
    heads = int(config.num_attention_heads)
    explicit_head_dim = getattr(config, "head_dim", None)
    if widen == "head_dim":
        if isinstance(explicit_head_dim, int):
            new.head_dim = _scaled(explicit_head_dim, ratio, "head_dim")
        elif width % heads:
            raise PlanError(
                f"width {width} is not divisible by num_attention_heads={heads}; pick a width "
                "that is, or widen='heads'"
            )
    else:
        head_dim = explicit_head_dim if isinstance(explicit_head_dim, int) else old // heads
        new.num_attention_heads = _scaled(heads, ratio, "num_attention_heads")
        kv = getattr(config, "num_key_value_heads", None)
        if isinstance(kv, int):
            new.num_key_value_heads = _scaled(kv, ratio, "num_key_value_heads")
        if isinstance(explicit_head_dim, int):
            new.head_dim = head_dim
    return new


def build_on_meta(model_cls: type[nn.Module], config: Any) -> nn.Module:
    """Build a HF model on ``meta`` (no memory, no init cost), e.g. a second width."""
    with torch.device("meta"):
        return model_cls(config)


def build_base(model_cls: type[nn.Module], config: Any) -> nn.Module:
    """The base model for real, with Hugging Face's own init, from a fixed seed.

    The plan reads every tensor's own init std here (``initializer_range``, GPT-2's scaled
    residual projections, T5's factors...), so that at the base width µP *is* the model as
    Hugging Face builds it. It is the small model, built on the CPU; the global RNG is
    restored afterwards.
    """
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(0)
        return model_cls(config)


# ------------------------------------------------------------------------------- the plan
def parametrize_hf(
    model: nn.Module,
    base: Any,
    rules: str | Rules = "mup",
    optimizer: Any = "adamw",
    *,
    widen: Widen = "head_dim",
    mode: Mode = "absorbed",
    roles: Mapping[str, str] | None = None,
    layouts: Mapping[str, str] | None = None,
    zero_init: Iterable[str] = (),
    residual_branches: Iterable[str] | None = None,
    init: bool = True,
    seed: int | None = None,
    **constants: Any,
) -> Plan:
    """Make a Hugging Face model width-aware: plan, attention scale, readout, init.

    Args:
        model: a ``transformers`` model built from a config (e.g. ``LlamaForCausalLM(cfg)``),
            possibly on ``meta`` (then call ``plan.init_`` after ``to_empty``).
        base: the base width as an ``int`` (the base config is derived with
            ``config_at_width``), a base config, or a base model (build it on ``meta``).
        rules / optimizer / mode / roles / layouts / zero_init / **constants: as in
            ``mutransfer.parametrize``.
        widen: what grows with the width when the base is derived: ``"head_dim"`` or ``"heads"``.
        residual_branches: modules whose outputs are residual branches (depth rules); ``None``
            uses ``RESIDUAL_BRANCHES[config.model_type]`` where known.
        init: initialise the model now (skipped on ``meta``); ``seed`` seeds it.
    """
    require_transformers()
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(model, "get_output_embeddings", None)):
        raise TypeError(
            f"parametrize_hf expects a Hugging Face PreTrainedModel, got {type(model).__name__}; "
            "use mutransfer.parametrize for other models"
        )
    _check_config(config)
    base_module: nn.Module
    if isinstance(base, int) and not isinstance(base, bool):
        base_module = build_base(type(model), config_at_width(config, base, widen=widen))
    elif isinstance(base, nn.Module):
        base_module = base
        if not has_values(base) and getattr(base, "config", None) is not None:
            base_module = build_base(type(model), base.config)
    elif hasattr(base, "to_dict") and hasattr(base, "model_type"):
        base_module = build_base(type(model), base)
    else:
        raise TypeError(
            "base must be the base width (int), a transformers config at base width, or a base "
            f"model built on meta; got {type(base).__name__}"
        )
    base_config = getattr(base_module, "config", None)
    if base_config is None:
        raise TypeError("the base model has no .config; build it from a transformers config")
    base_width = hidden_size(base_config)
    delta = build_on_meta(type(model), config_at_width(base_config, 2 * base_width, widen=widen))

    rules_obj = get_rules(rules).with_(**constants) if constants else get_rules(rules)
    branches = _residual_branches(model, base_module, rules_obj, residual_branches)
    plan = parametrize(
        model,
        base_module,
        rules_obj,
        optimizer,
        delta=delta,
        mode=mode,
        roles=roles,
        layouts=layouts,
        zero_init=zero_init,
        residual_branches=branches,
        init=False,
    )
    _plan_norm_gains_as_ones(plan, model)
    _check_attention(plan, model)
    _check_readout(plan, model)
    if init and not any(p.is_meta for p in model.parameters()):
        plan.init_(model, seed=seed)
    return plan


def _check_config(config: Any) -> None:
    for flag, (bad, why) in _CONFLICTING_FLAGS.items():
        if getattr(config, flag, not bad) is bad:
            raise PlanError(
                f"{type(config).__name__}.{flag}={bad} is not supported: {why}. Set "
                f"{flag}={not bad}; the plan sets each attention module's `scaling` itself."
            )


def _residual_branches(
    model: nn.Module, base: nn.Module, rules: Rules, given: Iterable[str] | None
) -> tuple[str, ...]:
    if given is not None:
        return tuple(given)
    model_type = getattr(model.config, "model_type", "")
    known = RESIDUAL_BRANCHES.get(model_type)
    if known is not None:
        return known
    depth = getattr(model.config, "num_hidden_layers", None)
    base_depth = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    if rules.residual_depth_exponent != 0 and depth != base_depth:
        raise PlanError(
            f"rules {rules.name!r} scale residual branches with depth and the model is deeper "
            f"than its base ({depth} vs {base_depth} layers), but mutransfer does not know the "
            f"residual branches of model_type {model_type!r}; pass residual_branches= (module "
            "name patterns of each branch's last projection, e.g. 'model.layers.*.mlp.down_proj')"
        )
    return ()


def _plan_norm_gains_as_ones(plan: Plan, model: nn.Module) -> None:
    """HF norm modules have no ``reset_parameters``: plan their gains as ones explicitly."""
    modules = {canonical_name(n): m for n, m in model.named_modules()}
    for name, entry in list(plan.tensors.items()):
        owner, _, leaf = name.rpartition(".")
        module = modules.get(owner)
        if (
            entry.init == "default"
            and leaf == "weight"
            and len(entry.shape) == 1
            and module is not None
            and "norm" in type(module).__name__.lower()
        ):
            plan.tensors[name] = dataclasses.replace(entry, init="ones")


def _check_attention(plan: Plan, model: nn.Module) -> None:
    """Every attention module must have received the plan's logit scale."""
    missing = [
        canonical_name(n)
        for n, m in model.named_modules()
        if type(m).__name__.endswith("Attention") and canonical_name(n) not in plan.attention
    ]
    sp_attention = plan.rules.attention == "sp" and plan.rules.attention_multiplier == 1.0
    if (missing or not plan.attention) and not sp_attention:
        raise PlanError(
            f"{type(model).__name__}: attention module(s) {missing[:3] or '(none found)'} do not "
            "expose an int `head_dim` and a float `scaling`, so the µP attention scale (1/d_head) "
            "cannot be set without editing the model. transformers >= 5 models do; for others "
            "set module.head_dim / module.scaling before parametrize_hf (only SP rules, whose "
            "1/sqrt(d_head) these models compute themselves, work without them)."
        )


def _check_readout(plan: Plan, model: nn.Module) -> None:
    """The output embeddings must be planned as the readout (or tied input + readout)."""
    getter: Any = model.get_output_embeddings
    head = getter()
    if head is None:
        return
    weight = getattr(head, "weight", None)
    for name, p in model.named_parameters(remove_duplicate=False):
        if p is weight:
            entry = plan[name]
            if entry.role != "output" and "output" not in entry.tied_roles:
                raise PlanError(
                    f"the output embeddings {canonical_name(name)!r} were planned as "
                    f"{entry.role!r}, not as the readout; check that the vocabulary size does "
                    "not change with width, or pass roles={'...lm_head.weight': 'output'}"
                )
            return


@torch.no_grad()
def init_buffers_(model: nn.Module) -> nn.Module:
    """Recompute the non-persistent buffers (rotary frequencies) of a model built on ``meta``.

    ``Module.to_empty`` gives every buffer uninitialised memory; parameters are then filled by
    ``plan.init_``, but buffers such as Llama's ``rotary_emb.inv_freq`` are computed by the model
    from its config. HF's own per-module init recomputes them; it runs here only on modules that
    own buffers and no parameters, so no weight is touched.
    """
    init_fn: Any = getattr(model, "_init_weights", None)
    if not callable(init_fn):
        return model
    for module in model.modules():
        has_buffers = next(module.buffers(recurse=False), None) is not None
        has_params = next(module.parameters(recurse=False), None) is not None
        if has_buffers and not has_params:
            init_fn(module)
    return model
