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
    """Exponents for one quantity: ``m_in**a · m_out**b · m_L**c · fan_in**d · fan_out**e``.

    ``m_*`` are ratios to the base (µP, CompleteP: the base width's values are the tuned ones);
    ``fan_in``/``fan_out`` are absolute sizes, for parametrizations without a base width (u-µP).
    """

    m_in: float = 0.0
    m_out: float = 0.0
    m_depth: float = 0.0
    fan_in: float = 0.0
    fan_out: float = 0.0

    def __call__(
        self,
        m_in: float,
        m_out: float,
        m_depth: float = 1.0,
        fan_in: float = 1.0,
        fan_out: float = 1.0,
    ) -> float:
        return float(
            m_in**self.m_in
            * m_out**self.m_out
            * m_depth**self.m_depth
            * fan_in**self.fan_in
            * fan_out**self.fan_out
        )

    def __mul__(self, other: Scaling) -> Scaling:
        """Combine two scalings (exponents add): e.g. a width rule times a depth correction."""
        return Scaling(
            self.m_in + other.m_in,
            self.m_out + other.m_out,
            self.m_depth + other.m_depth,
            self.fan_in + other.fan_in,
            self.fan_out + other.fan_out,
        )

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
      ``σ / sqrt(base_fan_in)`` (one-hot inputs such as embeddings have fan-in 1), or σ itself
      when ``init_base="unit"`` (u-µP).
    - ``input_multiplier`` (α_in), ``output_multiplier`` (α_out): constant forward multipliers on
      input and readout weights; ``attention_multiplier`` (α_attn) on the attention logits.
    - ``lr_multipliers``: constant LR factors per role (``{"output": 0.5}``), tuned and
      transferred like the other constants.
    - ``zero_init_readout``: initialise readout weights to zero (recommended by TP5 for long
      runs; at short horizons it costs loss, so it is an option, not the default).
    - ``weight_decay``: ``"coupled"`` (torch's AdamW: decay per step = LR × λ, so the per-tensor
      LR scale also scales it; the ``wd`` exponents of the table apply) or ``"independent"``
      (decay per step = λ × the schedule's factor, whatever the peak or per-tensor LR: width-
      and depth-independent, so the table's ``wd`` exponents, written for the coupled form, do
      not apply).
    - ``attention``: ``"mup"`` scales logits by 1/d_head (times √base_d_head, so base width equals
      SP); ``"sp"`` by 1/√d_head; ``"unit"`` by 1/d_head with no base (u-µP).
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
    attention: Literal["mup", "sp", "unit"] = "mup"
    residual_depth_exponent: float = 0.0
    init_base: Literal["base_fan_in", "unit"] = "base_fan_in"
    description: str = ""
    role_init_std: Mapping[str, float] = field(default_factory=dict)
    """Optional per-role σ overriding ``init_std`` (e.g. ``{"input": 0.02}``)."""
    lr_multipliers: Mapping[str, float] = field(default_factory=dict)

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

    def lr_multiplier(self, role: str) -> float:
        return float(self.lr_multipliers.get(role, 1.0))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["families"] = {
            fam: {role: dataclasses.asdict(r) for role, r in table.items()}
            for fam, table in self.families.items()
        }
        data["role_init_std"] = dict(self.role_init_std)
        data["lr_multipliers"] = dict(self.lr_multipliers)
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
    # Tensor Programs V, Table 8 (Adam), with widths normalised by the base width. Adam ε is
    # scaled like the gradients of the hidden weights (∝ 1/m_in), else it dominates √v at width.
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


def _mup_adafactor() -> dict[str, RoleRule]:
    # torch.optim.Adafactor steps by lr × RMS(W) × (normalised gradient): the step is relative
    # to the weight's scale. Hidden weights have RMS ∝ m_in^-½, so an extra m_in^-½ in the LR
    # gives µP's per-entry step ∝ 1/m_in; the readout (explicit form, init const) keeps its LR.
    return {
        "input": RoleRule(),
        "hidden": RoleRule.make(init=-0.5, lr=-0.5),
        "output": RoleRule.make(multiplier=-1),
        "vector": RoleRule(),
        "scalar": RoleRule(),
    }


def _mup_muon() -> dict[str, RoleRule]:
    # Muon orthogonalises the hidden weights' update; µP in spectral form (Yang, Simon & Bernstein
    # 2023) wants ‖ΔW‖ ∝ √(fan_out/fan_in). torch's Muon (adjust_lr_fn="original") multiplies the
    # LR by √max(1, fan_out/fan_in), already width-independent when both dims scale together,
    # so relative to the base only √(m_out/m_in) remains. Every other role is trained by AdamW
    # beside Muon (Muon takes 2-D hidden matrices only) and follows µP-Adam.
    table = _mup_adam()
    table["hidden"] = RoleRule(init=Scaling(-0.5), lr=Scaling(-0.5, 0.5))
    return table


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


# How each optimizer family transforms an absorbed forward multiplier (see FamilyAlgebra).
FAMILY_ALGEBRA.update(
    {
        # sign-based: the step is ±lr per entry whatever the gradient's scale, like Adam
        "lion": FamilyAlgebra(lr_power=1.0, eps_power=0.0, wd_power=-1.0),
        # relative steps: the step already scales with the weight, so nothing changes
        "adafactor": FamilyAlgebra(lr_power=0.0, eps_power=0.0, wd_power=0.0),
        # the orthogonalised update is scale-invariant like Adam; the AdamW side is Adam
        "muon": FamilyAlgebra(lr_power=1.0, eps_power=-1.0, wd_power=-1.0),
    }
)

_SP_FAMILIES = {fam: _sp() for fam in ("adam", "sgd", "lion", "adafactor", "muon")}

