"""Where the compat layer keeps what mup stored on parameters: a state object on the root module.

microsoft/mup writes ``p.infshape`` onto every parameter, and everything that replaces parameter
objects loses it: ``copy.deepcopy`` (EMA copies, ``AveragedModel``), ``Module.to_empty``,
FSDP2's ``fully_shard``, ``weight_norm``. Here nothing is written onto parameters:

- ``set_base_shapes`` puts a ``MupState`` (the infshapes and the mutransfer plans, keyed by
  parameter *name*) on the root module and records the root in a weak set;
- a registry maps parameter identity to ``(root, name)`` for a fast lookup;
- a parameter the registry does not know (it was replaced by ``to_empty``, ``fully_shard``...)
  is found by scanning the registered roots' ``named_parameters``;
- ``deepcopy`` of a root copies its state; ``MupState.__deepcopy__`` registers the copy, so an
  EMA or ``AveragedModel`` copy is parametrized like its original;
- each registry entry holds its model's state (not the model): parameters that outlive their
  model (``MuAdam(list(build().parameters()))``) keep their shapes and LR scales, as mup's
  ``p.infshape`` does.

Optimizer constructors (``MuAdam(model.parameters())``) and init functions receive bare tensors,
which is why identity lookup is needed at all. Code written against mup that reads
``p.infshape`` gets it from the same lookup: ``nn.Parameter`` gains a read-only fallback
attribute ``infshape`` (see ``_InfShapeAttribute``) once a model is registered.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...plan import Plan
from ...roles import canonical_name
from .infshape import InfShape

ATTRIBUTE = "_mutransfer_mup"
"""Name of the attribute holding the ``MupState`` on a parametrized root module."""


class MupCompatError(ValueError):
    """The compat layer was used in a way it cannot serve; the message says how to fix it."""


@dataclass
class MupState:
    """What ``set_base_shapes`` learned about one model: shapes and plans, keyed by name."""

    infshapes: dict[str, InfShape]
    plans: dict[str, Plan]
    """One plan per optimizer family (``"adam"``, ``"sgd"``): same roles, different LR rules."""
    _root: weakref.ref[nn.Module] | None = field(default=None, repr=False, compare=False)

    def plan(self, family: str) -> Plan:
        try:
            return self.plans[family]
        except KeyError:
            raise MupCompatError(
                f"no plan for optimizer family {family!r}; known: {', '.join(self.plans)}"
            ) from None

    @property
    def root(self) -> nn.Module | None:
        return self._root() if self._root is not None else None

    def __deepcopy__(self, memo: dict[int, Any]) -> MupState:
        # Called while the model's __dict__ is being copied: the new root and (module attributes
        # come after _parameters/_modules) the new parameters are already in ``memo``.
        new = MupState(self.infshapes, self.plans)
        memo[id(self)] = new
        old_root = self.root
        if old_root is None:
            return new
        new_root = memo.get(id(old_root))
        if isinstance(new_root, nn.Module):
            new._root = weakref.ref(new_root)
            _ROOTS.add(new_root)
            for name, p in old_root.named_parameters():
                copied = memo.get(id(p))
                if isinstance(copied, torch.Tensor):
                    _remember(copied, new_root, canonical_name(name), new)
        return new

    def __getstate__(self) -> dict[str, Any]:
        # pickling (torch.save of a whole model): weak references cannot be pickled, and a loaded
        # model must be registered again (set_base_shapes(..., rescale_params=False))
        return {"infshapes": self.infshapes, "plans": self.plans, "_root": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass(frozen=True)
class _Entry:
    """What the registry knows about one parameter. ``state`` is held strongly (the parameter
    may outlive its model, and mup's ``p.infshape`` did too); the model only weakly."""

    param: weakref.ref[torch.Tensor]
    root: weakref.ref[nn.Module]
    state: MupState
    name: str

    def current_state(self) -> MupState:
        """The model's state if the model is alive (``set_base_shapes`` may have run again),
        else the state the parameter was registered with."""
        root = self.root()
        state = getattr(root, ATTRIBUTE, None) if root is not None else None
        return state if isinstance(state, MupState) else self.state


_ROOTS: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_BY_ID: dict[int, _Entry] = {}


def _remember(p: torch.Tensor, root: nn.Module, name: str, state: MupState) -> None:
    key = id(p)

    def forget(_: object, key: int = key) -> None:
        _BY_ID.pop(key, None)

    _BY_ID[key] = _Entry(weakref.ref(p, forget), weakref.ref(root), state, name)


_WRAPPERS = ("module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside wrappers (DataParallel, DDP, torch.compile): the state lives there, so
    that it follows the model when the wrapper is dropped or the model is copied."""
    while len(module._modules) == 1:
        name, child = next(iter(module._modules.items()))
        if name not in _WRAPPERS or child is None:
            break
        module = child
    return module


def register(root: nn.Module, state: MupState) -> None:
    """Attach ``state`` to ``root`` (inside its wrappers) and index its parameters."""
    root = unwrap(root)
    state._root = weakref.ref(root)
    object.__setattr__(root, ATTRIBUTE, state)
    _ROOTS.add(root)
    for name, p in root.named_parameters():
        _remember(p, root, canonical_name(name), state)
    _install_infshape_attribute()


def state_of(module: nn.Module) -> MupState | None:
    """The compat state of a parametrized root (or of a wrapper around one: DDP, compile...)."""
    state = getattr(unwrap(module), ATTRIBUTE, None)
    return state if isinstance(state, MupState) else None


def _roots() -> Iterator[tuple[nn.Module, MupState]]:
    for root in list(_ROOTS):
        state = getattr(root, ATTRIBUTE, None)
        if isinstance(state, MupState):
            yield root, state


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` is a view of all of ``b`` (``p.data``, ``p.detach()``)."""
    if a.is_meta or b.is_meta or a.device != b.device or a.shape != b.shape:
        return False
    try:
        return (
            a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset()
            and a.stride() == b.stride()
        )
    except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
        return False


def find(p: torch.Tensor, *, allow_views: bool = False) -> tuple[MupState, str] | None:
    """``(state, name)`` of a parameter of a model given to ``set_base_shapes``, or None."""
    entry = _BY_ID.get(id(p))
    if entry is not None and entry.param() is p:
        return entry.current_state(), entry.name
    # not indexed: the model's parameters were replaced (to_empty, fully_shard, load_state_dict
    # with assign=True...). Index every registered model again, once, rather than per miss.
    found = None
    for root, state in _roots():
        for name, q in root.named_parameters():
            _remember(q, root, canonical_name(name), state)
            if q is p and found is None:
                found = (state, canonical_name(name))
    if found is not None:
        return found
    if allow_views:
        for _root, state in _roots():
            for name, q in _root.named_parameters():
                if _same_storage(p, q):
                    return state, canonical_name(name)
    return None


def lookup(p: torch.Tensor, what: str, *, allow_views: bool = False) -> tuple[MupState, str]:
    """Like ``find``, but raise an error saying what to do when ``p`` belongs to no model."""
    found = find(p, allow_views=allow_views)
    if found is None:
        raise MupCompatError(
            f"{what} got a tensor of shape {list(p.shape)} that belongs to no model passed to "
            "mutransfer.compat.mup.set_base_shapes. Call set_base_shapes(model, base) on the "
            "model that owns it first (for a model loaded with torch.load, or built again, call "
            "set_base_shapes(model, base, rescale_params=False))."
        )
    return found


def infshape_of(p: torch.Tensor) -> InfShape:
    """What mup stored as ``p.infshape`` (which works too, on parameters); this also accepts
    views such as ``p.data``."""
    state, name = lookup(p, "infshape_of", allow_views=True)
    return state.infshapes[name].with_dims(p.shape)


class _InfShapeAttribute:
    """``p.infshape`` for code written against mup, looked up rather than stored.

    mup writes ``p.infshape`` onto every parameter, so its users read it (custom inits,
    optimizers, ``hasattr(p, "infshape")`` checks). A *non-data* descriptor on ``nn.Parameter``
    serves that read from the registry, so it survives ``deepcopy``, ``to_empty`` and friends;
    a value assigned to ``p.infshape`` (by mup itself, when both libraries are loaded) lives in
    the instance and takes precedence, as for any attribute. For a parameter of no registered
    model the attribute does not exist (``hasattr`` is False), as under mup.
    """

    def __get__(self, p: torch.Tensor | None, owner: type | None = None) -> Any:
        if p is None:
            return self
        found = find(p)
        if found is None:
            raise AttributeError(
                f"'{type(p).__name__}' object has no attribute 'infshape' (it belongs to no model "
                "given to set_base_shapes)"
            )
        state, name = found
        return state.infshapes[name].with_dims(p.shape)


def _install_infshape_attribute() -> None:
    """Give ``nn.Parameter`` the ``infshape`` fallback (once; never over an existing one)."""
    if "infshape" not in vars(nn.Parameter):
        nn.Parameter.infshape = _InfShapeAttribute()  # type: ignore[attr-defined]


def plan_of(p_or_model: torch.Tensor | nn.Module, family: str = "adam") -> Plan:
    """The mutransfer plan behind a parametrized model (or the model owning a parameter)."""
    if isinstance(p_or_model, nn.Module):
        state = state_of(p_or_model)
        if state is None:
            raise MupCompatError(
                f"{type(p_or_model).__name__} has no base shapes: call set_base_shapes(model, "
                "base) first"
            )
    else:
        state, _ = lookup(p_or_model, "plan_of")
    return state.plan(family)
