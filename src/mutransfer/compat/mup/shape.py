"""Base shapes: ``set_base_shapes``, ``make_base_shapes`` and mup's ``.bsh`` files.

``set_base_shapes(model, base)`` works out which dimensions are width (a dimension that differs
from the base, or from ``delta`` when given) as mup does, turns that into mutransfer plans (see
``plans.py``), rescales the tensors mup rescales, and keeps the result beside the model (see
``state.py``) instead of on its parameters.

Differences from mup, all of them fixes:

- names are compared without wrapper prefixes (``module.``, ``_orig_mod.``): mup's
  DataParallel workaround strips the *characters* of ``"module."`` from the left and right of
  base names (``str.strip``), so a base saved from a wrapped model turns ``module.embed.weight``
  into ``bed.weight`` and no longer matches;
- a readout sharing an embedding's weight (``MuSharedReadout``) leaves that weight alone,
  where mup scales the embedding's std by √m (issue #55);
- roles come from the owning module's layout (mup assumes ``(fan_out, fan_in)`` everywhere), and
  a readout that is not a ``MuReadout`` (a Conv, a raw parameter) gets a warning instead of
  silently training without the 1/width multiplier.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import nn

from ...roles import canonical_name
from .infshape import InfDim, InfShape, zip_infshape
from .layer import MuReadout, rescale_linear_bias
from .plans import build_plans
from .state import MupCompatError, MupState, infshape_of, lookup, register, state_of, unwrap

BSH_COMMENT = """\
# This is a base shape file encoded in yaml
# - `null` indicates a dimension is "finite", i.e. a non-"width" dimension
# - a number indicates the base dimension of an "infinite" dimension, i.e. some notion of "width"
"""

ShapeSpec: TypeAlias = "nn.Module | Mapping[str, Any] | str | os.PathLike[str] | None"


def get_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """``{name: shape}`` of the model's parameters (tied ones once, under their first name)."""
    return {name: p.shape for name, p in model.named_parameters()}


def get_infshapes(model: nn.Module) -> dict[str, InfShape]:
    """``{name: InfShape}`` of a model given to ``set_base_shapes`` (mup: ``p.infshape``)."""
    state = state_of(model)
    if state is None:
        raise MupCompatError("the model has no base shapes: call set_base_shapes(model, base)")
    return {
        name: state.infshapes[canonical_name(name)].with_dims(p.shape)
        for name, p in model.named_parameters()
    }


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ImportError(
            "reading and writing mup's .bsh files needs PyYAML: pip install pyyaml"
        ) from None
    return yaml


def save_base_shapes(model_or_shapes: nn.Module | Mapping[str, Any], file: str) -> None:
    """Write a ``.bsh`` file in mup's format (YAML: base size per width dim, ``null`` finite).

    Names are written without wrapper prefixes (``module.``), so the file fits the model
    whether or not it is wrapped.
    """
    if isinstance(model_or_shapes, nn.Module):
        shapes: Mapping[str, Any] = get_infshapes(model_or_shapes)
    elif isinstance(model_or_shapes, Mapping):
        shapes = model_or_shapes
    else:
        raise TypeError(
            "save_base_shapes takes a model given to set_base_shapes or a dict of InfShape "
            f"(from make_base_shapes), got {type(model_or_shapes).__name__}"
        )
    data = {canonical_name(k): _as_infshape(k, v).base_shape() for k, v in shapes.items()}
    text = _yaml().dump(data, None, indent=4)
    with open(file, "w", encoding="utf-8") as fh:
        fh.write(BSH_COMMENT + text)


def load_base_shapes(filename: str | os.PathLike[str]) -> dict[str, InfShape]:
    """Read a ``.bsh`` file (written by mup or by this module) as ``{name: InfShape}``."""
    with open(filename, encoding="utf-8") as fh:
        data = _yaml().safe_load(fh)
    if not isinstance(data, dict):
        raise MupCompatError(f"{os.fspath(filename)!r} is not a base-shape file (no mapping)")
    out = {}
    for name, base in data.items():
        if not isinstance(base, list) or not all(b is None or isinstance(b, int) for b in base):
            raise MupCompatError(
                f"{os.fspath(filename)!r}: entry {name!r} must be a list of ints and nulls, "
                f"got {base!r}"
            )
        out[canonical_name(str(name))] = InfShape.from_base_shape(base)
    return out


def _as_infshape(name: str, value: Any) -> InfShape:
    if isinstance(value, InfShape):
        return value
    if isinstance(value, Sequence) and all(hasattr(d, "base_dim") for d in value):
        # mup's own InfShape objects: keep their base dims
        return InfShape(InfDim(d.base_dim, d.dim) for d in value)
    raise TypeError(
        f"{name!r}: expected an InfShape (from make_base_shapes or load_base_shapes), got "
        f"{type(value).__name__}"
    )


