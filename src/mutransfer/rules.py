"""Parametrizations as data: how init, forward multiplier, LR, weight decay and Adam ε scale.

A parametrization (``Rules``) is a table. For every optimizer family (``"adam"``, ``"sgd"``, ...)
and every role (``input``, ``hidden``, ``output``, ``vector``, ``scalar``) it gives the exponents
of the width multipliers ``m_in = fan_in / base_fan_in`` and ``m_out = fan_out / base_fan_out``
(and of the depth multiplier ``m_L = depth / base_depth``) for five quantities:

===============  ====================================================================
``init``         init std  = σ · base_std · m_in^a · m_out^b · m_L^c
``multiplier``   forward multiplier on the weight (α_in / α_out are constants on top)
``lr``           learning-rate scale relative to the base LR
``eps``          Adam ε scale relative to the base ε
``wd``           weight-decay scale relative to the base weight decay
===============  ====================================================================

Keeping the table as data (rather than code paths) means a user defines a new preset in a few
lines, the plan can print exactly which row was applied, and tests can compare the presets with
the published tables (Tensor Programs V, Tables 3 and 8).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ROLES: tuple[str, ...] = ("input", "hidden", "output", "vector", "scalar")
"""Every tensor gets exactly one of these roles (a tied tensor gets two, see ``roles.py``)."""

WeightDecayMode = Literal["coupled", "independent"]


@dataclass(frozen=True)
class Scaling:
    """Exponents of (m_in, m_out, m_L) for one quantity: ``m_in**a * m_out**b * m_L**c``."""

    m_in: float = 0.0
    m_out: float = 0.0
    m_depth: float = 0.0

    def __call__(self, m_in: float, m_out: float, m_depth: float = 1.0) -> float:
        return float(m_in**self.m_in * m_out**self.m_out * m_depth**self.m_depth)

    @classmethod
    def of(cls, value: Scaling | tuple[float, ...] | float | int) -> Scaling:
        """Accept a ``Scaling``, a tuple of exponents ``(a, b[, c])`` or a single ``a``."""
        if isinstance(value, Scaling):
            return value
        if isinstance(value, int | float):
            return cls(float(value))
        return cls(*(float(v) for v in value))


ONE = Scaling()


@dataclass(frozen=True)
class RoleRule:
    """How one role scales under one optimizer family (each field a ``Scaling``)."""

    init: Scaling = ONE
    multiplier: Scaling = ONE
    lr: Scaling = ONE
    eps: Scaling = ONE
    wd: Scaling = ONE

    @classmethod
    def make(cls, **kwargs: Any) -> RoleRule:
        """``RoleRule.make(lr=-1, init=-0.5)``: exponents of m_in given as plain numbers."""
        return cls(**{k: Scaling.of(v) for k, v in kwargs.items()})


# How each optimizer family transforms a forward multiplier ``c`` that is absorbed into the
# weight (init × c): the LR must scale by c**lr_power and ε by c**eps_power for the training
# dynamics to stay identical (Adam is scale-invariant in the gradient, SGD is not). Coupled
# weight decay (torch's AdamW multiplies it by the LR) then scales by c**wd_power.
@dataclass(frozen=True)
class FamilyAlgebra:
    lr_power: float
    eps_power: float
    wd_power: float


FAMILY_ALGEBRA: dict[str, FamilyAlgebra] = {
    # Adam: grad/c, so m/(sqrt(v)+eps) is unchanged iff eps/c; the step must be c times larger.
    "adam": FamilyAlgebra(lr_power=1.0, eps_power=-1.0, wd_power=-1.0),
    # SGD: grad/c and the step must be c times larger, so the LR scales with c**2.
    "sgd": FamilyAlgebra(lr_power=2.0, eps_power=0.0, wd_power=-2.0),
}


@dataclass(frozen=True)
class Rules:
    """A parametrization: a table of ``RoleRule`` per optimizer family, plus tunable constants.

    The constants are the base-width hyperparameters a user tunes on the proxy and transfers:

    - ``init_std`` (σ): global init multiplier; a tensor's std at base width is
      ``σ / sqrt(base_fan_in)`` (one-hot inputs such as embeddings have fan-in 1).
    - ``input_multiplier`` (α_in), ``output_multiplier`` (α_out): constant forward multipliers on
      input and readout weights; ``attention_multiplier`` (α_attn) on the attention logits.
    - ``zero_init_readout``: initialise readout weights to zero (recommended by TP5 for long
      runs; at short horizons it costs loss, so it is an option, not the default).
    - ``weight_decay``: ``"coupled"`` (torch's AdamW: the decay is multiplied by the LR, so a
      per-tensor LR scale also scales the decay) or ``"independent"`` (decay per step does not
      depend on the per-tensor LR, nor on the peak LR).
    - ``attention``: ``"mup"`` scales logits by 1/d_head (times √base_d_head, so base width equals
      SP); ``"sp"`` by 1/√d_head.
    - ``residual_depth_exponent``: residual-branch multiplier is ``m_L**exponent``
      (0 for µP, -1 for CompleteP, -0.5 for Depth-µP).
    """

    name: str
    families: Mapping[str, Mapping[str, RoleRule]]
    init_std: float = 1.0
    input_multiplier: float = 1.0
    output_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    zero_init_readout: bool = False
    weight_decay: WeightDecayMode = "coupled"
    attention: Literal["mup", "sp"] = "mup"
    residual_depth_exponent: float = 0.0
    description: str = ""
    role_init_std: Mapping[str, float] = field(default_factory=dict)
    """Optional per-role σ overriding ``init_std`` (e.g. ``{"input": 0.02}``)."""

    def rule(self, family: str, role: str) -> RoleRule:
        try:
            table = self.families[family]
        except KeyError:
            known = ", ".join(sorted(self.families))
            raise UnknownOptimizerError(
                f"rules {self.name!r} have no entry for optimizer family {family!r}; "
                f"known families: {known}. Pass optimizer= one of those (or an optimizer class "
                f"of that family), or define the family with Rules(families={{...}})."
            ) from None
        return table.get(role, RoleRule())

    def with_(self, **changes: Any) -> Rules:
        """A copy with constants or fields replaced: ``MUP.with_(output_multiplier=2)``."""
        return dataclasses.replace(self, **changes)

    def sigma(self, role: str) -> float:
        return float(self.role_init_std.get(role, self.init_std))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["families"] = {
            fam: {role: dataclasses.asdict(r) for role, r in table.items()}
            for fam, table in self.families.items()
        }
        data["role_init_std"] = dict(self.role_init_std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rules:
        data = dict(data)
        families = {
            fam: {
                role: RoleRule(**{k: Scaling(**v) for k, v in r.items()})
                for role, r in table.items()
            }
            for fam, table in data.pop("families").items()
        }
        return cls(families=families, **data)


class UnknownOptimizerError(ValueError):
    """The rules have no row for the optimizer family asked for."""


def _mup_adam() -> dict[str, RoleRule]:
    # Tensor Programs V, Table 8 (Adam), with widths normalised by the base width.
    return {
        "input": RoleRule(),
        "hidden": RoleRule.make(init=-0.5, lr=-1, eps=-1),
        "output": RoleRule.make(multiplier=-1),
        "vector": RoleRule(),
        "scalar": RoleRule(),
    }


def _mup_sgd() -> dict[str, RoleRule]:
    # Tensor Programs V, Table 8 (SGD). Hidden LR ∝ fan_out/fan_in (1 when both scale together);
    # inputs and vectors ∝ fan_out; the readout ∝ fan_in (its multiplier is 1/fan_in).
    return {
        "input": RoleRule(lr=Scaling(0, 1)),
        "hidden": RoleRule(init=Scaling(-0.5), lr=Scaling(-1, 1)),
        "output": RoleRule(multiplier=Scaling(-1), lr=Scaling(1)),
        "vector": RoleRule(lr=Scaling(0, 1)),
        "scalar": RoleRule(),
    }


def _sp() -> dict[str, RoleRule]:
    # Standard parametrization as PyTorch does it: variance 1/fan_in for every weight with a
    # width fan-in, one LR for everything, no multipliers.
    return {
        "input": RoleRule(),
        "hidden": RoleRule.make(init=-0.5),
        "output": RoleRule.make(init=-0.5),
        "vector": RoleRule(),
        "scalar": RoleRule(),
    }


SP = Rules(
    name="sp",
    families={"adam": _sp(), "sgd": _sp()},
    attention="sp",
    description="Standard parametrization: PyTorch's fan-in init, one LR, 1/sqrt(d) attention.",
)

MUP = Rules(
    name="mup",
    families={"adam": _mup_adam(), "sgd": _mup_sgd()},
    attention="mup",
    description="Maximal Update Parametrization (Tensor Programs V, Table 8), 1/d attention.",
)

PRESETS: dict[str, Rules] = {"sp": SP, "mup": MUP}


def get_rules(rules: str | Rules) -> Rules:
    """Resolve a preset name (``"sp"``, ``"mup"``, ...) or pass a ``Rules`` through."""
    if isinstance(rules, Rules):
        return rules
    try:
        return PRESETS[rules.lower()]
    except KeyError:
        raise ValueError(
            f"unknown rules preset {rules!r}; known presets: {', '.join(sorted(PRESETS))}. "
            "Pass one of those or a mutransfer.Rules object."
        ) from None


def register_preset(rules: Rules) -> Rules:
    """Make a user-defined preset available by name (``parametrize(..., rules=name)``)."""
    PRESETS[rules.name.lower()] = rules
    return rules


# Optimizer classes → family. Matched by class name so that optimizers from other packages with
# the same algorithm (e.g. apex FusedAdam) are recognised without importing them.
_FAMILY_BY_CLASS = {
    "adam": "adam",
    "adamw": "adam",
    "nadam": "adam",
    "radam": "adam",
    "adamax": "adam",
    "fusedadam": "adam",
    "sgd": "sgd",
}


def optimizer_family(optimizer: Any) -> str:
    """Map ``"adamw"``, ``torch.optim.AdamW`` or an optimizer instance to its rule family."""
    if isinstance(optimizer, str):
        key = optimizer.lower()
    else:
        cls = optimizer if isinstance(optimizer, type) else type(optimizer)
        key = cls.__name__.lower()
    return _FAMILY_BY_CLASS.get(key, key)
