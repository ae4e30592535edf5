"""µP for Hugging Face ``transformers`` models, without editing their modeling code.

``parametrize_hf(model, base)`` is ``mutransfer.parametrize`` plus what a Hugging Face model
needs on top:

- **the base model** is built for real from a config at the base width (``config_at_width``
  scales every width field the families use: ``hidden_size``, the MLP widths
  ``intermediate_size`` / ``n_inner`` / ``ffn_dim`` / ``d_ff`` and the mixture-of-experts
  ones, OPT's ``word_embed_proj_dim``, and either the head dimension ``head_dim`` / ``d_kv``
  or the number of heads), so that at the base width the plan *is* Hugging Face's own init,
  read tensor by tensor; a second width (``delta``) is built on ``meta`` so the shapes tell
  every width dimension apart;
- **the attention logit scale** goes through the ``scaling`` float that every attention module
  of transformers ≥ 5 exposes and passes to its eager, SDPA and flash kernels (the plan sets it
  to 1/d_head relative to the model's own scale at the base); a config option that would
  silently fight the plan over it (GPT-2's ``scale_attn_by_inverse_layer_idx``) is refused, and
  so is a model whose attention computes its scale inside its forward (GPT-Neo, Falcon, Bloom);
- **the readout multiplier** of ``get_output_embeddings()``: absorbed into init/LR when the
  readout has its own weight (Llama), a forward pre-hook on the ``lm_head`` when it is tied to the
  input embedding (GPT-2), so the shared tensor keeps the embedding's init and LR;
- **multipliers the model computes itself from its width** are pinned to their base-width
  value, so that µP's own multipliers apply on top (Gemma's embedding × √hidden_size, T5's
  decoder output × d_model^-½ before its tied readout); see ``own_multipliers``;
- **raw parameters of known layouts** (mixture-of-experts expert stacks and routers) are
  declared, so their fan-in and fan-out are known;
- GPT-2's ``Conv1D`` stores weights as (in, out): the core recognises it by class name;
- **norm gains** are planned as their constant, so ``plan.init_`` alone gives a valid model
  after ``to_empty`` (FSDP2 meta init) — HF norms have no ``reset_parameters``; ``init_buffers_``
  recomputes the buffers (rotary frequencies, Gemma's embedding scale) that ``to_empty`` leaves
  as garbage.

HF's own ``_init_weights`` is not µP (one std for every width) and re-running it does nothing
once a model is marked initialised, so the plan's ``init_`` is the one initialisation pass.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import fnmatch
import warnings
from collections.abc import Iterable, Mapping
from fractions import Fraction
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from ..build import HEAD_DIM_ATTRIBUTES, parametrize
from ..own_init import BaseInit, has_values
from ..plan import Mode, ModuleScale, Plan, PlanError
from ..roles import LAYOUTS, RoleError, canonical_name
from ..rules import SP, Rules, get_rules

INSTALL_HINT = "pip install 'mutransfer[hf]'"

Widen = Literal["head_dim", "heads"]
"""What grows with the width: the size of each head (heads fixed) or the number of heads."""

# Modules whose output is a residual branch, per ``config.model_type``: the depth rules scale
# them when the model is deeper than its base. They are the branches' last projections because
# HF attention modules return tuples, which an output hook cannot multiply (a mixture-of-experts
# block returns a tensor, so the whole block is the branch). BERT and RoBERTa are post-LN
# (the norm follows the sum), for which the depth rules are not derived: not listed.
RESIDUAL_BRANCHES: dict[str, tuple[str, ...]] = {
    "gpt2": ("transformer.h.*.attn.c_proj", "transformer.h.*.mlp.c_proj"),
    "gpt_neox": ("gpt_neox.layers.*.attention.dense", "gpt_neox.layers.*.mlp.dense_4h_to_h"),
    "opt": ("model.decoder.layers.*.self_attn.out_proj", "model.decoder.layers.*.fc2"),
    "llama": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp.down_proj"),
    "mistral": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp.down_proj"),
    "qwen2": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp.down_proj"),
    "qwen3": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp.down_proj"),
    "gemma": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp.down_proj"),
    "phi": ("model.layers.*.self_attn.dense", "model.layers.*.mlp.fc2"),
    "phi3": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp.down_proj"),
    "t5": (
        "*.block.*.layer.*.SelfAttention.o",
        "*.block.*.layer.*.EncDecAttention.o",
        "*.block.*.layer.*.DenseReluDense.wo",
    ),
    "mixtral": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp"),
    "qwen2_moe": ("model.layers.*.self_attn.o_proj", "model.layers.*.mlp"),
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

WIDTH_FIELDS = (
    "intermediate_size",  # Llama, Mistral, Qwen, Gemma, Phi, GPT-NeoX, BERT, Mixtral (per expert)
    "n_inner",  # GPT-2 (None: 4 × n_embd, computed by the model)
    "ffn_dim",  # OPT
    "word_embed_proj_dim",  # OPT: the embedding's own width (project_in/out when it differs)
    "d_ff",  # T5
    "moe_intermediate_size",  # Qwen2-MoE: each routed expert
    "shared_expert_intermediate_size",  # Qwen2-MoE: the shared expert
)
"""Config fields proportional to the width; ``config_at_width`` scales them with it."""

HEAD_DIM_FIELDS = ("head_dim", "d_kv")
"""Config fields that hold the head dimension explicitly (T5 maps ``head_dim`` to ``d_kv``)."""

HEAD_COUNT_FIELDS = ("num_attention_heads", "num_key_value_heads")
"""Config fields that count heads (``widen="heads"`` scales them; T5 maps the first to
``num_heads``, GPT-2 to ``n_head``)."""

# Fields that are never widths, left out of the hint about unscaled fields.
_NOT_WIDTH_FIELDS = frozenset(
    {
        "vocab_size",
        "max_position_embeddings",
        "n_positions",
        "n_ctx",
        "original_max_position_embeddings",
        "num_hidden_layers",
        "num_layers",
        "num_decoder_layers",
        "n_layer",
        "type_vocab_size",
        "relative_attention_num_buckets",
        "relative_attention_max_distance",
        "sliding_window",
        "max_window_layers",
    }
)

# Raw parameters whose layout transformers does not say, per ``config.model_type``: name
# pattern → (layout, which side of the matrix is the model width). The side is checked on the
# model's shapes, so a future transformers that stores them otherwise is an error, not a guess.
# Mixtral-style experts: gate_up_proj (E, 2·I, H) and down_proj (E, H, I), used as
# F.linear(x, W[e]); the router (E, H) as F.linear(x, W).
_MOE_LAYOUTS: dict[str, tuple[tuple[str, str, Literal["in", "out"]], ...]] = {
    "mixtral": (
        ("*.mlp.experts.gate_up_proj", "experts,out,in", "in"),
        ("*.mlp.experts.down_proj", "experts,out,in", "out"),
        ("*.mlp.gate.weight", "out,in", "in"),
    ),
}
_MOE_LAYOUTS["qwen2_moe"] = _MOE_LAYOUTS["mixtral"]

# Model types whose ForConditionalGeneration multiplies the decoder output by d_model^-½ before
# the (tied) readout, and the config flag that switches it on.
_DECODER_OUTPUT_SCALE = {"t5": "scale_decoder_outputs"}

_OWN_KEYWORDS = (
    "widen",
    "mode",
    "roles",
    "layouts",
    "zero_init",
    "residual_branches",
    "base_init",
    "base_init_std",
    "strict",
    "init",
    "seed",
)


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
    """The model width of a HF config (``hidden_size``; GPT-2 maps it to ``n_embd``, T5 to
    ``d_model``)."""
    value = getattr(config, "hidden_size", None)
    if not isinstance(value, int):
        raise PlanError(
            f"{type(config).__name__} has no integer hidden_size; mutransfer.integrations.hf "
            "supports models whose config has hidden_size (or n_embd / d_model)"
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


def _int_field(config: Any, name: str) -> int | None:
    """An int field the config stores (not one it computes: Falcon's ``head_dim`` is a
    read-only property derived from ``hidden_size``)."""
    if isinstance(getattr(type(config), name, None), property):
        return None
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def config_at_width(config: Any, width: int, *, widen: Widen = "head_dim") -> Any:
    """A copy of a HF config at another width: every width field scales with it.

    ``hidden_size`` becomes ``width``; the fields of ``WIDTH_FIELDS`` (MLP, expert and OPT
    embedding widths) scale by the same ratio. ``widen="head_dim"`` keeps the number of heads
    (and key-value heads) and scales the head dimension (``head_dim`` / T5's ``d_kv`` when the
    config holds it), like the reference GPT; ``widen="heads"`` keeps the head dimension and
    scales the number of heads (the µP attention scale then equals SP's). Everything else
    (depth, vocabulary, positions, number of experts) is unchanged.
    """
    if widen not in ("head_dim", "heads"):
        raise ValueError(f"widen must be 'head_dim' or 'heads', got {widen!r}")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    old = hidden_size(config)
    new = copy.deepcopy(config)
    if width == old:
        return new
    ratio = Fraction(width, old)
    new.hidden_size = width
    for name in WIDTH_FIELDS:
        value = _int_field(config, name)
        if value is not None:
            setattr(new, name, _scaled(value, ratio, name))
    heads = int(config.num_attention_heads)
    explicit = {f: v for f in HEAD_DIM_FIELDS if (v := _int_field(config, f)) is not None}
    if widen == "head_dim":
        for name, value in explicit.items():
            setattr(new, name, _scaled(value, ratio, name))
        if not explicit and width % heads:
            raise PlanError(
                f"width {width} is not divisible by num_attention_heads={heads}; pick a width "
                "that is, or widen='heads'"
            )
    else:
        if not explicit and old % heads:
            raise PlanError(f"hidden_size {old} is not divisible by num_attention_heads={heads}")
        for name in HEAD_COUNT_FIELDS:
            value = _int_field(config, name)
            if value is not None:
                setattr(new, name, _scaled(value, ratio, name))
        for name, value in explicit.items():
            setattr(new, name, value)  # the head dimension stays
    return new


def unscaled_width_fields(config: Any) -> list[str]:
    """Integer config fields equal to the width that ``config_at_width`` does not scale.

    Only a hint for error messages: a field a family adds (like OPT's ``word_embed_proj_dim``
    before it was known) makes the derived base disagree with the model in a way the shapes
    cannot explain.
    """
    try:
        width = hidden_size(config)
    except PlanError:
        return []
    known = {"hidden_size", *WIDTH_FIELDS, *HEAD_DIM_FIELDS, *HEAD_COUNT_FIELDS}
    aliases = getattr(config, "attribute_map", {}) or {}
    known |= {aliases.get(k, k) for k in known}
    fields = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    return sorted(
        name
        for name, value in fields.items()
        if isinstance(value, int)
        and not isinstance(value, bool)
        and value == width
        and name not in known
        and name not in _NOT_WIDTH_FIELDS
    )


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
    base_init: BaseInit | None = None,
    base_init_std: Mapping[str, float] | None = None,
    strict: bool = False,
    init: bool = True,
    seed: int | None = None,
    **constants: Any,
) -> Plan:
    """Make a Hugging Face model width-aware: plan, attention scale, readout, init.

    Args:
        model: a ``transformers`` model built from a config (e.g. ``LlamaForCausalLM(cfg)``),
            possibly on ``meta`` (then call ``plan.init_`` after ``to_empty``).
        base: the base width as an ``int`` (the base config is derived with
            ``config_at_width``), a base config, or a base model (on ``meta`` it is rebuilt
            for real from its config, to read the model's own init).
        rules / optimizer / mode / roles / layouts / zero_init / base_init / base_init_std /
            strict / **constants: as in ``mutransfer.parametrize``. ``layouts`` wins over the
            layouts declared here for known raw parameters (mixture-of-experts).
        widen: what grows with the width when the base is derived: ``"head_dim"`` or ``"heads"``.
        residual_branches: modules whose outputs are residual branches (depth rules); ``None``
            uses ``RESIDUAL_BRANCHES[config.model_type]`` where known.
        init: initialise the model now (skipped on ``meta``); ``seed`` seeds it.
    """
    require_transformers()
    _check_constants(constants)
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
    # The core warns about attention it cannot rescale; for HF attention modules the check
    # below says more (what is missing in which class, and the workarounds), so the core's
    # warnings are held back and re-issued only if that check passes.
    with warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("always")
        plan = _plan(
            model,
            base_module,
            rules_obj,
            optimizer,
            delta,
            mode,
            roles,
            layouts,
            zero_init,
            branches,
            base_init,
            base_init_std,
            strict,
        )
    _plan_norm_gains_as_ones(plan, model)
    _check_attention(plan, model)
    for caught in held:
        warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)
    if not follows_model_law(rules_obj):
        pin_own_multipliers(plan, model, base_module)
    if init and not any(p.is_meta for p in model.parameters()):
        plan.init_(model, seed=seed)
    return plan


def _plan(
    model: nn.Module,
    base: nn.Module,
    rules: Rules,
    optimizer: Any,
    delta: nn.Module,
    mode: Mode,
    roles: Mapping[str, str] | None,
    layouts: Mapping[str, str] | None,
    zero_init: Iterable[str],
    branches: tuple[str, ...],
    base_init: BaseInit | None,
    base_init_std: Mapping[str, float] | None,
    strict: bool,
) -> Plan:
    """The core's plan, not initialised; a role error gets a hint about unscaled config
    fields when the config has some (the usual cause of a base that does not fit)."""
    try:
        plan = parametrize(
            model,
            base,
            rules,
            optimizer,
            delta=delta,
            mode=mode,
            roles=roles,
            layouts=known_layouts(model, layouts),
            zero_init=zero_init,
            residual_branches=branches,
            base_init=base_init,
            base_init_std=base_init_std,
            strict=strict,
            init=False,
        )
        _check_readout(plan, model)
    except (RoleError, PlanError) as exc:
        hint = _unscaled_hint(model.config)
        if not hint:
            raise
        raise type(exc)(f"{exc}{hint}") from exc
    return plan


def _check_constants(constants: Mapping[str, Any]) -> None:
    """A misspelt keyword is named with the closest known ones, not a bare TypeError."""
    known = [f.name for f in dataclasses.fields(Rules)]
    unknown = [k for k in constants if k not in known]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, [*known, *_OWN_KEYWORDS], n=2, cutoff=0.6)
        hints.append(f"{key!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    raise TypeError(
        f"unknown parametrize_hf() argument(s): {', '.join(hints)}. It takes the keywords "
        f"{', '.join(_OWN_KEYWORDS)} and the rules' constants: "
        f"{', '.join(k for k in known if k not in ('name', 'families', 'description'))}"
    )


def _check_config(config: Any) -> None:
    for flag, (bad, why) in _CONFLICTING_FLAGS.items():
        if getattr(config, flag, not bad) is bad:
            raise PlanError(
                f"{type(config).__name__}.{flag}={bad} is not supported: {why}. Set "
                f"{flag}={not bad}; the plan sets each attention module's `scaling` itself."
            )


def _unscaled_hint(config: Any) -> str:
    fields = unscaled_width_fields(config)
    if not fields:
        return ""
    return (
        f". Hint: the config field(s) {', '.join(fields)} equal the width but are not scaled "
        "by config_at_width; if they are widths, build the base config yourself (the same "
        "config at the base width, these fields scaled too) and pass it as base="
    )


def known_layouts(model: nn.Module, given: Mapping[str, str] | None) -> dict[str, str] | None:
    """The user's ``layouts`` plus those declared for the model's known raw parameters.

    Declared per parameter name (never as a pattern that could match nothing), only where the
    user's patterns do not already decide, and checked against the model's shapes: the model
    width must sit on the side of the matrix the layout says.
    """
    user = dict(given or {})
    config: Any = model.config
    model_type = getattr(config, "model_type", "")
    known = _MOE_LAYOUTS.get(model_type, ())
    if not known:
        return user or None
    width = hidden_size(config)
    declared: dict[str, str] = {}
    for raw, p in model.named_parameters():
        name = canonical_name(raw)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in user):
            continue
        for pattern, layout, side in known:
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            out_dims, in_dims = LAYOUTS[layout]
            dim = (in_dims if side == "in" else out_dims)[0]
            ndim = 3 if layout.startswith("experts") else 2
            if p.dim() != ndim or p.shape[dim] != width:
                raise PlanError(
                    f"{name} has shape {list(p.shape)}, not the layout mutransfer knows for "
                    f"{model_type} ({layout}, the width {width} as its "
                    f"{'fan-in' if side == 'in' else 'fan-out'}): this transformers version "
                    f"stores it differently. Pass layouts={{'{name}': ...}} (one of "
                    f"{', '.join(LAYOUTS)})"
                )
            declared[name] = layout
            break
    return {**user, **declared} or None


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
    """Every attention module must have received the plan's logit scale.

    A module counts as attention when its class name ends in ``Attention``; it is covered when
    it, one of its submodules or a module around it got a planned scale — wrappers such as
    BERT's ``BertAttention`` (around ``BertSelfAttention``) or T5's ``T5LayerSelfAttention``
    hold no logits themselves.
    """
    planned = list(plan.attention)
    missing: list[tuple[str, nn.Module]] = []
    for raw, module in model.named_modules():
        if not type(module).__name__.endswith("Attention"):
            continue
        key = canonical_name(raw)
        if any(p == key or p.startswith(key + ".") or key.startswith(p + ".") for p in planned):
            continue
        missing.append((key, module))
    sp_attention = plan.rules.attention == "sp" and plan.rules.attention_multiplier == 1.0
    if (not missing and plan.attention) or sp_attention:
        return
    if not missing:
        raise PlanError(
            f"{type(model).__name__}: no attention module was found (none exposes a float "
            "`scaling` and a head dimension), so the µP attention scale (1/d_head) cannot be "
            "set. Pass rules whose attention is 'sp' if the model has no attention."
        )
    module = missing[0][1]
    cls = type(module).__name__
    names = ", ".join(n for n, _ in missing[:3]) + (
        f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    )
    if isinstance(getattr(module, "scaling", None), float):
        what = (
            f"{cls} has a float `scaling` but no head dimension under any of "
            f"{', '.join(HEAD_DIM_ATTRIBUTES)}"
        )
        fix = (
            "set module.head_dim (an int) on each of them before parametrize_hf: the kernel "
            "already reads `scaling`, which the plan then sets"
        )
    else:
        what = (
            f"{cls} has no float `scaling` attribute: it computes its logit scale inside its "
            "forward, where the plan cannot reach it"
        )
        fix = (
            "edit or subclass the attention so that its kernel call uses a float "
            "`self.scaling` and the module exposes `head_dim`, then parametrize_hf sets it"
        )
    raise PlanError(
        f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')}): attention "
        f"module(s) {names} cannot get µP's 1/d_head logit scale: {what}. Workarounds: {fix}; "
        "or rules='sp' (the model's own scale, no µTransfer); or "
        "rules=mutransfer.MUP.with_(attention='sp') (µP everywhere but the attention logits, "
        "which then grow with the head dimension: the coordinate check shows it)."
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


# ---------------------------------------------------------------- the model's own multipliers
def follows_model_law(rules: Rules) -> bool:
    """True for SP rules: the model's own width dependence is kept (SP *is* the model as its
    authors wrote it), for its attention scale and the multipliers of ``own_multipliers``.
    Any other rules (µP and its variants) set those width dependences themselves, so the
    model's own are pinned at the base width."""
    return rules.families == SP.families


@dataclasses.dataclass(frozen=True)
class OwnMultiplier:
    """A forward multiplier a model computes itself from its width (a buffer or attribute).

    ``own`` is its value in the model, ``base`` in the base model; µP pins it at ``base`` by a
    hook multiplying by ``base / own`` (``kind``: on the module's ``input`` or ``output``).
    """

    module: str
    kind: Literal["input", "output"]
    own: float
    base: float
    what: str


def own_multipliers(model: nn.Module, base: nn.Module) -> list[OwnMultiplier]:
    """The width-dependent multipliers ``model`` computes itself, with their base-width value.

    - Gemma's scaled word embedding (``scalar_embed_scale`` = √hidden_size, applied through the
      ``embed_scale`` buffer): under µP the input multiplier must not grow with width.
    - T5's decoder output × d_model^-½ before the readout (``model_dim``, when the config's
      ``scale_decoder_outputs`` is on, as it is with tied embeddings): under µP the readout's
      multiplier is α/m relative to the base, so the model's own m^-½ is cancelled.
    """
    base_modules = {canonical_name(n): m for n, m in base.named_modules()}
    found: list[OwnMultiplier] = []
    for raw, module in model.named_modules():
        own = getattr(module, "scalar_embed_scale", None)
        if isinstance(own, float) and isinstance(
            getattr(module, "embed_scale", None), torch.Tensor
        ):
            key = canonical_name(raw)
            at_base = getattr(base_modules.get(key), "scalar_embed_scale", None)
            if not isinstance(at_base, float):
                raise PlanError(f"the base model has no scalar_embed_scale on {key!r}")
            found.append(
                OwnMultiplier(key, "output", own, at_base, f"{type(module).__name__}.embed_scale")
            )
    flag = _DECODER_OUTPUT_SCALE.get(getattr(model.config, "model_type", ""))
    dim, base_dim = getattr(model, "model_dim", None), getattr(base, "model_dim", None)
    if flag and getattr(model.config, flag, False) and isinstance(dim, int):
        if not isinstance(base_dim, int):
            raise PlanError("the base model has no model_dim")
        head = model.get_output_embeddings()  # type: ignore[operator]
        name = next(canonical_name(n) for n, m in model.named_modules() if m is head)
        found.append(
            OwnMultiplier(name, "input", dim**-0.5, base_dim**-0.5, "decoder output × d_model^-½")
        )
    return found


def pin_own_multipliers(plan: Plan, model: nn.Module, base: nn.Module) -> None:
    """Pin the model's own width-dependent multipliers at their base-width value, in the plan.

    Each becomes a ``ModuleScale`` of ``base / own`` (merged with a multiplier the plan already
    applies on the same module), so it is plain data of the plan: it survives ``to_json``,
    ``attach`` on a fresh model, ``to_empty`` + ``init_`` + ``init_buffers_`` (the model's own
    buffer is restored to its own value and the hook corrects it). At the base width nothing
    changes.
    """
    for own in own_multipliers(model, base):
        factor = own.base / own.own
        if factor == 1.0:
            continue
        reason = f"{own.what} pinned at the base width ({own.own:.4g} → {own.base:.4g})"
        previous = plan.module_scales.get(own.module)
        if previous is not None:
            if previous.kind != own.kind:
                raise PlanError(
                    f"{own.module!r} has a planned {previous.kind} multiplier and needs an "
                    f"{own.kind} one to pin {own.what}; apply one of them in the model"
                )
            factor *= previous.multiplier
            reason = f"{previous.reason}; {reason}"
        plan.module_scales[own.module] = ModuleScale(own.module, own.kind, factor, reason)
    plan.attach(model)


@torch.no_grad()
def init_buffers_(model: nn.Module) -> nn.Module:
    """Recompute the buffers of a model built on ``meta`` (rotary frequencies, embed scales).

    ``Module.to_empty`` gives every buffer uninitialised memory; parameters are then filled by
    ``plan.init_``, but buffers such as Llama's ``rotary_emb.inv_freq`` or Gemma's
    ``embed_scale`` are computed by the model from its config. HF's own per-module init
    recomputes them; it runs on every module that owns buffers, and the parameters of those
    modules (e.g. Gemma's embedding) are put back as they were, so no weight is touched and the
    global RNG is left as it was.
    """
    init_fn: Any = getattr(model, "_init_weights", None)
    if not callable(init_fn):
        return model
    for module in model.modules():
        if next(module.buffers(recurse=False), None) is None:
            continue
        kept = [(p, p.detach().clone()) for p in module.parameters(recurse=False)]
        with torch.random.fork_rng(devices=[]):
            init_fn(module)
        for p, value in kept:
            p.copy_(value)
    return model