def extract_shapes(spec: ShapeSpec, what: str) -> dict[str, Any]:
    """Shapes by canonical name: a list of ints (sizes) or an ``InfShape`` (explicit width)."""
    if isinstance(spec, nn.Module):
        return {canonical_name(n): list(p.shape) for n, p in spec.named_parameters()}
    if isinstance(spec, str | os.PathLike):
        return dict(load_base_shapes(spec))
    if isinstance(spec, Mapping):
        out: dict[str, Any] = {}
        for name, value in spec.items():
            if isinstance(value, torch.Size | list | tuple) and not (
                value and hasattr(value[0], "base_dim")
            ):
                out[canonical_name(str(name))] = [None if v is None else int(v) for v in value]
            else:
                out[canonical_name(str(name))] = _as_infshape(name, value)
        return out
    raise TypeError(
        f"{what} must be an nn.Module, a dict of shapes or InfShapes, or the path of a .bsh "
        f"file; got {type(spec).__name__}"
    )


def _zip(base: Mapping[str, Any], target: Mapping[str, Sequence[Any]], what: str) -> dict[str, Any]:
    extra = sorted(set(base) - set(target))
    missing = sorted(set(target) - set(base))
    if extra or missing:
        parts = []
        if missing:
            parts.append(f"missing from the {what}: {', '.join(missing[:8])}")
        if extra:
            parts.append(f"only in the {what}: {', '.join(extra[:8])}")
        raise MupCompatError(
            f"parameter names differ between the model and its {what} ({'; '.join(parts)}). "
            f"The {what} must be the same architecture (wrapper prefixes such as 'module.' are "
            "ignored)."
        )
    out = {}
    for name, b in base.items():
        dims = list(target[name])
        if len(b) != len(dims):
            raise MupCompatError(
                f"{name!r} has {len(dims)} dims in the model but {len(b)} in the {what}"
            )
        out[name] = zip_infshape(list(b), dims)
    return out


def zip_infshapes(base: ShapeSpec, target: ShapeSpec) -> dict[str, InfShape]:
    """``{name: InfShape}`` of ``target`` against ``base`` (models, shape dicts or files)."""
    target_shapes = {
        k: (v.shape() if isinstance(v, InfShape) else v)
        for k, v in extract_shapes(target, "target").items()
    }
    return _zip(extract_shapes(base, "base"), target_shapes, "base")


def clear_dims(infshapes: Mapping[str, InfShape]) -> dict[str, InfShape]:
    """The same infshapes with every current size dropped (what a ``.bsh`` file holds)."""
    return {k: InfShape.from_base_shape(v.base_shape()) for k, v in infshapes.items()}


def make_base_shapes(
    base_shapes: ShapeSpec, delta_shapes: ShapeSpec, savefile: str | None = None
) -> dict[str, InfShape]:
    """Base infshapes from a base and a delta (same architecture at another width)."""
    shapes = clear_dims(zip_infshapes(base_shapes, delta_shapes))
    if savefile is not None:
        save_base_shapes(shapes, savefile)
    return shapes


def set_base_shapes(
    model: nn.Module,
    base: ShapeSpec,
    rescale_params: bool = True,
    delta: ShapeSpec = None,
    savefile: str | None = None,
    do_assert: bool = True,
    *,
    roles: Mapping[str, str] | None = None,
    layouts: Mapping[str, str] | None = None,
) -> nn.Module:
    """Drop-in for ``mup.set_base_shapes``: make ``model`` width-aware against ``base``.

    Args:
        model: the model (may be wrapped in DataParallel/DDP/torch.compile, may be on meta).
        base: the base model (build it on ``device="meta"``), a dict of shapes, base infshapes
            from ``make_base_shapes``/``load_base_shapes``, the path of a ``.bsh`` file, or
            None (the model is its own base: nothing scales).
        rescale_params: convert PyTorch's default init to mup's µP init (readout weight and bias,
            Linear/Conv biases); pass False for a model loaded from a checkpoint.
        delta: the architecture at a second width, to tell width dims apart when ``model`` has
            base width.
        savefile: also write the base shapes to this ``.bsh`` file.
        do_assert: raise for an ``nn.Linear`` readout (width → finite) that is not a
            ``MuReadout``: it would get no 1/width multiplier.
        roles, layouts: mutransfer's overrides (fnmatch patterns → role / layout) for weights
            whose role cannot be inferred.
    Returns:
        ``model``.
    """
    shapes = {canonical_name(n): list(p.shape) for n, p in model.named_parameters()}
    base_info = shapes if base is None else extract_shapes(base, "base")
    if delta is not None:
        delta_shapes = {
            k: (v.shape() if isinstance(v, InfShape) else v)
            for k, v in extract_shapes(delta, "delta").items()
        }
        base_info = _zip(base_info, delta_shapes, "delta")
    infshapes: dict[str, InfShape] = _zip(base_info, shapes, "base")
    if savefile is not None:
        save_base_shapes(infshapes, savefile)
    state = _attach(model, infshapes, roles=roles, layouts=layouts)
    if do_assert:
        assert_hidden_size_inf(model)
    _warn_unscaled_readouts(model, state)
    if rescale_params:
        _rescale(model)
    return model


