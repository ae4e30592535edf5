"""Role inference: which dimensions of each parameter scale with width, and what that makes it.

Comparing the model's parameter shapes with those of the same architecture at base width tells
which dimensions are *width* dimensions. Which of a weight's dimensions are its fan-in and which
its fan-out depends on the module that owns it (``Linear`` stores ``(out, in)``, an ``Embedding``
``(vocab, dim)`` with a one-hot fan-in, a Hugging Face ``Conv1D`` ``(in, out)``), so the owner's
*layout* is looked up too. From fan-in/fan-out being width or not follows the role:

=========  ==========  ==========
role       fan-in      fan-out
=========  ==========  ==========
input      finite      width
hidden     width       width
output     width       finite
vector     (1-D tensor with a width dim: biases, norm gains)
scalar     (no width dim at all)
=========  ==========  ==========

This is the step microsoft/mup gets wrong in several ways (it counts width dims and ignores the
layout), so every ambiguous case here raises an error that says how to resolve it.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch
from torch import nn

Shapes: TypeAlias = Mapping[str, Sequence[int]]
BaseSpec: TypeAlias = "nn.Module | Shapes | Callable[[int], nn.Module]"

# Wrappers insert these components into parameter names; the plan is keyed by the bare name so
# that it keeps working under DDP (``module.``), torch.compile (``_orig_mod.``), FSDP1 and
# activation checkpointing. (microsoft/mup keys nothing by name and breaks under DataParallel.)
_WRAPPER_COMPONENTS = frozenset(
    {"module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"}
)

# layout name → (fan_out dims, fan_in dims); negative dims are counted from the end, "rest"
# marks kernel dims that belong to the fan-in but must not change with width.
LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "out,in": ((0,), (1,)),  # nn.Linear, nn.ConvNd (kernel dims appended to fan-in)
    "in,out": ((1,), (0,)),  # transposed weights: HF Conv1D, x @ W parameters, ConvTransposeNd
    "embedding": ((1,), ()),  # (vocab, dim): one-hot input, fan-in 1
    "vector": ((0,), ()),
    # a stack of matrices, one per expert (mixture-of-experts): dim 0 counts them and is
    # neither fan-in nor fan-out; each matrix is used as F.linear(x, W[e]) or x @ W[e]
    "experts,out,in": ((1,), (2,)),
    "experts,in,out": ((2,), (1,)),
}


class RoleError(ValueError):
    """A parameter's role cannot be determined or is inconsistent with its base."""


def canonical_name(name: str) -> str:
    """Drop wrapper components (``module.``, ``_orig_mod.``...) from a parameter name."""
    if "module" not in name and "_orig_mod" not in name:
        return name  # the common case, and every wrapper component contains one of the two
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_COMPONENTS)


def named_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Global parameter shapes by canonical name (tied parameters appear under every name)."""
    return {
        canonical_name(n): tuple(p.shape)
        for n, p in module.named_parameters(remove_duplicate=False)
    }


@dataclass(frozen=True)
class TensorRole:
    """Everything the rules need to know about one parameter tensor."""

    name: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    role: str
    fan_in_dims: tuple[int, ...]
    fan_out_dims: tuple[int, ...]
    width_dims: tuple[int, ...]
    m_in: float
    m_out: float
    base_fan_in: int
    m_depth: float = 1.0
    base_fan_out: int = 1
    aliases: tuple[str, ...] = ()
    tied_roles: tuple[str, ...] = ()
    owner_types: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    base_name: str = ""
    """The name of the corresponding tensor in the base (differs in a deeper model)."""

    @property
    def is_tied(self) -> bool:
        return len(self.tied_roles) > 1

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def scaling_args(self) -> tuple[float, float, float, float, float]:
        """(m_in, m_out, m_depth, fan_in, fan_out): the arguments of ``rules.Scaling``."""
        return (
            self.m_in,
            self.m_out,
            self.m_depth,
            self.m_in * self.base_fan_in,
            self.m_out * self.base_fan_out,
        )


def owner_layout(module: nn.Module | None, tensor_name: str, ndim: int) -> str | None:
    """The layout of a weight, from the type of the module that owns it (None if unknown)."""
    if ndim <= 1:
        return "vector"
    if module is None:
        return None
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return "embedding"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "in,out"
    if isinstance(module, nn.Linear | nn.modules.conv._ConvNd | nn.Bilinear):
        return "out,in"
    if isinstance(module, nn.MultiheadAttention) and tensor_name.endswith("proj_weight"):
        return "out,in"
    # Hugging Face GPT-2's Conv1D stores (in_features, out_features); matched by name so that
    # transformers need not be imported.
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return "in,out"
    return None


def _fan_dims(layout: str, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(fan_out dims, fan_in dims, kernel dims) for a layout applied to an ``ndim`` tensor."""
    out_dims, in_dims = LAYOUTS[layout]
    used = set(out_dims) | set(in_dims)
    if layout == "embedding":
        used.add(0)
    kernel = tuple(d for d in range(ndim) if d not in used)
    if layout in ("out,in", "in,out"):
        in_dims = in_dims + kernel
    return out_dims, in_dims, kernel


