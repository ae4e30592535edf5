"""A drop-in for microsoft/mup, running on mutransfer's plan.

Change one import — ``import mup`` → ``from mutransfer.compat import mup`` (or
``from mup.optim import MuAdam`` → ``from mutransfer.compat.mup.optim import MuAdam``) — and the
same calls give the same numbers as mup 1.0 (init, per-parameter LR and weight decay, readout
multiplier), while fixing what mup gets wrong:

- its width metadata lived on parameters (``p.infshape``) and was lost by ``copy.deepcopy``,
  ``AveragedModel``/EMA copies, ``Module.to_empty`` and FSDP2; here it lives beside the model;
- ``MuSharedReadout`` scaled the tied embedding's std by √m (issue #55) and had a bias of the
  wrong size;
- base shapes saved from a DataParallel model did not load on an unwrapped one;
- schedulers that set absolute LRs (``OneCycleLR``) silently erased the per-group scales: the
  groups here carry ``lr_scale``, so ``scaled_lrs(opt, max_lr)`` and ``check_optimizer(opt)``
  work.

``p.infshape`` reads as under mup (and ``infshape_of(p)`` also accepts ``p.data``);
``plan_of(model)`` gives the mutransfer plan (``plan.table()`` prints every tensor's role and
scales). ``get_coord_data`` gives mup's DataFrame, value for value. See
docs/migrating-from-mup.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import init
from .infshape import InfDim, InfShape, zip_infshape
from .init import (
    constant_std_init_,
    eye_,
    kaiming_normal_,
    kaiming_uniform_,
    normal_,
    ones_,
    trunc_normal_,
    uniform_,
    xavier_normal_,
    xavier_uniform_,
)
from .layer import MuReadout, MuSharedReadout, rescale_linear_bias
from .optim import MuAdam, MuAdamW, MuSGD, check_optimizer, process_param_groups, scaled_lrs
from .plans import MUP_COMPAT
from .shape import (
    apply_infshapes,
    assert_hidden_size_inf,
    clear_dims,
    get_infshapes,
    get_shapes,
    load_base_shapes,
    make_base_shapes,
    save_base_shapes,
    set_base_shapes,
    zip_infshapes,
)
from .state import MupCompatError, infshape_of, plan_of

name = "mup"

__all__ = [
    "MUP_COMPAT",
    "InfDim",
    "InfShape",
    "MuAdam",
    "MuAdamW",
    "MuReadout",
    "MuSGD",
    "MuSharedReadout",
    "MupCompatError",
    "apply_infshapes",
    "assert_hidden_size_inf",
    "check_optimizer",
    "clear_dims",
    "constant_std_init_",
    "eye_",
    "get_coord_data",
    "get_infshapes",
    "get_shapes",
    "infshape_of",
    "init",
    "kaiming_normal_",
    "kaiming_uniform_",
    "load_base_shapes",
    "make_base_shapes",
    "normal_",
    "ones_",
    "plan_of",
    "plot_coord_data",
    "process_param_groups",
    "rescale_linear_bias",
    "save_base_shapes",
    "scaled_lrs",
    "set_base_shapes",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zip_infshape",
    "zip_infshapes",
]


def __getattr__(attr: str) -> Any:
    # the coordinate check pulls in mutransfer.coord (and pandas when called): load it on use
    if attr in ("coord_check", "get_coord_data", "plot_coord_data"):
        module = importlib.import_module(f"{__name__}.coord_check")
        return module if attr == "coord_check" else getattr(module, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