def apply_infshapes(model: nn.Module, infshapes: Mapping[str, Any]) -> None:
    """Drop-in for ``mup.apply_infshapes``: give ``model``'s parameters these infshapes.

    mup assigns ``p.infshape = infshapes[name]`` for every parameter; here the infshapes (by
    name, wrapper prefixes ignored, extra names ignored as in mup) become the model's compat
    state, with its plans and readout multipliers, exactly as ``set_base_shapes`` would leave
    it but without rescaling anything or checking readouts. Values may be ``InfShape`` objects
    of this module or of mup (``get_infshapes(other_model)``, ``load_base_shapes(file)``); the
    current sizes are the model's own.
    """
    infshapes = {canonical_name(k): v for k, v in infshapes.items()}
    params = [(canonical_name(n), p) for n, p in model.named_parameters()]
    missing = [name for name, _ in params if name not in infshapes]
    if missing:
        raise MupCompatError(
            f"apply_infshapes: no infshape for {', '.join(missing[:8])}"
            f"{' ...' if len(missing) > 8 else ''} (infshapes must name every parameter of the "
            "model, e.g. get_infshapes(model_of_the_same_architecture))"
        )
    shapes: dict[str, InfShape] = {}
    for name, p in params:
        shape = _as_infshape(name, infshapes[name])
        if len(shape) != p.dim():
            raise MupCompatError(
                f"apply_infshapes: {name!r} has {p.dim()} dims but its infshape {shape!r} has "
                f"{len(shape)}"
            )
        shapes[name] = shape.with_dims(p.shape)
    _attach(model, shapes)


def _attach(
    model: nn.Module,
    infshapes: dict[str, InfShape],
    *,
    roles: Mapping[str, str] | None = None,
    layouts: Mapping[str, str] | None = None,
) -> MupState:
    """Build the plans for ``infshapes``, keep them beside ``model``, set readout multipliers."""
    plans = build_plans(unwrap(model), infshapes, roles=roles, layouts=layouts)
    state = MupState(infshapes=infshapes, plans=plans)
    register(model, state)
    _set_readout_multipliers(model, state)
    return state


def _set_readout_multipliers(model: nn.Module, state: MupState) -> None:
    for module in model.modules():
        if isinstance(module, MuReadout):
            _, name = lookup(module.weight, "set_base_shapes")
            # mup: the width multiplier of the weight's last width dimension (the fan-in)
            module._width_mult = float(state.infshapes[name].width_mult())
            multiplier = float(module.output_mult) / module._width_mult
            for plan in state.plans.values():
                entry = plan[name]
                if not entry.tied_roles:  # the plan shows the multiplier MuReadout applies
                    plan.tensors[entry.name] = dataclasses.replace(entry, multiplier=multiplier)


def _warn_unscaled_readouts(model: nn.Module, state: MupState) -> None:
    """Readouts that are not a ``MuReadout`` (a Conv or ConvTranspose from width to a finite
    number of channels, a raw parameter) train without µP's 1/width multiplier: under mup
    silently, here with a warning."""
    plan = state.plan("adam")
    for name, module in unwrap(model).named_modules():
        if isinstance(module, MuReadout | nn.Linear):
            continue  # MuReadout is right; a plain Linear readout is assert_hidden_size_inf's
        for leaf, _ in module.named_parameters(recurse=False):
            key = canonical_name(f"{name}.{leaf}" if name else leaf)
            if plan[key].role == "output":
                warnings.warn(
                    f"{key!r} ({type(module).__name__}) maps width to a finite size (a readout) "
                    "but gets no 1/width output multiplier, as under mup, where only MuReadout "
                    "(a Linear) applies one. Use MuReadout, scale the readout's input by "
                    f"1/{plan[key].m_in:g} in the model, or use mutransfer.parametrize.",
                    UserWarning,
                    stacklevel=3,
                )


def assert_hidden_size_inf(model: nn.Module) -> None:
    """Raise for an ``nn.Linear`` mapping width to a finite size that is not a ``MuReadout``."""
    if state_of(model) is None:
        raise MupCompatError("the model has no base shapes: call set_base_shapes(model, base)")
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or isinstance(module, MuReadout):
            continue
        fan_out, fan_in = infshape_of(module.weight)[:2]  # a Linear is (out, in)
        if fan_in.isinf() and not fan_out.isinf():
            raise MupCompatError(
                f"{canonical_name(name)!r} is an nn.Linear from a width dimension to a finite "
                "one (a readout) but not a MuReadout, so it would get no 1/width output "
                "multiplier. Replace it with MuReadout (MuSharedReadout when its weight is an "
                "embedding's), or pass do_assert=False if that is intended."
            )


def _rescale(model: nn.Module) -> None:
    for module in model.modules():
        meta = any(p.is_meta for p in module.parameters(recurse=False))
        if isinstance(module, MuReadout):
            if meta:
                continue  # nothing to rescale yet; to_empty + init comes later
            module._rescale_parameters()
        elif isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
            if meta:
                continue
            rescale_linear_bias(module)
