"""The model's own initialisation at the base width: what µP starts from.

Tensor Programs V defines µP relative to a base width at which it *equals* the standard
parametrization: at the base width a µP model is the model its authors wrote. So the init std
of every tensor at the base width must be the model's own (Hugging Face's ``initializer_range``,
GPT-2's 1/√(2·n_layer) on residual projections, nanoGPT's 0.02, torch's layer defaults...),
never a constant of this library; µP only says how it scales away from the base.

Where the model's own init is read from, in order of exactness:

``base``
    the base model holds real values (a base module built for real, a width factory built at
    the base width, a Hugging Face base built from its config): every tensor is measured there.
``torch default``
    the model (at its own width) holds torch's default init of its layer (``nn.Linear``'s
    uniform ±1/√fan_in, ``nn.Embedding``'s N(0, 1), ``nn.MultiheadAttention``'s Xavier):
    recognised by its distribution and recomputed at the base shape.
``model``
    the model holds some other init at its own width: its std is taken as width-independent,
    which is how Hugging Face, nanoGPT, Megatron and most hand-written inits draw (one std,
    e.g. 0.02, at every width). A std that also fits 1/√fan_in is reported as ambiguous.
``rules``
    nothing real to read (model and base on ``meta``), or the model declares that it has no
    init of its own (``mutransfer_init = "rules"``, as the reference models do): σ/√fan_in.

Measured stds are snapped to an exact candidate (torch's default, the config's
``initializer_range``) when they agree within sampling noise, so plans print round numbers and
do not depend on the draw.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .roles import TensorRole, canonical_name

BaseInit = Literal["model", "rules"]

RULES_DECLARATION = "mutransfer_init"
"""Class attribute by which a model says it has no init of its own: ``mutransfer_init = "rules"``
(the plan's σ/√fan_in is its parametrization, as for the reference GPT and MLP)."""


@dataclass(frozen=True)
class OwnInit:
    """A tensor's own init at the base width: a std, or a constant value (norm gains, biases)."""

    std: float
    constant: float | None
    source: str
    """``base``, ``torch default``, ``model`` or ``rules`` (see the module docstring)."""
    centered: bool = True
    """False when the values have a mean the std does not describe (left at their default)."""


class OwnInitWarning(UserWarning):
    """The model's own init could not be read exactly; the message says what was assumed."""


def declared_rules(model: nn.Module) -> bool:
    """True when the model declares that the rules' init is its own (``mutransfer_init``)."""
    return getattr(model, RULES_DECLARATION, None) == "rules"


def has_values(module: nn.Module) -> bool:
    """True when the module's parameters hold real values (not ``meta``)."""
    params = list(module.parameters())
    return bool(params) and not any(p.is_meta for p in params)


# ------------------------------------------------------------------------------ measuring
@torch.no_grad()
def measure(tensor: torch.Tensor) -> tuple[float, float | None, float]:
    """(RMS, the value if every entry is equal else None, |mean| / std) of a tensor."""
    x = tensor.detach()
    full = getattr(x, "full_tensor", None)
    if callable(full):  # DTensor: measure the whole tensor
        x = full()
    x = x.float()
    if x.numel() == 0:
        return 0.0, 0.0, 0.0
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        return abs(lo), lo, 0.0
    mean = float(x.mean())
    std = float(x.std(unbiased=False))
    return float(x.square().mean().sqrt()), None, abs(mean) / std if std > 0 else 0.0


def _torch_fan_in(shape: tuple[int, ...]) -> int:
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive


def _torch_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def torch_default(
    owner: nn.Module | None, leaf: str, shape: tuple[int, ...], weight_shape: tuple[int, ...] | None
) -> tuple[Literal["uniform", "normal"], float] | None:
    """(distribution, std) of torch's own init of ``owner.leaf`` at ``shape``; None if unknown.

    ``weight_shape``: the owner's weight shape (a Linear's bias bound depends on it).
    """
    if owner is None:
        return None
    if isinstance(owner, nn.Embedding | nn.EmbeddingBag) and leaf == "weight":
        return "normal", 1.0
    if isinstance(owner, nn.MultiheadAttention):
        if leaf in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            fan_in, fan_out = _torch_fans(shape)
            return "uniform", math.sqrt(2.0 / (fan_in + fan_out))
        return None
    if isinstance(owner, nn.Linear | nn.modules.conv._ConvNd):
        if leaf == "weight" and len(shape) >= 2:
            # kaiming_uniform_(a=√5): bound = 1/√fan_in, std = bound/√3
            return "uniform", 1.0 / math.sqrt(3.0 * _torch_fan_in(shape))
        if leaf == "bias" and weight_shape is not None and len(weight_shape) >= 2:
            return "uniform", 1.0 / math.sqrt(3.0 * _torch_fan_in(weight_shape))
    return None


def _agrees(rms: float, expected: float, n: int, kind: str) -> bool:
    """Whether a measured RMS is the expected std up to sampling noise (5 standard errors)."""
    # relative standard error of an RMS estimate: uniform 0.447/√n, normal 0.707/√n
    rel = (0.447 if kind == "uniform" else 0.707) / math.sqrt(max(n, 1))
    return abs(rms - expected) <= (5.0 * rel + 1e-3) * expected


def _looks_like(tensor: torch.Tensor, default: tuple[str, float]) -> bool:
    kind, std = default
    rms, constant, _ = measure(tensor)
    if constant is not None or not _agrees(rms, std, tensor.numel(), kind):
        return False
    if kind == "uniform":  # every value within the bound √3·std
        full = getattr(tensor, "full_tensor", None)
        values = full() if callable(full) else tensor
        return float(values.detach().abs().max()) <= math.sqrt(3.0) * std * (1 + 1e-4)
    return True


def _config_candidates(model: nn.Module) -> list[float]:
    """Exact stds a Hugging Face-style config names (``initializer_range`` and GPT-2's
    residual-projection variant), for snapping measured values."""
    config = getattr(model, "config", None)
    rng = getattr(config, "initializer_range", None) or getattr(config, "init_std", None)
    if not isinstance(rng, float) or rng <= 0:
        return []
    layers = getattr(config, "n_layer", None) or getattr(config, "num_hidden_layers", None)
    out = [rng]
    if isinstance(layers, int) and layers > 0:
        out.append(rng / math.sqrt(2 * layers))
    return out


def _snap(rms: float, n: int, candidates: list[float]) -> float:
    for value in candidates:
        if _agrees(rms, value, n, "normal"):
            return value
    return rms


# --------------------------------------------------------------------------- entry point
def own_init_at_base(
    model: nn.Module,
    roles: Mapping[str, TensorRole],
    base: nn.Module | None,
) -> dict[str, OwnInit]:
    """The own init at base width of every planned tensor, keyed by the plan's names.

    ``base``: the base model when it holds real values (read exactly), else None (the model's
    own values are read at its width and carried to the base width as described above).
    """
    if base is not None and has_values(base):
        return _from_base(base, roles)
    if has_values(model):
        return _from_model(model, roles)
    warnings.warn(
        "the model and its base are both on meta, so the model's own init cannot be read; the "
        "rules' σ/sqrt(fan_in) is used instead. To start from the model's own init at the base "
        "width, give the base with real values (built at the base width, not on meta) or as a "
        "width factory with base_width=; pass base_init='rules' if σ/sqrt(fan_in) is intended.",
        OwnInitWarning,
        stacklevel=3,
    )
    return {name: OwnInit(0.0, None, "rules") for name in roles}


def _modules(module: nn.Module) -> dict[str, nn.Module]:
    return {canonical_name(n): m for n, m in module.named_modules(remove_duplicate=False)}


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {canonical_name(n): p for n, p in module.named_parameters(remove_duplicate=False)}


def _owner(modules: Mapping[str, nn.Module], name: str) -> tuple[nn.Module | None, str]:
    parent, _, leaf = name.rpartition(".")
    return modules.get(parent), leaf


def _weight_shape(owner: nn.Module | None) -> tuple[int, ...] | None:
    weight = getattr(owner, "weight", None)
    return tuple(weight.shape) if isinstance(weight, torch.Tensor) else None


def _from_base(base: nn.Module, roles: Mapping[str, TensorRole]) -> dict[str, OwnInit]:
    modules, params = _modules(base), _params(base)
    candidates = _config_candidates(base)
    result: dict[str, OwnInit] = {}
    for name, role in roles.items():
        tensor = params[role.base_name]
        rms, constant, offset = measure(tensor)
        if constant is not None:
            result[name] = OwnInit(0.0, constant, "base")
            continue
        owner, leaf = _owner(modules, role.base_name)
        default = torch_default(owner, leaf, role.base_shape, _weight_shape(owner))
        if default is not None and _looks_like(tensor, default):
            rms = default[1]
        else:
            rms = _snap(rms, tensor.numel(), candidates)
        result[name] = OwnInit(rms, None, "base", centered=offset < 0.5)
    return result


def _from_model(model: nn.Module, roles: Mapping[str, TensorRole]) -> dict[str, OwnInit]:
    modules, params = _modules(model), _params(model)
    candidates = _config_candidates(model)
    result: dict[str, OwnInit] = {}
    ambiguous: list[str] = []
    for name, role in roles.items():
        tensor = params[name]
        rms, constant, offset = measure(tensor)
        if constant is not None:
            result[name] = OwnInit(0.0, constant, "model")
            continue
        owner, leaf = _owner(modules, name)
        default = torch_default(owner, leaf, role.shape, _weight_shape(owner))
        if default is not None and _looks_like(tensor, default):
            base_weight = _base_weight_shape(roles, name, owner)
            at_base = torch_default(owner, leaf, role.base_shape, base_weight)
            assert at_base is not None
            result[name] = OwnInit(at_base[1], None, "torch default")
            continue
        snapped = _snap(rms, tensor.numel(), candidates)
        if snapped == rms and role.width_dims and len(role.shape) >= 2:
            fan_in = role.m_in * role.base_fan_in
            if fan_in > 1 and any(
                _agrees(rms, gain / math.sqrt(fan_in), tensor.numel(), "normal")
                for gain in (1.0, math.sqrt(2.0))
            ):
                ambiguous.append(f"{name} (std {rms:.3g} = 1/√{fan_in:g})")
        result[name] = OwnInit(snapped, None, "model", centered=offset < 0.5)
    if ambiguous:
        warnings.warn(
            "the model's own init of "
            + ", ".join(ambiguous[:4])
            + (f" and {len(ambiguous) - 4} more" if len(ambiguous) > 4 else "")
            + " fits both a width-independent std and 1/sqrt(fan_in); mutransfer assumed "
            "width-independent (as Hugging Face and nanoGPT draw). If the model's init "
            "depends on width, give the base with real values (built at the base width, not "
            "on meta) or as a width factory with base_width=, so that the own init is measured "
            "at the base width; or pass base_init_std={pattern: std}.",
            OwnInitWarning,
            stacklevel=4,
        )
    return result


def _base_weight_shape(
    roles: Mapping[str, TensorRole], name: str, owner: nn.Module | None
) -> tuple[int, ...] | None:
    """The base shape of the weight beside ``name`` (a bias's bound depends on it)."""
    parent = name.rpartition(".")[0]
    sibling = roles.get(f"{parent}.weight" if parent else "weight")
    if sibling is not None:
        return sibling.base_shape
    return _weight_shape(owner)
