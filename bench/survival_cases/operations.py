"""The in-process operations, one function each: ``(library) -> the model to train next``.

Every function starts from a freshly set-up model (``lib.build()``, seed 0, the reference's
initial weights) and returns what a training script would go on with after the operation.
Nothing library-specific is re-run afterwards except building the optimizer: the question is
whether the library's metadata came through the operation by itself.
"""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any

import torch
from torch import nn


def deepcopy(lib: Any) -> nn.Module:
    """``copy.deepcopy`` (EMA/SWA copies, ``AveragedModel``, model soups)."""
    return copy.deepcopy(lib.build())


def pickle_roundtrip(lib: Any) -> nn.Module:
    """``pickle.dumps``/``loads`` of the whole module (``torch.save(model)``, multiprocessing)."""
    loaded: nn.Module = pickle.loads(pickle.dumps(lib.build()))
    return loaded


def state_dict_roundtrip(lib: Any) -> nn.Module:
    """Checkpoint resume: ``torch.save(state_dict)``, a new model set up with another seed,
    ``load_state_dict``."""
    buffer = io.BytesIO()
    torch.save(lib.build().state_dict(), buffer)
    buffer.seek(0)
    model = lib.build(seed=1)
    model.load_state_dict(torch.load(buffer, weights_only=True))
    return model


def to_empty(lib: Any) -> nn.Module:
    """Big-model path: set up on ``meta``, ``to_empty(device="cpu")``, load the weights."""
    weights = lib.build().state_dict()
    model = lib.build(meta=True)
    model.to_empty(device="cpu")
    model.load_state_dict(weights)
    return model


def compile_fullgraph(lib: Any) -> nn.Module:
    """``torch.compile(model, fullgraph=True)``: a graph break raises instead of falling back."""
    compiled: nn.Module = torch.compile(lib.build(), fullgraph=True)  # type: ignore[assignment]
    return compiled


IN_PROCESS = {
    "deepcopy": deepcopy,
    "pickle": pickle_roundtrip,
    "state_dict round trip": state_dict_roundtrip,
    "meta → to_empty": to_empty,
    "torch.compile (fullgraph)": compile_fullgraph,
}
