"""The batch a coordinate check trains on, and how a model's loss is obtained from it.

The same small batch is used at every step (as microsoft/mup does by default): with the input
fixed, a change in a module's output from one step to the next comes from the updates alone.
A model that computes its own loss (nanoGPT's ``forward(idx, targets)``, Hugging Face's
``labels=``) is given the targets and its loss is used.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CoordCheckError
from .record import first_tensor

Batch: TypeAlias = Any
DataSpec: TypeAlias = "Callable[[torch.Generator], Batch] | Iterable[Batch] | Batch | None"
LossFn: TypeAlias = Callable[[Any, Batch], torch.Tensor]


def batch_for(data: DataSpec, model: nn.Module, generator: torch.Generator) -> Batch:
    """One batch per seed, used at every step (as microsoft/mup does by default).

    With the input fixed, a change in a module's output from one step to the next comes from
    the updates alone, and the logits' learned part can be compared step to step.
    """
    if data is None:
        return default_batch(model, generator)
    if isinstance(data, torch.Tensor | dict):
        return data
    if isinstance(data, tuple | list) and data and isinstance(data[0], torch.Tensor):
        return data  # one batch: (inputs, targets)
    if callable(data):
        return data(generator)
    if isinstance(data, Iterable):
        try:  # batches (a list, a DataLoader): the first one, as mup's fix_data does
            return next(iter(data))
        except StopIteration:
            raise CoordCheckError("data= holds no batch") from None
    return data


def to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def default_batch(
    model: nn.Module, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A small batch for models whose first layer is an Embedding (tokens) or a Linear.

    Small on purpose: µP's limit is width → ∞ at a *fixed* batch. An update sums one term per
    token; when the tokens outnumber the width, that sum is dominated by its incoherent part and
    every slope drifts down by up to ½ (measured: 512 tokens at widths 32–256 push correct µP
    attention logits to slope −0.7), hiding real faults. Language models get 2 windows of 8
    bytes of the shipped text (random bytes when ``mutransfer.data`` has none installed), other
    models 4 Gaussian vectors with random labels over the last layer's outputs.
    """
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise CoordCheckError("the model has no parameters; there is nothing to check")
    first, last = owners[0], owners[-1]
    classes = getattr(last, "out_features", None) or getattr(last, "num_embeddings", None)
    if isinstance(first, nn.Embedding):
        vocab = first.num_embeddings
        seq_len = min(_positions(model) or 8, 8)
        tokens = _text_windows(2, seq_len, generator) if vocab >= 256 else None
        if tokens is None:
            tokens = torch.randint(0, vocab, (2, seq_len + 1), generator=generator)
        targets = tokens[:, 1:]
        if classes is not None and classes != vocab:
            targets = torch.randint(0, int(classes), targets.shape, generator=generator)
        # contiguous, as a data loader gives them: models may .view() them (nanoGPT does)
        return tokens[:, :-1].contiguous(), targets.contiguous()
    if isinstance(first, nn.Linear) and classes is not None:
        inputs = torch.randn(4, first.in_features, generator=generator)
        return inputs, torch.randint(0, int(classes), (4,), generator=generator)
    raise CoordCheckError(
        f"no default data for a model starting with {type(first).__name__}; pass data= "
        "(a batch (inputs, targets) or a callable data(generator) -> batch)"
    )


def _positions(model: nn.Module) -> int | None:
    """The longest sequence the model takes, from its config (reference GPT, nanoGPT, HF)."""
    for attr in ("cfg", "config"):
        config = getattr(model, attr, None)
        for field in ("seq_len", "block_size", "n_positions", "max_position_embeddings"):
            value = getattr(config, field, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def _text_windows(batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor | None:
    try:
        from .. import data as shipped

        corpus = shipped.shakespeare()
    except (ImportError, FileNotFoundError):
        return None
    inputs, targets = corpus.batch("train", batch, seq_len, generator)
    return torch.cat([inputs, targets[:, -1:]], dim=1)


# -------------------------------------------------------------------------- forward and loss
TARGET_ARGUMENTS = ("targets", "labels", "target", "label", "y")
"""Names of a forward argument that takes the targets, in order of preference."""


def targets_argument(model: nn.Module) -> str | None:
    """The forward argument that takes the batch's targets, when the model has one.

    Models that compute their own loss (nanoGPT's ``forward(idx, targets=None)``, Hugging
    Face's ``labels=``) often return something else without targets: nanoGPT returns the
    logits of the last position only, which no loss over every position can use. Given the
    targets, they return the loss they train with, which is the one to check. The first
    parameter is the input and never taken for the targets.
    """
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # a builtin or C-implemented forward: no signature
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in parameters[1:] if p.kind in kinds}
    return next((name for name in TARGET_ARGUMENTS if name in names), None)


def batch_loss(model: nn.Module, batch: Batch, loss: LossFn | None = None) -> torch.Tensor:
    """The loss ``coord_check`` trains ``model`` with on ``batch`` (see its ``loss=``): the
    model's own when its forward takes the targets or it returns one, else cross-entropy for
    integer targets and MSE for float targets."""
    targets_arg = targets_argument(model) if loss is None else None
    return _loss(loss, _forward(model, batch, targets_arg), batch)


def _forward(model: nn.Module, batch: Batch, targets_arg: str | None = None) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, tuple | list):
        if targets_arg is not None and len(batch) >= 2:
            return model(batch[0], **{targets_arg: batch[1]})
        return model(batch[0])
    return model(batch)


def model_loss(output: Any) -> torch.Tensor | None:
    """The loss a model returned itself: ``.loss``, ``output["loss"]``, or the scalar tensor
    of a returned tuple or list (``(logits, loss)``); None when there is none."""
    own = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if isinstance(own, torch.Tensor):
        return own
    if isinstance(output, tuple | list):
        for value in output:
            if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
                return value
    return None


def _loss(loss: LossFn | None, output: Any, batch: Batch) -> torch.Tensor:
    if loss is not None:
        value = loss(output, batch)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise CoordCheckError(
                f"loss= returned {type(value).__name__}"
                + (f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else "")
                + "; it must return a scalar tensor"
            )
        return value.reshape(())
    own = model_loss(output)
    if own is not None:
        return own
    out = first_tensor(output)
    if out is None:
        raise CoordCheckError("the model's output holds no tensor; pass loss=")
    if out.dim() == 0:
        return out
    if not isinstance(batch, tuple | list) or len(batch) < 2:
        raise CoordCheckError(
            "cannot compute a loss: the batch has no targets and the model returns no loss; "
            "pass batches (inputs, targets) or loss=loss(output, batch)"
        )
    targets = batch[1]
    if not targets.is_floating_point():
        logits = out.reshape(-1, out.shape[-1])
        if logits.shape[0] != targets.numel():
            raise CoordCheckError(
                f"the model's output has shape {tuple(out.shape)}: {logits.shape[0]} rows of "
                f"logits for {targets.numel()} targets (shape {tuple(targets.shape)}). Give the "
                "model's forward a targets= or labels= argument and return the loss (it is "
                "then called with the targets), or pass loss=loss(output, batch)"
            )
        return F.cross_entropy(logits.float(), targets.reshape(-1))
    return F.mse_loss(out.float(), targets.float())