def _role_from(in_width: bool, out_width: bool, ndim: int, has_width: bool) -> str:
    if ndim <= 1:
        return "vector" if has_width else "scalar"
    if in_width and out_width:
        return "hidden"
    if out_width:
        return "input"
    if in_width:
        return "output"
    return "scalar"


class DepthMap:
    """Pairs the layers of a deeper (or shallower) model with the base layers of the same kind.

    A *depth container* is a numbered module list (``blocks.0``, ``blocks.1``... or the
    children of an ``nn.Sequential``) whose length differs from the base's. Its elements are
    grouped into *kinds*: same parameter names and number of dimensions, and shapes that agree
    up to the model's width ratios (``nn.Sequential(Linear(12, w), Linear(w, w), Linear(w, 5))``
    holds three kinds: the input layer, the hidden layer, the readout). The k-th element of a
    kind in the model maps onto element ``k mod n`` of the n base elements of that kind, so
    transformer blocks map as ``blocks.i → blocks.(i mod L_base)``, and a readout is never
    paired with a hidden layer. Where a layer matches no base kind, or several, it is an error
    that says how to give the base: a silent mis-pairing would give it another layer's role.

    The depth multiplier m_L of an element is how many more layers of its family the model has
    than the base (a family: kinds that differ only by extra parameters, like T5's first block
    with its position bias): the number of blocks for a block list, 1 for an input or readout
    layer that occurs once in both.
    """

    def __init__(self, model_shapes: Shapes, base_shapes: Shapes) -> None:
        self.model = {n: tuple(s) for n, s in model_shapes.items()}
        self.base = {n: tuple(s) for n, s in base_shapes.items()}
        self._maps: dict[tuple[str, str], dict[int, tuple[int, float]] | None] = {}
        self._changed = _changed_containers(self.model, self.base)
        self._ratios = _width_ratios(self.model, self.base, self._changed)

    def base_name(self, name: str) -> str | None:
        """The base parameter that ``name`` corresponds to, or None."""
        mapped, _ = self._walk(name)
        return mapped if mapped in self.base else None

    def depth_multiplier(self, name: str) -> float:
        """m_L of the first depth container on ``name``'s path (1.0 outside any)."""
        _, m_depth = self._walk(name)
        return m_depth

    def containers(self) -> dict[str, tuple[int, int]]:
        """Depth containers (model names): prefix → (depth, base depth)."""
        return dict(self._changed)

    def _walk(self, name: str) -> tuple[str, float]:
        parts = name.split(".")
        out: list[str] = []
        m_depth: float | None = None
        for k, part in enumerate(parts):
            if part.isdigit() and k < len(parts) - 1:
                mapping = self._map(".".join(parts[:k]), ".".join(out))
                if mapping is not None and int(part) in mapping:
                    index, element_depth = mapping[int(part)]
                    part = str(index)
                    if m_depth is None:
                        m_depth = element_depth
            out.append(part)
        return ".".join(out), 1.0 if m_depth is None else m_depth

    def _map(self, model_prefix: str, base_prefix: str) -> dict[int, tuple[int, float]] | None:
        """model index → (base index, m_L) for one container; None when the lengths agree."""
        key = (model_prefix, base_prefix)
        if key not in self._maps:
            self._maps[key] = self._build_map(model_prefix, base_prefix)
        return self._maps[key]

    def _build_map(
        self, model_prefix: str, base_prefix: str
    ) -> dict[int, tuple[int, float]] | None:
        model = _elements(self.model, model_prefix)
        base = _elements(self.base, base_prefix)
        if not base or len(model) == len(base):
            return None
        ratios = self._ratios or _end_ratios(model, base)
        kinds: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for j, element in sorted(base.items()):
            kinds[_kind_key(element)].append(j)
        model_kinds = {
            i: self._kind_of(model_prefix, i, element, base, kinds, ratios)
            for i, element in sorted(model.items())
        }
        family = _families(list(kinds))
        model_count: dict[tuple[Any, ...], int] = defaultdict(int)
        base_count: dict[tuple[Any, ...], int] = defaultdict(int)
        for kind in model_kinds.values():
            model_count[family[kind]] += 1
        for kind, members in kinds.items():
            base_count[family[kind]] += len(members)
        seen: dict[tuple[Any, ...], int] = defaultdict(int)
        result: dict[int, tuple[int, float]] = {}
        for i, kind in sorted(model_kinds.items()):
            candidates = kinds[kind]
            m_depth = model_count[family[kind]] / base_count[family[kind]]
            result[i] = (candidates[seen[kind] % len(candidates)], m_depth)
            seen[kind] += 1
        return result

    def _kind_of(
        self,
        prefix: str,
        index: int,
        element: dict[str, tuple[int, ...]],
        base: Mapping[int, dict[str, tuple[int, ...]]],
        kinds: Mapping[tuple[Any, ...], list[int]],
        ratios: set[float],
    ) -> tuple[Any, ...]:
        where = f"{prefix}.{index}" if prefix else str(index)
        container = repr(prefix) if prefix else "its top-level container"
        scored: dict[tuple[Any, ...], int] = {}
        for kind, members in kinds.items():
            score = _compatibility(element, base[members[0]], ratios)
            if score is not None:
                scored[kind] = score
        best = [k for k, s in scored.items() if s == max(scored.values(), default=-1)]
        if not best:
            raise RoleError(
                f"the model's depth differs from its base's in {container}, and its layer "
                f"{where!r} ({_describe(element)}) matches no layer of the base there by "
                "parameter names and shapes, so mutransfer cannot tell what it corresponds to. "
                "Build the base from the same code as the model, at the base width and the base "
                "depth (e.g. with the same factory), so that every kind of layer appears in it."
            )
        if len(best) > 1:
            options = "; ".join(
                f"{prefix + '.' if prefix else ''}{kinds[k][0]} ({_describe(base[kinds[k][0]])})"
                for k in best
            )
            raise RoleError(
                f"the model's depth differs from its base's in {container}, and its layer "
                f"{where!r} ({_describe(element)}) could be any of several different base "
                f"layers: {options}. Give the base at the same depth as the model (only the "
                "width differing), so that every layer has a counterpart of the same name."
            )
        return best[0]


