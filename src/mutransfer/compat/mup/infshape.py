"""mup's view of a tensor shape: which dimensions are *width* and what their base size is.

microsoft/mup describes every parameter by an ``InfShape``, a tuple of ``InfDim(base_dim, dim)``
where ``base_dim is None`` marks a finite (non-width) dimension. Its ``.bsh`` files, its init
functions and the user code written against it speak this vocabulary, so the compatibility layer
keeps it as plain data. Unlike mup, nothing here is ever attached to a parameter: the shapes live
in the model's compat state (see ``state.py``) and are looked up by parameter identity or name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class InfDim:
    """One dimension: ``dim`` now, ``base_dim`` at base width (``None``: not a width dim)."""

    __slots__ = ("base_dim", "dim")

    def __init__(self, base_dim: int | None, dim: int | None) -> None:
        self.base_dim = base_dim
        self.dim = dim

    def isinf(self) -> bool:
        """True for a width ("infinite") dimension."""
        return self.base_dim is not None

    def width_mult(self) -> float:
        """``dim / base_dim`` for a width dimension, 1 otherwise."""
        if self.base_dim is None:
            return 1
        if self.dim is None:
            raise ValueError(
                "this InfDim has no current size (a base shape loaded from a file); "
                "apply it to a model with set_base_shapes first"
            )
        return self.dim / self.base_dim

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, InfDim) and self.base_dim == other.base_dim and self.dim == other.dim
        )

    def __hash__(self) -> int:
        return hash((self.base_dim, self.dim))

    def __repr__(self) -> str:
        return f"InfDim({self.base_dim}, {self.dim})"


class InfShape(tuple[InfDim, ...]):
    """A tuple of ``InfDim``. ``main`` is the last width dimension (the fan-in of a hidden
    ``(out, in)`` weight, the only width dim of a vector-like tensor): mup scales by it."""

    main_idx: int | None
    main: InfDim | None

    def __new__(cls, dims: Iterable[InfDim] = ()) -> InfShape:
        items = tuple(dims)
        for d in items:
            if not isinstance(d, InfDim):
                raise TypeError(f"InfShape holds InfDim objects, got {type(d).__name__}")
        self = super().__new__(cls, items)
        self.main_idx = self.main = None
        for i in range(len(items) - 1, -1, -1):
            if items[i].isinf():
                self.main_idx, self.main = i, items[i]
                break
        return self

    def ninf(self) -> int:
        """How many dimensions are width dimensions."""
        return sum(1 for d in self if d.isinf())

    def width_mult(self) -> float:
        """The width multiplier of the main dimension (1 when there is none)."""
        return self.main.width_mult() if self.main is not None else 1

    def fanin_fanout(self) -> tuple[InfDim, InfDim]:
        """``(dims[1], dims[0])``: torch.nn.init's convention, which mup follows."""
        if len(self) < 2:
            raise ValueError("fan-in and fan-out are undefined for a tensor with fewer than 2 dims")
        return self[1], self[0]

    def fanin_fanout_mult_ratio(self) -> float:
        fan_in, fan_out = self.fanin_fanout()
        return fan_in.width_mult() / fan_out.width_mult()

    def base_shape(self) -> list[int | None]:
        return [d.base_dim for d in self]

    def shape(self) -> list[int | None]:
        return [d.dim for d in self]

    def serialize(self) -> dict[str, list[int | None]]:
        return {"base_shape": self.base_shape(), "shape": self.shape()}

    @classmethod
    def deserialize(cls, data: dict[str, Sequence[int | None]]) -> InfShape:
        return cls(InfDim(b, d) for b, d in zip(data["base_shape"], data["shape"], strict=True))

    @classmethod
    def from_base_shape(cls, base_shape: Sequence[int | None]) -> InfShape:
        return cls(InfDim(b, None) for b in base_shape)

    def with_dims(self, dims: Sequence[int]) -> InfShape:
        """The same width dimensions and base sizes, at the sizes ``dims``."""
        return InfShape(InfDim(d.base_dim, int(n)) for d, n in zip(self, dims, strict=True))

    def __repr__(self) -> str:
        return f"InfShape([{', '.join(repr(d) for d in self)}])"


def zip_infshape(
    base_dims: Sequence[Any], dims: Sequence[int], fin_if_same: bool = True
) -> InfShape:
    """An ``InfShape`` from base dims (ints, or ``InfDim`` whose base is kept) and sizes.

    An int base dim equal to the size is finite (unless ``fin_if_same=False``), a different
    one is a width dimension with that base.
    """
    out = []
    for base, size in zip(base_dims, dims, strict=True):
        if isinstance(base, InfDim):
            out.append(InfDim(base.base_dim, int(size)))
        elif base is None:
            out.append(InfDim(None, int(size)))
        elif isinstance(base, int):
            same = base == size and fin_if_same
            out.append(InfDim(None if same else int(base), int(size)))
        else:
            raise TypeError(f"a base dimension must be an int, None or InfDim, got {base!r}")
    return InfShape(out)
