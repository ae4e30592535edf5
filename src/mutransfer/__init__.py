"""mutransfer: µP (Maximal Update Parametrization) and µTransfer for any PyTorch model.

Quick start::

    import mutransfer
    plan = mutransfer.parametrize(model, base=base_model_on_meta, rules="mup", optimizer="adamw")
    opt = torch.optim.AdamW(plan.param_groups(lr=3e-3, weight_decay=0.1))
    print(plan)  # role, init std, LR scale and multiplier of every tensor
"""

from .build import parametrize
from .coord import CoordCheckError, CoordReport, coord_check
from .plan import (
    AttentionPlan,
    ModuleScale,
    Plan,
    PlanError,
    TensorPlan,
    scaled_lrs,
)
from .roles import LAYOUTS, RoleError, TensorRole, canonical_name, infer_roles
from .rules import (
    COMPLETEP,
    DEPTH_MUP,
    MUP,
    PRESETS,
    ROLES,
    SP,
    UNIT_MUP,
    RoleRule,
    Rules,
    Scaling,
    UnknownOptimizerError,
    depth_rules,
    get_rules,
    optimizer_family,
    register_preset,
)

__version__ = "0.1.0"

__all__ = [
    "COMPLETEP",
    "DEPTH_MUP",
    "LAYOUTS",
    "MUP",
    "PRESETS",
    "ROLES",
    "SP",
    "UNIT_MUP",
    "AttentionPlan",
    "CoordCheckError",
    "CoordReport",
    "ModuleScale",
    "Plan",
    "PlanError",
    "RoleError",
    "RoleRule",
    "Rules",
    "Scaling",
    "TensorPlan",
    "TensorRole",
    "UnknownOptimizerError",
    "canonical_name",
    "coord_check",
    "depth_rules",
    "get_rules",
    "infer_roles",
    "optimizer_family",
    "parametrize",
    "register_preset",
    "scaled_lrs",
]