def _elements(shapes: Shapes, prefix: str) -> dict[int, dict[str, tuple[int, ...]]]:
    """The elements of a numbered container: index → {relative parameter name: shape}."""
    start = f"{prefix}." if prefix else ""
    out: dict[int, dict[str, tuple[int, ...]]] = defaultdict(dict)
    for name, shape in shapes.items():
        if not name.startswith(start):
            continue
        head, _, rest = name[len(start) :].partition(".")
        if head.isdigit() and rest:
            out[int(head)][rest] = tuple(shape)
    return dict(out)


def _containers(names: Iterable[str]) -> dict[str, set[int]]:
    """Numbered containers (prefix → indices) on the paths of parameter names."""
    found: dict[str, set[int]] = defaultdict(set)
    for name in names:
        parts = name.split(".")
        for k, part in enumerate(parts[:-1]):
            if part.isdigit():
                found[".".join(parts[:k])].add(int(part))
    return found


def _changed_containers(model: Iterable[str], base: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Numbered containers (by model name) whose length differs from the base's."""
    base_counts = {k: len(v) for k, v in _containers(base).items()}
    return {
        prefix: (len(indices), base_counts[prefix])
        for prefix, indices in _containers(model).items()
        if prefix in base_counts and len(indices) != base_counts[prefix]
    }


def _width_ratios(model: Shapes, base: Shapes, changed: Mapping[str, Any]) -> set[float]:
    """Ratios model/base of the dims that differ, over parameters outside depth containers."""
    inside = tuple(f"{p}." if p else "" for p in changed)
    ratios: set[float] = set()
    for name, shape in model.items():
        if name.startswith(inside) or name not in base:
            continue
        other = base[name]
        if len(other) == len(shape):
            ratios |= {round(a / b, 9) for a, b in zip(shape, other, strict=True) if a != b}
    return ratios


def _end_ratios(
    model: Mapping[int, dict[str, tuple[int, ...]]],
    base: Mapping[int, dict[str, tuple[int, ...]]],
) -> set[float]:
    """Width ratios from a container's first and last elements, for a model that is nothing but
    the container (an ``nn.Sequential`` MLP): its input and readout layers align at the ends."""
    ratios: set[float] = set()
    for i, j in ((min(model), min(base)), (max(model), max(base))):
        a, b = model[i], base[j]
        if set(a) == set(b) and all(len(a[n]) == len(b[n]) for n in a):
            for n in a:
                ratios |= {round(x / y, 9) for x, y in zip(a[n], b[n], strict=True) if x != y}
    return ratios


def _families(kinds: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Kinds that are the same block up to extra parameters (T5's first block alone holds the
    relative position bias) form one family: the depth counts blocks of a family. Kinds whose
    shared parameters differ in shape (an MLP's input, hidden and readout layers) do not."""
    family = {kind: kind for kind in kinds}

    def root(kind: tuple[Any, ...]) -> tuple[Any, ...]:
        while family[kind] != kind:
            kind = family[kind]
        return kind

    for a in kinds:
        for b in kinds:
            shapes_a, shapes_b = dict(a), dict(b)
            shared = set(shapes_a) & set(shapes_b)
            nested = set(shapes_a) <= set(shapes_b) or set(shapes_b) <= set(shapes_a)
            if a != b and nested and shared and all(shapes_a[n] == shapes_b[n] for n in shared):
                family[root(a)] = root(b)
    return {kind: root(kind) for kind in kinds}


def _kind_key(element: Mapping[str, tuple[int, ...]]) -> tuple[Any, ...]:
    return tuple(sorted(element.items()))


def _compatibility(
    element: Mapping[str, tuple[int, ...]],
    base: Mapping[str, tuple[int, ...]],
    ratios: set[float],
) -> int | None:
    """How well a model element fits a base element: None if it cannot be the same kind of layer
    (other parameters, or a dimension that differs by something other than a width ratio), else
    the number of dimensions that are exactly equal."""
    if set(element) != set(base):
        return None
    equal = 0
    for name, shape in element.items():
        other = base[name]
        if len(shape) != len(other):
            return None
        for a, b in zip(shape, other, strict=True):
            if a == b:
                equal += 1
            elif ratios and round(a / b, 9) not in ratios:
                return None
    return equal


def _describe(element: Mapping[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{n} {list(s)}" for n, s in sorted(element.items()))


def _match(patterns: Mapping[str, Any], names: Sequence[str]) -> Any:
    """The value of the first pattern (fnmatch) matching any of ``names``; None if none."""
    for pattern, value in patterns.items():
        if any(fnmatch.fnmatchcase(n, pattern) for n in names):
            return value
    return None


def check_patterns_used(kind: str, patterns: Mapping[str, Any], names: Sequence[str]) -> None:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            close = [n for n in names if pattern.strip("*").split(".")[-1] in n][:5]
            hint = f" Parameter names look like: {', '.join(close or list(names)[:5])}."
            raise RoleError(
                f"{kind} pattern {pattern!r} matches no parameter of the model.{hint} "
                "Patterns are fnmatch globs over names from model.named_parameters(), "
                "e.g. '*.lm_head.weight'."
            )


def infer_roles(
    model: nn.Module,
    base_shapes: Shapes,
    delta_shapes: Shapes | None = None,
    *,
    roles: Mapping[str, str] | None = None,
    layouts: Mapping[str, str] | None = None,
) -> dict[str, TensorRole]:
    """Infer the role of every parameter of ``model`` by comparing with its base shapes.

    ``delta_shapes`` (the same architecture at a second width) tells width dims apart from fixed
    ones when the model itself is at base width. ``roles`` and ``layouts`` map fnmatch patterns of
    parameter names to a role or a layout name (see ``LAYOUTS``) and take precedence.
    """
    roles = dict(roles or {})
    layouts = dict(layouts or {})
    for pattern, layout in layouts.items():
        if layout not in LAYOUTS:
            raise RoleError(
                f"unknown layout {layout!r} for pattern {pattern!r}; "
                f"use one of: {', '.join(LAYOUTS)}"
            )
    for pattern, role in roles.items():
        from .rules import ROLES

        if role not in ROLES:
            raise RoleError(
                f"unknown role {role!r} for pattern {pattern!r}; use one of: {', '.join(ROLES)}"
            )

    modules = {canonical_name(n): m for n, m in model.named_modules(remove_duplicate=False)}
    groups: dict[int, list[tuple[str, torch.Tensor]]] = defaultdict(list)
    for raw_name, p in model.named_parameters(remove_duplicate=False):
        groups[id(p)].append((canonical_name(raw_name), p))
    all_names = [n for members in groups.values() for n, _ in members]
    check_patterns_used("role override", roles, all_names)
    check_patterns_used("layout", layouts, all_names)

    depth = DepthMap(named_shapes(model), base_shapes)
    result: dict[str, TensorRole] = {}
    any_width = False
    for members in groups.values():
        per_alias = [
            _alias_role(
                name, tuple(p.shape), modules, base_shapes, delta_shapes, depth, roles, layouts
            )
            for name, p in members
        ]
        first = per_alias[0]
        any_width = any_width or bool(first.width_dims)
        tied_roles = tuple(dict.fromkeys(r.role for r in per_alias))
        if len(tied_roles) > 1:
            # A tensor used as embedding and readout: init/LR follow the input role (the two agree
            # under µP for Adam and SGD), the readout multiplier stays explicit in the forward.
            primary = next((r for r in per_alias if r.role == "input"), first)
        else:
            primary = first
        result[first.name] = TensorRole(
            name=first.name,
            shape=primary.shape,
            base_shape=primary.base_shape,
            role=primary.role,
            fan_in_dims=primary.fan_in_dims,
            fan_out_dims=primary.fan_out_dims,
            width_dims=primary.width_dims,
            m_in=primary.m_in,
            m_out=primary.m_out,
            base_fan_in=primary.base_fan_in,
            m_depth=primary.m_depth,
            base_fan_out=primary.base_fan_out,
            aliases=tuple(r.name for r in per_alias[1:]),
            tied_roles=tied_roles if len(tied_roles) > 1 else (),
            owner_types=tuple(r.owner_types[0] for r in per_alias),
            extra={"alias_roles": {r.name: r.role for r in per_alias}}
            if len(tied_roles) > 1
            else {},
            base_name=primary.base_name,
        )
    if result and not any_width:
        raise RoleError(
            "no width dimension found: every parameter has the same shape as in the base model, "
            "so mutransfer cannot tell which dimensions scale with width. Build the base at a "
            "different width than the model, or pass delta= (the model at a second width), or "
            "pass base= a width factory with base_width=."
        )
    return result


def _alias_role(
    name: str,
    shape: tuple[int, ...],
    modules: Mapping[str, nn.Module],
    base_shapes: Shapes,
    delta_shapes: Shapes | None,
    depth: DepthMap,
    roles: Mapping[str, str],
    layouts: Mapping[str, str],
) -> TensorRole:
    base_name = depth.base_name(name)
    if base_name is None:
        raise RoleError(
            f"parameter {name!r} (shape {list(shape)}) is missing from the base model. The base "
            "must be the same architecture at base width (and base depth); blocks of a deeper "
            "model map onto base blocks by their index (blocks.7 → blocks.7 mod base depth)."
        )
    base_shape = tuple(base_shapes[base_name])
    if len(base_shape) != len(shape):
        raise RoleError(
            f"parameter {name!r} has shape {list(shape)} but its base {base_name!r} has "
            f"{list(base_shape)}: the number of dimensions changed, which is not a width change."
        )
    if delta_shapes is not None and base_name in delta_shapes:
        delta_shape = tuple(delta_shapes[base_name])
        width_dims = tuple(d for d in range(len(shape)) if delta_shape[d] != base_shape[d])
        for d in range(len(shape)):
            if d not in width_dims and shape[d] != base_shape[d]:
                raise RoleError(
                    f"parameter {name!r}: dimension {d} is {shape[d]} but {base_shape[d]} in the "
                    f"base, while base and delta agree on it ({delta_shape[d]}), so it is not a "
                    "width dimension. Only width dimensions may differ from the base."
                )
    else:
        width_dims = tuple(d for d in range(len(shape)) if shape[d] != base_shape[d])

    parent, _, leaf = name.rpartition(".")
    owner = modules.get(parent)
    owner_type = type(owner).__name__ if owner is not None else "?"
    layout = _match(layouts, [name]) or owner_layout(owner, leaf, len(shape))
    override = _match(roles, [name])
    if layout is None:
        if override is not None or not width_dims:
            layout = "out,in"
        elif (
            len(shape) == 2
            and set(width_dims) >= {0, 1}
            and _ratio(shape, base_shape, 0) == _ratio(shape, base_shape, 1)
        ):
            layout = "out,in"  # width → width with equal ratios: fan-in/out order doesn't matter
        else:
            raise RoleError(
                f"parameter {name!r} (shape {list(shape)}, width dims {list(width_dims)}) is not "
                f"owned by a module with a known layout ({owner_type}), so its fan-in and fan-out "
                "are unknown and its role is ambiguous. Declare it, e.g. "
                f"layouts={{'{name}': 'in,out'}} for a weight used as x @ W, or 'out,in' for "
                f"F.linear(x, W) ('experts,out,in' / 'experts,in,out' for one matrix per "
                f"expert along dim 0), or roles={{'{name}': 'output'}}."
            )
    out_dims, in_dims, kernel = _fan_dims(layout, len(shape))
    changed_kernel = [d for d in kernel if shape[d] != base_shape[d]]
    if layout == "embedding" and 0 in width_dims:
        changed_kernel.append(0)
    if changed_kernel and override is None:
        raise RoleError(
            f"parameter {name!r}: dimension(s) {changed_kernel} changed from the base "
            f"({list(base_shape)} → {list(shape)}) but are not fan-in or fan-out dimensions "
            f"of a {owner_type} (e.g. a kernel size or vocabulary size); they cannot be width."
        )
    fan_in = math.prod(shape[d] for d in in_dims) if in_dims else 1
    fan_out = math.prod(shape[d] for d in out_dims) if out_dims else 1
    base_fan_in = math.prod(base_shape[d] for d in in_dims) if in_dims else 1
    base_fan_out = math.prod(base_shape[d] for d in out_dims) if out_dims else 1
    if len(shape) <= 1:
        fan_out = math.prod(shape) if shape else 1
        base_fan_out = math.prod(base_shape) if base_shape else 1
    in_width = any(d in width_dims for d in in_dims)
    out_width = any(d in width_dims for d in out_dims) or (len(shape) <= 1 and bool(width_dims))
    role = override or _role_from(in_width, out_width, len(shape), bool(width_dims))
    return TensorRole(
        name=name,
        shape=shape,
        base_shape=base_shape,
        role=role,
        fan_in_dims=in_dims,
        fan_out_dims=out_dims,
        width_dims=width_dims,
        m_in=fan_in / base_fan_in,
        m_out=fan_out / base_fan_out,
        base_fan_in=base_fan_in,
        m_depth=depth.depth_multiplier(name),
        base_fan_out=base_fan_out,
        owner_types=(owner_type,),
        base_name=base_name,
    )


def _ratio(shape: Sequence[int], base: Sequence[int], dim: int) -> float:
    return shape[dim] / base[dim]


def depth_containers(
    model_names: Iterable[str], base_names: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """Numbered block lists whose length differs from the base: prefix → (depth, base depth)."""
    return _changed_containers(model_names, base_names)
