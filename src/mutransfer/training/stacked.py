"""Many proxy runs of one architecture trained at once, as one stacked model.

A proxy is small: one width-32 run leaves nearly all of a GPU idle, and on a CPU core it pays
Python and kernel-launch overhead per step. ``train_stacked(configs)`` trains K runs that share
their shapes — different learning rates, seeds, init scales, multipliers, weight decays, ε,
parametrizations — as one model whose every parameter has a leading *run* dimension, and
returns for each config exactly what ``proxy.train`` returns for it (``TrainResult``).

How, in four parts:

- **The runs are the proxy's own.** Each run's model and plan are built by
  ``proxy.build_model`` (so its init is the run's seed and scales), its optimizer's groups by
  ``options.make_optimizer`` (so the plan's per-tensor LR, weight decay and ε scales are the
  ones a separate run gets) and its schedule by ``options.lr_lambda``.
- **The model's own code runs the forward.** A copy of one run's model has each leaf module
  that holds parameters (``nn.Linear``, ``nn.Embedding``, ``nn.LayerNorm``, ``nn.RMSNorm``)
  replaced by a stacked twin holding ``(K, ...)`` tensors; the K runs' batches are concatenated
  along the batch dimension, so the model's ``forward`` (reshapes, attention, residuals, the
  plan's hooks and attention ``scaling``) runs unchanged on ``K × batch`` rows and each twin
  does one batched matmul / gather / norm for all runs. Which leaf inputs carry the batch
  (token ids) and which are shared by all rows (the GPT's positions) is found by running the
  model once on batches of one and two rows.
- **One optimizer step for all runs.** All parameters of all runs live in one flat buffer;
  AdamW, Adam and SGD (momentum) are applied to it as a few elementwise operations, with
  per-element learning rates, weight decays and ε read from each run's torch param groups —
  the same update torch computes for each run separately (same formulas, float32).
- **A run that diverges leaves the stack**: its result is recorded (as ``proxy.train`` does)
  and its rows are removed from every buffer; the other runs continue untouched (no operation
  mixes runs).

Runs are packed when everything but their per-run hyperparameters (``PER_RUN_FIELDS``) is
equal *and* their plans apply the same explicit forward multipliers (hooks, attention scales):
a pack shares one forward. The pack size is bounded by a memory budget (``pack_size``).
Optimizers other than AdamW/Adam/SGD (Lion, Muon) and models with other parametrized layers
are trained one by one with ``proxy.train``.

Numerically each stacked run equals its separate run up to float32 rounding (a batched matmul
sums in another order): per-step losses agree to better than 1e-5 relative over 50 steps
(``tests/test_stacked.py``; typically 1e-7). What it gains is measured in BENCHMARKS.md
("Stacked proxy runs"): on a 2-core CPU little (1.1-1.3× at the demo's proxy sizes, where a
step is mostly arithmetic; 4× at batch 1, where it is mostly overhead); see docs/stacked.md.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ArrayDataset, TextCorpus
from ..devices import resolve_device
from ..plan import Plan
from .options import lr_lambda, make_optimizer
from .proxy import (
    TrainConfig,
    TrainResult,
    build_model,
    draw_batch,
    estimated_step_flops,
    eval_batches,
    load_source,
    step_flops,
    train,
)

StepCallback = Callable[[int, int, float], bool | None]
"""``on_step(index, step, loss)``: ``index`` is the config's position in ``configs``; returning
True stops that run (pruning); an exception stops the whole call."""

ResultCallback = Callable[[int, TrainResult], None]
"""``on_result(index, result)``: called once per config as soon as its result is known (a run
that diverges or is stopped leaves its pack early), e.g. to save it before the pack ends."""

STACKABLE_OPTIMIZERS = ("adamw", "adam", "sgd")
"""Optimizers the stacked step implements (torch's algorithms, one run per row)."""

STACKABLE_MODELS = ("gpt", "mlp", "bert")
"""Reference models made only of layers with a stacked twin (the ResNet's convolutions and
batch norms have none: its runs are trained one by one)."""

IGNORE_INDEX = -100
"""Targets not predicted (BERT's unmasked positions): ``F.cross_entropy``'s default, as in
``proxy.train``."""

PER_RUN_FIELDS = frozenset(
    {
        "lr",
        "seed",
        "init_std",
        "input_multiplier",
        "output_multiplier",
        "attention_multiplier",
        "weight_decay",
        "eps",
        "zero_init_readout",
        "zero_init_query",
        "rules",
        "mode",
        "divergence_factor",
    }
)
"""Config fields that may differ inside one pack. Anything else (shapes, data, batch, steps,
schedule, optimizer, β₂) must be equal; the plans' explicit forward multipliers are compared
separately (``forward_signature``)."""

DEFAULT_MEMORY_BUDGET = 2 * 2**30
"""Bytes one pack may use by default (2 GiB): parameters, optimizer state and activations."""

MAX_PACK = 64
"""Never more runs in one pack: beyond this the batched kernels gain nothing more on a CPU."""

STACK_MAX_STEP_FLOPS = 1e9
"""Above this many FLOPs per training step (``proxy.estimated_step_flops``) a run gains nothing from
a pack on a CPU core, and the run store (``runs.run_all``) and the sweep train it alone. Stacking
removes a step's fixed overhead (2 ms idle, 6 ms busy on the 2-core CPU of BENCHMARKS.md), not
its arithmetic. Measured there with the demo's GPT at batch 16 × 64 on an idle machine: a grid
1.07× faster at width 32 (0.27 GFLOP per step), 1.03× at 64 (0.83 GFLOP), 0.92× at 128 (2.9
GFLOP; 0.95× per step), and 0.83× per step at width 256 (10.6 GFLOP, busy): above about 1
GFLOP a pack is slower (docs/stacked.md). Measured on a CPU only."""

_BYTES = 4  # float32


# ------------------------------------------------------------------------------ packing
def pack_key(config: TrainConfig) -> tuple[Any, ...]:
    """What must be equal for two configs to share a pack (forward multipliers aside)."""
    data = dataclasses.asdict(config)
    return tuple(sorted((k, repr(v)) for k, v in data.items() if k not in PER_RUN_FIELDS))


def forward_signature(model: nn.Module, plan: Plan) -> tuple[Any, ...]:
    """The explicit forward of a run: parameter names and shapes, the plan's hooks and
    attention scales. Runs with equal signatures compute the same function of their weights."""
    shapes = tuple((n, tuple(p.shape)) for n, p in model.named_parameters())
    scales = tuple(sorted((s.module, s.kind, s.multiplier) for s in plan.module_scales.values()))
    attention = tuple(sorted((a.module, a.scale) for a in plan.attention.values()))
    return shapes, scales, attention


def _parameter_estimate(config: TrainConfig) -> int:
    """About how many parameters the reference GPT/BERT or MLP of ``config`` has."""
    width, depth = config.width, config.depth
    if config.model in ("gpt", "bert"):
        vocab, seq = 256, config.seq_len
        emb = (1 if config.tie_embeddings else 2) * vocab * width + seq * width
        return depth * 12 * width * width + emb + (2 * depth + 1) * width * 2
    in_features, classes = 784, 10
    return in_features * width + (depth - 2) * width * width + width * classes + width * depth


def worth_stacking(config: TrainConfig) -> bool:
    """Does a run like ``config`` train faster in a pack than alone (on a CPU)?"""
    return why_not_stacked(config) is None


def why_not_stacked(config: TrainConfig) -> str | None:
    """Why a run like ``config`` is trained alone rather than in a pack (``None``: it is
    worth stacking): a model or optimizer the stacked step does not implement, or a step so
    large that a pack is no faster on a CPU (``STACK_MAX_STEP_FLOPS``)."""
    if config.model not in STACKABLE_MODELS:
        return (
            f"model {config.model!r} has layers with no stacked twin (stacked: "
            f"{', '.join(STACKABLE_MODELS)})"
        )
    if config.optimizer.lower() not in STACKABLE_OPTIMIZERS:
        return (
            f"optimizer {config.optimizer!r} is not implemented by the stacked step (stacked: "
            f"{', '.join(STACKABLE_OPTIMIZERS)})"
        )
    flops = estimated_step_flops(config)
    if flops > STACK_MAX_STEP_FLOPS:
        return (
            f"a step is {flops / 1e9:.1f} GFLOP, above the {STACK_MAX_STEP_FLOPS / 1e9:g} GFLOP "
            "where a pack stops being faster than separate runs on a CPU"
        )
    return None


def run_memory_bytes(config: TrainConfig) -> int:
    """Estimated bytes one run adds to a pack: weights and optimizer state, activations.

    Per parameter: the weight, its gradient (twice: per tensor and flattened), two moments,
    its learning rate, weight decay and ε, and two temporaries of the update (10 float32).
    Activations per token of a GPT (or BERT): about 20 floats per width unit per block saved for the
    backward (norms, q/k/v, attention output, the 4× MLP), the embeddings and the logits
    (4 × vocabulary); twice that for the backward's temporaries. An MLP: 4 floats per unit of
    each layer per example plus the input. The evaluation batch (no gradients) counts when
    larger than the training one. An estimate meant to be an upper bound, not an exact count.
    """
    width, depth = config.width, config.depth
    params = _parameter_estimate(config)
    if config.model in ("gpt", "bert"):
        vocab, seq = 256, config.seq_len
        per_token = depth * 20 * width + 4 * width + 4 * vocab
        train_acts = 2 * per_token * config.batch_size * seq
        eval_acts = 2 * (width + 2 * vocab) * config.eval_batch_size * seq
    else:
        in_features, classes = 784, 10
        per_example = 4 * width * depth + in_features + 4 * classes
        train_acts = 2 * per_example * config.batch_size
        eval_acts = (2 * width + in_features + classes) * config.eval_batch_size
    return _BYTES * (10 * params + max(train_acts, eval_acts))


def pack_size(
    config: TrainConfig, memory_budget: int = DEFAULT_MEMORY_BUDGET, max_pack: int = MAX_PACK
) -> int:
    """How many runs like ``config`` one pack holds within ``memory_budget`` bytes (≥ 1).

    ``run_memory_bytes(config)`` per run; at least one run even when it alone exceeds the
    budget (it would be trained anyway), at most ``max_pack``.
    """
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    if max_pack < 1:
        raise ValueError(f"max_pack must be >= 1, got {max_pack}")
    return max(1, min(max_pack, memory_budget // run_memory_bytes(config)))


def plan_packs(
    configs: Sequence[TrainConfig],
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_pack: int = MAX_PACK,
    workers: int = 1,
) -> tuple[list[list[int]], list[int]]:
    """Group config indices into packs by ``pack_key``, each at most ``pack_size`` long.

    Returns ``(packs, singles)``: ``singles`` are the configs whose optimizer or model the
    stacked step does not implement (trained one by one). A group is cut into as few packs as
    the budget allows, but into at least ``workers`` (when it has that many runs) so that each
    worker process can take one; the packs of a group differ in size by at most one. Packs
    keep the order of ``configs``. The forward signature is checked later, when the models
    exist (a pack may split then).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    groups: dict[tuple[Any, ...], list[int]] = {}
    singles: list[int] = []
    for i, config in enumerate(configs):
        if config.optimizer.lower() not in STACKABLE_OPTIMIZERS or (
            config.model not in STACKABLE_MODELS
        ):
            singles.append(i)
            continue
        groups.setdefault(pack_key(config), []).append(i)
    packs: list[list[int]] = []
    for members in groups.values():
        size = pack_size(configs[members[0]], memory_budget, max_pack)
        count = max(math.ceil(len(members) / size), min(workers, len(members)))
        base, extra = divmod(len(members), count)
        start = 0
        for k in range(count):
            end = start + base + (1 if k < extra else 0)
            packs.append(members[start:end])
            start = end
    return packs, singles


# --------------------------------------------------------------------- stacked modules
class StackError(ValueError):
    """A model cannot be stacked (a parametrized layer with no stacked twin, odd options)."""


@dataclass
class _Context:
    """What every stacked layer of one model needs to know: runs and rows per run."""

    runs: int
    batch: int = 1


class _Stacked(nn.Module):
    """A leaf layer holding K runs' tensors; ``batched``: does its input carry the batch?"""

    def __init__(self, context: _Context, batched: bool) -> None:
        super().__init__()
        self.context = context
        self.batched = batched
        self.tensors: dict[str, torch.Tensor] = {}

    def _per_run(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(K, rows, ...)``: its own rows per run, or the shared input for each."""
        runs = self.context.runs
        if self.batched:
            return x.reshape(runs, -1, *x.shape[1:])
        return x.unsqueeze(0).expand(runs, *x.shape)

    def _rows(self, y: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
        """Back to the model's layout: ``(K·batch, ...)`` (a shared input is broadcast)."""
        runs = self.context.runs
        if self.batched:
            return y.reshape(runs * (x_shape[0] // runs), *x_shape[1:-1], y.shape[-1])
        y = y.reshape(runs, 1, *x_shape[:-1], y.shape[-1])
        y = y.expand(runs, self.context.batch, *y.shape[2:])
        return y.reshape(runs * self.context.batch, *y.shape[2:])


class _StackedLinear(_Stacked):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.tensors["weight"]  # (K, out, in)
        xs = self._per_run(x).reshape(self.context.runs, -1, x.shape[-1])
        bias = self.tensors.get("bias")
        if bias is None:
            y = torch.bmm(xs, weight.transpose(1, 2))
        else:
            y = torch.baddbmm(bias.unsqueeze(1), xs, weight.transpose(1, 2))
        return self._rows(y, x.shape if x.dim() > 1 else torch.Size([1, x.shape[0]]))


class _StackedEmbedding(_Stacked):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        weight = self.tensors["weight"]  # (K, vocab, dim)
        runs, vocab, dim = weight.shape
        ids = self._per_run(idx).reshape(runs, -1)
        offsets = torch.arange(runs, device=idx.device).unsqueeze(1) * vocab
        y = F.embedding(ids + offsets, weight.reshape(runs * vocab, dim))
        shape = (*idx.shape, dim)
        if self.batched:
            return y.reshape(shape)
        y = y.reshape(runs, 1, *shape).expand(runs, self.context.batch, *shape)
        return y.reshape(runs * self.context.batch, *shape)


class _StackedNorm(_Stacked):
    def __init__(
        self, context: _Context, batched: bool, kind: str, shape: tuple[int, ...], eps: Any
    ) -> None:
        super().__init__(context, batched)
        self.kind = kind
        self.normalized_shape = shape
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            y = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        else:
            y = F.rms_norm(x, self.normalized_shape, eps=self.eps)
        runs = self.context.runs
        ys = self._per_run(y)  # (K, rows, ..., *normalized_shape)
        lead = ys.dim() - 1 - len(self.normalized_shape)
        weight = self.tensors.get("weight")
        bias = self.tensors.get("bias")
        if weight is not None:
            ys = ys * weight.reshape(runs, *([1] * lead), *self.normalized_shape)
        if bias is not None:
            ys = ys + bias.reshape(runs, *([1] * lead), *self.normalized_shape)
        if self.batched:
            return ys.reshape(x.shape)
        ys = ys.unsqueeze(1).expand(runs, self.context.batch, *x.shape)
        return ys.reshape(-1, *x.shape)


def _twin(module: nn.Module, context: _Context, batched: bool) -> _Stacked:
    if type(module) is nn.Linear:
        return _StackedLinear(context, batched)
    if type(module) is nn.Embedding:
        if module.padding_idx is not None or module.max_norm is not None or module.sparse:
            raise StackError("an nn.Embedding with padding_idx, max_norm or sparse gradients")
        return _StackedEmbedding(context, batched)
    if type(module) is nn.LayerNorm:
        return _StackedNorm(context, batched, "layer", tuple(module.normalized_shape), module.eps)
    if type(module) is nn.RMSNorm:
        return _StackedNorm(context, batched, "rms", tuple(module.normalized_shape), module.eps)
    raise StackError(
        f"{type(module).__name__} holds parameters and has no stacked twin "
        "(stacked: nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm)"
    )


def _batched_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, bool]:
    """For each parametrized leaf: does its input's first dimension follow the batch?

    The model runs on the first one and the first two rows of ``x``; an input whose first
    dimension goes from 1 to 2 carries the batch, one whose shape stays is shared by all rows
    (e.g. a GPT's position ids).
    """
    seen: dict[str, list[tuple[int, ...]]] = {}
    handles = []
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is None:
            continue

        def record(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                raise StackError(f"module {name!r} is not called with a tensor as first argument")
            seen.setdefault(name, []).append(tuple(args[0].shape))

        handles.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model(x[:1])
            model(x[:2])
    finally:
        for handle in handles:
            handle.remove()
    batched: dict[str, bool] = {}
    for name, shapes in seen.items():
        half = len(shapes) // 2
        one, two = shapes[:half], shapes[half:]
        flags = {a != b for a, b in zip(one, two, strict=True)}
        for a, b in zip(one, two, strict=True):
            if a != b and not (a[0] == 1 and b[0] == 2 and a[1:] == b[1:]):
                raise StackError(f"module {name!r}: its input shape changes with the batch oddly")
        if len(flags) != 1:
            raise StackError(f"module {name!r} is called with and without the batch")
        batched[name] = flags.pop()
    return batched


_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)
"""``nn.Module``'s forward-hook tables: a stacked twin takes over its layer's hooks."""


class StackedModel:
    """K runs of one architecture: the model's own forward over stacked leaf layers.

    ``params`` are the K runs' tensors by (deduplicated) parameter name, each ``(K, *shape)``,
    all views of one flat buffer ``flat`` (run-major inside each tensor's block), so that one
    elementwise operation updates every tensor of every run.
    """

    def __init__(self, models: Sequence[nn.Module], probe: torch.Tensor) -> None:
        self.runs = len(models)
        template = copy.deepcopy(models[0])
        self.names = [n for n, _ in template.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in template.named_parameters()]
        self.numels = [math.prod(s) for s in self.shapes]
        owner: dict[int, str] = {id(p): n for n, p in template.named_parameters()}
        batched = _batched_inputs(template, probe)
        self.context = _Context(self.runs)
        # (twin, attribute, parameter name) for every parametrized leaf, tied ones included
        self._slots: list[tuple[_Stacked, str, str]] = []
        for name, module in list(template.named_modules()):
            own = dict(module.named_parameters(recurse=False))
            if not own:
                continue
            if any(True for _ in module.children()):
                raise StackError(f"module {name!r} holds parameters and has submodules")
            twin = _twin(module, self.context, batched.get(name, True))
            for hooks in _HOOK_DICTS:  # the plan's multipliers, and any other hook
                getattr(twin, hooks).update(getattr(module, hooks))
            for attr, p in own.items():
                self._slots.append((twin, attr, owner[id(p)]))
            if not name:
                raise StackError("the model itself is a single layer; nothing to stack around")
            parent_name, _, leaf = name.rpartition(".")
            setattr(template.get_submodule(parent_name), leaf, twin)
        self.module = template
        for name, buffer in template.named_buffers():
            if any(not torch.equal(m.get_buffer(name), buffer) for m in models[1:]):
                raise StackError(f"buffer {name!r} differs between the runs (state per run)")
        device = next(models[0].parameters()).device
        flat = torch.empty(sum(self.numels) * self.runs, device=device)
        with torch.no_grad():
            offset = 0
            for name, n in zip(self.names, self.numels, strict=True):
                block = flat[offset : offset + n * self.runs].view(self.runs, n)
                for k, model in enumerate(models):
                    block[k].copy_(model.get_parameter(name).detach().reshape(-1))
                offset += n * self.runs
        self._bind(flat)

    def _bind(self, flat: torch.Tensor) -> None:
        self.flat = flat
        self.params: dict[str, torch.Tensor] = {}
        offset = 0
        for name, shape, n in zip(self.names, self.shapes, self.numels, strict=True):
            view = flat[offset : offset + n * self.runs].view(self.runs, *shape)
            self.params[name] = view.detach().requires_grad_(True)
            offset += n * self.runs
        for twin, attr, name in self._slots:
            twin.tensors[attr] = self.params[name]

    def rows_index(self, keep: Sequence[int]) -> torch.Tensor:
        """Positions in ``flat`` of the rows of runs ``keep`` (for every per-element buffer)."""
        index = torch.as_tensor(list(keep), device=self.flat.device)
        parts, offset = [], 0
        for n in self.numels:
            rows = (offset + index.unsqueeze(1) * n + torch.arange(n, device=index.device)).reshape(
                -1
            )
            parts.append(rows)
            offset += n * self.runs
        return torch.cat(parts)

    def keep(self, keep: Sequence[int]) -> torch.Tensor:
        """Keep only runs ``keep`` (indices into the current stack); returns the row index
        used, so that the caller can shrink its own per-element buffers the same way."""
        rows = self.rows_index(keep)
        self.runs = self.context.runs = len(keep)
        self._bind(self.flat.detach()[rows].clone())
        return rows

    def flatten(self, per_name: dict[str, torch.Tensor]) -> torch.Tensor:
        """A per-parameter dict of ``(K, *shape)`` tensors as one flat vector like ``flat``."""
        return torch.cat([per_name[n].reshape(-1) for n in self.names])

    def __call__(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        self.context.batch = batch
        out: torch.Tensor = self.module(x)
        return out

    def run_params(self, k: int) -> dict[str, torch.Tensor]:
        """Run ``k``'s parameters (views), e.g. to load them into a separate model."""
        return {n: p.detach()[k] for n, p in self.params.items()}


# ----------------------------------------------------------------------------- optimizer
class StackedOptimizer:
    """torch's AdamW / Adam / SGD (momentum) over a stacked model's flat buffer.

    Each element gets the learning rate, weight decay and ε of the torch param group its run
    put it in (``options.make_optimizer`` with the run's plan); the schedule's factor and the
    bias corrections are shared (packs have one schedule and one β₂).
    """

    def __init__(
        self, stack: StackedModel, optimizers: Sequence[torch.optim.Optimizer], name: str
    ) -> None:
        self.name = name
        self.stack = stack
        n = stack.flat.numel()
        lr = torch.empty(n, dtype=torch.float64)
        wd = torch.empty(n, dtype=torch.float64)
        eps = torch.empty(n, dtype=torch.float64)
        hyper: set[tuple[Any, ...]] = set()
        offset = 0
        per_run = [self._per_name(opt) for opt in optimizers]
        for name, numel in zip(stack.names, stack.numels, strict=True):
            for k in range(stack.runs):
                group = per_run[k][name]
                rows = slice(offset + k * numel, offset + (k + 1) * numel)
                lr[rows] = group["lr"]
                wd[rows] = group.get("weight_decay", 0.0)
                eps[rows] = group.get("eps", 0.0)
                hyper.add(self._shared(group))
            offset += numel * stack.runs
        if len(hyper) != 1:
            raise StackError(f"the runs' optimizers differ in more than lr, wd and ε: {hyper}")
        self.hyper = dict(hyper.pop())
        device = stack.flat.device
        self.lr = lr.to(device=device, dtype=torch.float32)
        self.wd = wd.to(device=device, dtype=torch.float32)
        self.lr_wd = (lr * wd).to(device=device, dtype=torch.float32)
        self.eps = eps.to(device=device, dtype=torch.float32)
        self.has_wd = bool((wd != 0).any())
        self.state: dict[str, torch.Tensor] = {}
        self.steps = 0

    def _per_name(self, optimizer: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
        groups: dict[str, dict[str, Any]] = {}
        for group in optimizer.param_groups:
            names = group.get("param_names")
            if names is None:
                raise StackError("the optimizer's param groups carry no param_names")
            for name in names:
                groups[name] = group
        missing = [n for n in self.stack.names if n not in groups]
        if missing:
            raise StackError(f"parameters without an optimizer group: {missing}")
        return groups

    def _shared(self, group: dict[str, Any]) -> tuple[Any, ...]:
        if self.name in ("adamw", "adam"):
            if group.get("amsgrad") or group.get("maximize"):
                raise StackError("amsgrad / maximize are not stacked")
            return (("betas", tuple(group["betas"])),)
        if group.get("nesterov") or group.get("dampening") or group.get("maximize"):
            raise StackError("SGD with nesterov, dampening or maximize is not stacked")
        return (("momentum", group["momentum"]),)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the rows ``rows`` (from ``StackedModel.keep``) of every per-element buffer."""
        self.lr, self.wd, self.lr_wd, self.eps = (
            t[rows].clone() for t in (self.lr, self.wd, self.lr_wd, self.eps)
        )
        self.state = {k: v[rows].clone() for k, v in self.state.items()}

    @torch.no_grad()
    def step(self, grad: torch.Tensor, factor: float) -> None:
        """One step with the flat gradient ``grad`` at the schedule's ``factor`` (LambdaLR)."""
        p = self.stack.flat
        self.steps += 1
        if self.name == "sgd":
            momentum = self.hyper["momentum"]
            if self.has_wd:
                grad = grad.add(p * self.wd)
            if momentum:
                buf = self.state.get("momentum_buffer")
                if buf is None:
                    buf = self.state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(momentum).add_(grad)
                grad = buf
            p.add_(grad * (self.lr * -factor))
            return
        beta1, beta2 = self.hyper["betas"]
        if self.has_wd:
            if self.name == "adamw":
                p.mul_(1 - self.lr_wd * factor)
            else:
                grad = grad.add(p * self.wd)
        if not self.state:
            self.state["exp_avg"] = torch.zeros_like(p)
            self.state["exp_avg_sq"] = torch.zeros_like(p)
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        p.addcdiv_(exp_avg * (self.lr * (-factor / bias_correction1)), denom)


# ------------------------------------------------------------------------------ training
Batch = tuple[torch.Tensor, torch.Tensor]


def _train_batch(
    source: TextCorpus | ArrayDataset, config: TrainConfig, generator: torch.Generator
) -> Batch:
    """A training batch, drawn exactly as ``proxy.train`` draws it (``proxy.draw_batch``)."""
    return draw_batch(source, config, "train", config.batch_size, generator)


def _per_run_loss(logits: torch.Tensor, y: torch.Tensor, runs: int) -> torch.Tensor:
    """Mean cross-entropy of each run's predicted targets: shape ``(runs,)``."""
    targets = y.reshape(-1)
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets,
        reduction="none",
        ignore_index=IGNORE_INDEX,
    )
    counted = (targets != IGNORE_INDEX).reshape(runs, -1).sum(dim=1)
    return losses.reshape(runs, -1).sum(dim=1) / counted


@dataclass
class _Run:
    """The bookkeeping of one run in a pack (what ``proxy.train`` keeps in locals)."""

    index: int
    config: TrainConfig
    losses: list[float]
    first: float | None = None
    smoothed: float | None = None


def train_stacked(
    configs: Sequence[TrainConfig],
    *,
    source: TextCorpus | ArrayDataset | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_pack: int = MAX_PACK,
    on_step: StepCallback | None = None,
    on_result: ResultCallback | None = None,
    device: str | torch.device | None = "cpu",
) -> list[TrainResult]:
    """Train every config, packing those that share shapes; one ``TrainResult`` per config.

    Each result is what ``proxy.train(config)`` returns (the same losses up to float32
    rounding, the same divergence rule and reason), except ``seconds``: the pack's wall time
    until the run left it, divided by the pack's number of runs (what the run cost).
    ``source``: the data, as for ``proxy.train`` (loaded per config when None).
    ``memory_budget``: bytes per pack (``pack_size``). ``on_step(index, step, loss)``
    returning True stops run ``index``; it is
    reported with ``reason`` "stopped at step N", ``val_loss`` inf and ``diverged`` False.
    ``on_result(index, result)`` is called as each result is known (before the call returns).
    Configs that cannot be stacked (Lion, Muon) are trained one by one with ``proxy.train``.
    ``device``: where every run trains, packed or alone (``mutransfer.devices.resolve_device``).
    """
    where = resolve_device(device)
    results: list[TrainResult | None] = [None] * len(configs)
    packs, singles = plan_packs(configs, memory_budget, max_pack)
    sources: dict[str, TextCorpus | ArrayDataset] = {}

    def data_for(config: TrainConfig) -> TextCorpus | ArrayDataset:
        if source is not None:
            return source
        key = f"text:{config.data}" if config.model in ("gpt", "bert") else config.model
        if key not in sources:
            sources[key] = load_source(config)
        return sources[key]

    def keep(index: int, result: TrainResult) -> None:
        results[index] = result
        if on_result is not None:
            on_result(index, result)

    for i in singles:
        keep(i, _train_single(configs[i], i, data_for(configs[i]), on_step, where))
    for pack in packs:
        _train_pack(
            [configs[i] for i in pack], pack, data_for(configs[pack[0]]), on_step, keep, where
        )
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


class _Stopped(Exception):
    """Raised inside ``proxy.train`` when ``on_step`` asks to stop a run trained alone."""


def _train_single(
    config: TrainConfig,
    index: int,
    source: TextCorpus | ArrayDataset,
    on_step: StepCallback | None,
    device: torch.device,
) -> TrainResult:
    """A config the stack cannot hold, trained by ``proxy.train`` with the same callback."""
    if on_step is None:
        return train(config, source=source, device=device)
    losses: list[float] = []
    start = time.perf_counter()

    def callback(step: int, loss: float) -> None:
        losses.append(loss)
        if on_step(index, step, loss):
            raise _Stopped(f"stopped at step {step}")

    try:
        return train(config, source=source, on_step=callback, device=device)
    except _Stopped as exc:
        return TrainResult(
            config,
            math.inf,
            losses,
            reason=str(exc),
            seconds=time.perf_counter() - start,
            steps_done=len(losses),
        )


def _train_pack(
    configs: list[TrainConfig],
    indices: list[int],
    source: TextCorpus | ArrayDataset,
    on_step: StepCallback | None,
    keep: ResultCallback,
    device: torch.device,
) -> None:
    """One pack; splits it by forward signature first (runs with other hooks/scales)."""
    start = time.perf_counter()
    built = [build_model(c) for c in configs]
    by_signature: dict[tuple[Any, ...], list[int]] = {}
    for j, (model, plan) in enumerate(built):
        by_signature.setdefault(forward_signature(model, plan), []).append(j)
    for members in by_signature.values():
        models = [built[j][0].to(device) for j in members]
        optimizers = [make_optimizer(configs[j], *built[j]) for j in members]
        try:
            _train_members(
                [configs[j] for j in members],
                [indices[j] for j in members],
                models,
                optimizers,
                source,
                on_step,
                keep,
                device,
                setup_seconds=(time.perf_counter() - start) * len(members) / len(configs),
            )
        except StackError:  # raised while stacking, before any step: train them one by one
            for j in members:
                keep(indices[j], _train_single(configs[j], indices[j], source, on_step, device))


def _train_members(
    configs: list[TrainConfig],
    indices: list[int],
    models: list[nn.Module],
    optimizers: list[torch.optim.Optimizer],
    source: TextCorpus | ArrayDataset,
    on_step: StepCallback | None,
    keep: ResultCallback,
    device: torch.device,
    setup_seconds: float,
) -> None:
    start = time.perf_counter() - setup_seconds
    head = configs[0]
    generators = {c.seed: torch.Generator().manual_seed(10_000 + c.seed) for c in configs}
    evals = eval_batches(source, head)
    probe = _train_batch(source, head, torch.Generator().manual_seed(0))[0].to(device)
    probe = torch.cat([probe, probe])  # at least two rows, whatever the batch size
    stack = StackedModel(models, probe)
    optimizer = StackedOptimizer(stack, optimizers, head.optimizer.lower())
    flops_per_step = step_flops(head, models[0])
    del models, optimizers
    factor = lr_lambda(head)
    active = [_Run(i, c, []) for i, c in zip(indices, configs, strict=True)]
    total = len(active)

    def result(run: _Run, val_loss: float, reason: str | None, diverged: bool) -> TrainResult:
        return TrainResult(
            run.config,
            val_loss,
            run.losses,
            diverged=diverged,
            reason=reason,
            steps_done=len(run.losses),
            flops=flops_per_step * len(run.losses),
        )

    def drop(leaving: dict[int, TrainResult]) -> None:
        nonlocal active
        stay = [j for j in range(len(active)) if j not in leaving]
        # what a run cost: the pack's wall time while it was in it, shared by the pack's runs
        seconds = (time.perf_counter() - start) / total
        left = [(active[j].index, res) for j, res in leaving.items()]
        active = [active[j] for j in stay]
        if stay:
            rows = stack.keep(stay)
            optimizer.keep(rows)
        for index, res in left:
            res.seconds = seconds
            keep(index, res)

    for step in range(head.steps):
        if not active:
            break
        batches: dict[int, Batch] = {}
        for run in active:
            if run.config.seed not in batches:
                batches[run.config.seed] = _train_batch(
                    source, run.config, generators[run.config.seed]
                )
        x = torch.cat([batches[r.config.seed][0] for r in active]).to(device)
        y = torch.cat([batches[r.config.seed][1] for r in active]).to(device)
        losses = _per_run_loss(stack(x, head.batch_size), y, len(active))
        values = losses.tolist()
        leaving: dict[int, TrainResult] = {}
        for j, (run, value) in enumerate(zip(active, values, strict=True)):
            run.losses.append(value)
            reason = _divergence(run, value, step)
            if reason is not None:
                leaving[j] = result(run, math.inf, reason, True)
        grads = torch.autograd.grad(losses.sum(), list(stack.params.values()))
        flat_grad = stack.flatten(dict(zip(stack.params, grads, strict=True)))
        if leaving:
            stay = [j for j in range(len(active)) if j not in leaving]
            if stay:
                flat_grad = flat_grad[stack.rows_index(stay)]
            drop(leaving)
            if not active:
                break
        optimizer.step(flat_grad, factor(step))
        if on_step is not None:
            stopped: dict[int, TrainResult] = {}
            for j, run in enumerate(active):
                if on_step(run.index, step, run.losses[-1]):
                    stopped[j] = result(run, math.inf, f"stopped at step {step}", False)
            if stopped:
                drop(stopped)
    if active:
        val = _evaluate(stack, evals, len(active), device)
        leaving = {}
        for j, (run, value) in enumerate(zip(active, val, strict=True)):
            if math.isfinite(value):
                leaving[j] = result(run, value, None, False)
            else:
                leaving[j] = result(run, math.inf, f"validation loss is {value}", True)
        drop(leaving)


def _divergence(run: _Run, value: float, step: int) -> str | None:
    """``proxy.train``'s rule: a non-finite loss, or a smoothed loss far above the first."""
    if not math.isfinite(value):
        return f"loss became {value} at step {step}"
    run.first = value if run.first is None else run.first
    run.smoothed = value if run.smoothed is None else 0.9 * run.smoothed + 0.1 * value
    factor = run.config.divergence_factor
    if step >= 10 and run.smoothed > factor * run.first:
        return (
            f"loss {run.smoothed:.3g} at step {step} exceeds {factor}× "
            f"the initial loss {run.first:.3g}"
        )
    return None


@torch.no_grad()
def _evaluate(
    stack: StackedModel, batches: list[Batch], runs: int, device: torch.device
) -> list[float]:
    """Each run's mean validation loss over the shared batches (as ``proxy.evaluate``)."""
    totals = [0.0] * runs
    stack.module.eval()
    try:
        for x, y in batches:
            xs = x.to(device).repeat(runs, *([1] * (x.dim() - 1)))
            ys = y.to(device).repeat(runs, *([1] * (y.dim() - 1)))
            for j, value in enumerate(_per_run_loss(stack(xs, len(x)), ys, runs).tolist()):
                totals[j] += value
    finally:
        stack.module.train()
    return [t / len(batches) for t in totals]