SP = Rules(
    name="sp",
    families=_SP_FAMILIES,
    attention="sp",
    description="Standard parametrization: PyTorch's fan-in init, one LR, 1/sqrt(d) attention.",
)

MUP = Rules(
    name="mup",
    families={
        "adam": _mup_adam(),
        "sgd": _mup_sgd(),
        # Lion's sign update has Adam's per-entry size, so it follows Adam's table (no ε)
        "lion": {role: dataclasses.replace(r, eps=ONE) for role, r in _mup_adam().items()},
        "adafactor": _mup_adafactor(),
        "muon": _mup_muon(),
    },
    attention="mup",
    description="Maximal Update Parametrization (Tensor Programs V, Table 8), 1/d attention.",
)


def depth_rules(base: Rules, alpha: float, name: str) -> Rules:
    """Add the depth corrections of the α-family (CompleteP α=1, Depth-µP α=½) to width rules.

    Residual branches are multiplied by m_L^-α; for Adam-like optimizers the hidden weights and
    the vectors inside blocks get LR × m_L^(α-1) and the hidden ε × m_L^-α (the gradients of a
    branch shrink like its multiplier); CompleteP's coupled weight decay grows with m_in so
    that LR × λ stays width-independent (Dey et al. 2025, Table 1; Bordelon et al. / Yang et al.
    Tensor Programs VI for α=½). SGD keeps its width table: its depth-µP LR is depth-independent.
    Tensors outside the repeated blocks (embeddings, readout) have m_L = 1 and are unaffected.
    """
    lr_depth = Scaling(m_depth=alpha - 1.0)
    families: dict[str, dict[str, RoleRule]] = {}
    for fam, table in base.families.items():
        new = dict(table)
        if fam != "sgd":
            hidden = table.get("hidden", RoleRule())
            wd = hidden.wd * Scaling(m_in=1.0) if alpha == 1.0 else hidden.wd
            eps = hidden.eps * Scaling(m_depth=-alpha) if fam in ("adam", "muon") else hidden.eps
            new["hidden"] = dataclasses.replace(hidden, lr=hidden.lr * lr_depth, eps=eps, wd=wd)
            vector = table.get("vector", RoleRule())
            new["vector"] = dataclasses.replace(vector, lr=vector.lr * lr_depth)
        families[fam] = new
    return base.with_(
        name=name,
        families=families,
        residual_depth_exponent=-alpha,
        description=f"{base.description} With depth rules α={alpha:g} (residual × m_L^-{alpha:g}).",
    )


COMPLETEP = depth_rules(MUP, 1.0, "completep")
DEPTH_MUP = depth_rules(MUP, 0.5, "depth-mup")


def _unit_mup(input_lr: Literal["empirical", "mup"] = "empirical") -> dict[str, RoleRule]:
    # u-µP (Blake et al. 2024), Adam: unit-variance weights, the scales live in the forward ops
    # (hidden 1/√fan_in, readout 1/fan_in), absolute fans rather than ratios to a base width.
    # Their empirical input rule scales the embedding LR by 1/√fan_out; "mup" keeps it constant,
    # which makes u-µP equal to µP up to constants.
    input_rule = RoleRule(lr=Scaling(fan_out=-0.5)) if input_lr == "empirical" else RoleRule()
    return {
        "input": input_rule,
        "hidden": RoleRule(multiplier=Scaling(fan_in=-0.5), lr=Scaling(fan_in=-0.5)),
        "output": RoleRule(multiplier=Scaling(fan_in=-1.0)),
        "vector": RoleRule(lr=Scaling(m_depth=-0.5)),
        "scalar": RoleRule(),
    }


UNIT_MUP = Rules(
    name="u-mup",
    families={"adam": _unit_mup()},
    attention="unit",
    init_base="unit",
    residual_depth_exponent=-0.5,
    weight_decay="independent",
    description="Unit-scaled µP (Blake et al. 2024): unit init, scales in the forward ops.",
)


def unit_mup(input_lr: Literal["empirical", "mup"] = "empirical") -> Rules:
    """u-µP, optionally with µP's constant input LR (then it equals µP up to constants)."""
    if input_lr == "empirical":
        return UNIT_MUP
    return UNIT_MUP.with_(name="u-mup-const-input", families={"adam": _unit_mup("mup")})


PRESETS: dict[str, Rules] = {r.name: r for r in (SP, MUP, COMPLETEP, DEPTH_MUP, UNIT_MUP)}


def get_rules(rules: str | Rules) -> Rules:
    """Resolve a preset name (``"sp"``, ``"mup"``, ...) or pass a ``Rules`` through."""
    if isinstance(rules, Rules):
        return rules
    if not isinstance(rules, str):
        raise TypeError(
            f"rules must be a preset name ({', '.join(sorted(PRESETS))}) or a mutransfer.Rules "
            f"object, got {rules!r}"
        )
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
# the same algorithm (apex FusedAdam, lion-pytorch's Lion, adam-atan2) are recognised without
# importing them.
_FAMILY_BY_CLASS = {
    "adam": "adam",
    "adamw": "adam",
    "nadam": "adam",
    "radam": "adam",
    "adamax": "adam",
    "fusedadam": "adam",
    "adamatan2": "adam",
    "sgd": "sgd",
    "lion": "lion",
    "adafactor": "adafactor",
    "muon": "muon",
}


def optimizer_family(optimizer: Any) -> str:
    """Map ``"adamw"``, ``torch.optim.AdamW`` or an optimizer instance to its rule family."""
    if isinstance(optimizer, str):
        key = optimizer.lower().replace("-", "").replace("_", "")
    else:
        cls = optimizer if isinstance(optimizer, type) else type(optimizer)
        key = cls.__name__.lower()
    return _FAMILY_BY_CLASS.get(key, key)
