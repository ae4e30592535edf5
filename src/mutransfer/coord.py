"""The coordinate check: train a model at several widths for a few steps and judge the scaling.

µP promises that every activation, and every layer's update ΔW·x, has coordinates of a size that
does not depend on width. The check trains the same architecture at several widths (or depths)
for a few steps and records, per module and step, the RMS of its output, of its update term and
of its attention logits (see ``coord_record``). The slope of log RMS against log width, fitted
per seed and averaged, gives a verdict per module (see ``coord_verdict``): ``stable``,
``blows up`` (grows with width: the µP violation) or ``vanishes`` (learning too slowly). Since
the update term is recorded per layer, the report names the layer at fault rather than every
activation downstream of it.

microsoft/mup's ``get_coord_data`` leaves the reading of a plot to the user; here the plot is
the evidence and the verdict is computed.

Cost: each width's model is built once and re-initialised from its plan for every seed; the
update term costs one extra call per parameterised module and one copy of the parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from .coord_record import Key, Recorder, default_include, first_tensor
from .coord_verdict import CoordReport, Thresholds, judge
from .build import parametrize
from .plan import Plan
from .roles import RoleError, canonical_name, depth_containers
from .rules import Rules, get_rules, optimizer_family

Factory: TypeAlias = Callable[[int], "nn.Module | tuple[nn.Module, Plan]"]
Batch: TypeAlias = Any
DataSpec: TypeAlias = "Callable[[torch.Generator], Batch] | Batch | None"
LossFn: TypeAlias = Callable[[Any, Batch], torch.Tensor]

DEFAULT_LR = {"adam": 1e-2, "sgd": 0.1}
"""Base-width learning rates large enough that a wrong scale shows within a few steps."""

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


class CoordCheckError(ValueError):
    """The coordinate check was asked for something it cannot do; the message says what."""


def coord_check(
    factory: Factory,
    widths: Sequence[int] = (64, 128, 256, 512),
    *,
    steps: int = 4,
    seeds: int | Sequence[int] = 2,
    optimizer: str | type[torch.optim.Optimizer] = "adam",
    lr: float | None = None,
    data: DataSpec = None,
    loss: LossFn | None = None,
    rules: str | Rules = "mup",
    base_width: int | None = None,
    vary: Literal["width", "depth"] = "width",
    depths: Sequence[int] | None = None,
    parametrize_kwargs: dict[str, Any] | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    modules: Sequence[str] | None = None,
    updates: bool = True,
    attention_logits: bool = True,
    thresholds: Thresholds | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> CoordReport:
    """Train ``factory(size)`` at every size for ``steps`` steps and judge how coordinates scale.

    Args:
        factory: ``factory(width)`` (``factory(depth)`` with ``vary="depth"``) returning an
            ``nn.Module`` — it is then parametrized here with ``rules``, its base being the same
            factory at ``base_width`` — or a ``(model, plan)`` pair parametrized by the caller
            (then called again for every seed, so its own initialisation is what is checked).
        widths: the widths to compare (at least two); ignored with ``vary="depth"``.
        steps: optimizer updates; coordinates are recorded after 0, 1, ..., ``steps`` updates.
        seeds: number of seeds (``0..n-1``) or the seeds themselves; slopes are averaged.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or a ``torch.optim`` optimizer class.
        lr: base learning rate (the plan scales it per tensor); default 1e-2 (Adam), 0.1 (SGD).
        data: a batch, or a callable ``data(generator) -> batch`` called once per seed; the
            same batch is used at every step. A batch is ``(inputs, targets)``
            (``model(inputs)``) or a dict (``model(**batch)``). Keep it small (a few vectors or
            a few dozen tokens): see ``default_batch``. Default: 2 windows of 8 tokens of the
            shipped text (random bytes without it) for models starting with an Embedding, 4
            Gaussian vectors with random labels for models starting with a Linear.
        loss: ``loss(output, batch) -> scalar``; default cross-entropy for integer targets, MSE
            otherwise, or the model's own loss when it returns a scalar or has ``.loss``.
        rules: rules for modules returned by the factory (``"mup"``, ``"sp"`` or ``Rules``).
        base_width: base width (or base depth) of the plan; default the smallest size.
        vary: ``"width"`` or ``"depth"`` (blocks vary at fixed width, for the depth rules).
        depths: the depths to compare with ``vary="depth"``.
        parametrize_kwargs: extra arguments for ``parametrize`` (``zero_init``, constants such
            as ``output_multiplier``; with ``vary="depth"`` also ``delta=``, see below).
        optimizer_kwargs: extra optimizer arguments (``betas``, ``momentum``, ``weight_decay``).
        modules: fnmatch patterns of module names to record (default: every module but
            containers).
        updates: record the update term ΔW·x (costs a copy of the parameters and one extra call
            per parameterised module per step).
        attention_logits: record the logits of ``F.scaled_dot_product_attention`` calls.
        thresholds: slope thresholds of the verdict (defaults calibrated on real runs).
        device: where to train (default: CPU).
        progress: called with a short line after every (size, seed), e.g. ``print``.

    With ``vary="depth"`` parameter shapes do not change between sizes, so which dimensions are
    *width* cannot be seen from them: return ``(model, plan)`` from the factory, or pass
    ``parametrize_kwargs={"delta": model_at_base_depth_and_another_width}``.
    """
    sizes = _sizes(widths, vary, depths)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise CoordCheckError("seeds must be a positive number or a non-empty list of seeds")
    if steps < 1:
        raise CoordCheckError(f"steps must be at least 1 (got {steps})")
    family = optimizer_family(optimizer)
    if lr is None:
        if family not in DEFAULT_LR:
            raise CoordCheckError(f"pass lr= for optimizer {optimizer!r} (no default for it)")
        lr = DEFAULT_LR[family]
    if not (lr > 0 and math.isfinite(lr)):
        raise CoordCheckError(f"lr must be a positive finite number (got {lr!r})")
    rules_obj = get_rules(rules)
    base_size = base_width if base_width is not None else sizes[0]
    target = torch.device(device) if device is not None else torch.device("cpu")
    include = _include(modules)
    rename = _pool_blocks(factory, sizes) if vary == "depth" else None
    runner = _Runner(
        factory=factory,
        vary=vary,
        base_size=base_size,
        rules=rules_obj,
        optimizer=optimizer,
        lr=lr,
        data=data,
        loss=loss,
        parametrize_kwargs=dict(parametrize_kwargs or {}),
        optimizer_kwargs=dict(optimizer_kwargs or {}),
        include=include,
        rename=rename,
        updates=updates,
        attention_logits=attention_logits,
        device=target,
        progress=progress,
    )
    started = time.perf_counter()
    fork_devices = [target] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        for i, size in enumerate(sizes):
            runner.run_size(i, size, seed_list, steps, len(sizes))
    settings = {
        "vary": vary,
        "rules": runner.rules_name,
        "optimizer": optimizer if isinstance(optimizer, str) else optimizer.__name__,
        "family": family,
        "lr": lr,
        "steps": steps,
        "base_size": base_size,
        "device": str(target),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return judge(
        sizes=sizes,
        seeds=seed_list,
        steps=steps,
        values=runner.values,
        losses=runner.losses,
        order=runner.order,
        context=runner.context,
        settings=settings,
        thresholds=thresholds or Thresholds(),
    )


# ------------------------------------------------------------------------------- arguments
def _sizes(widths: Sequence[int], vary: str, depths: Sequence[int] | None) -> list[int]:
    if vary not in ("width", "depth"):
        raise CoordCheckError(f"vary must be 'width' or 'depth', got {vary!r}")
    what = "depths" if vary == "depth" else "widths"
    chosen = depths if vary == "depth" else widths
    if chosen is None:
        raise CoordCheckError("vary='depth' needs depths=[...] (e.g. depths=[2, 4, 8])")
    sizes = sorted({int(s) for s in chosen})
    if len(sizes) < 2 or sizes[0] < 1:
        raise CoordCheckError(
            f"{what} must hold at least two different positive sizes to fit a slope, "
            f"got {list(chosen)}"
        )
    return sizes


def _include(patterns: Sequence[str] | None) -> Callable[[str, nn.Module], bool]:
    if not patterns:
        return default_include
    import fnmatch

    wanted = list(patterns)

    def include(name: str, module: nn.Module) -> bool:
        return default_include(name, module) and any(fnmatch.fnmatchcase(name, p) for p in wanted)

    return include


def _meta_module(factory: Factory, size: int) -> nn.Module:
    """The factory's model at ``size`` on the meta device (no memory, no init)."""
    with torch.device("meta"):
        built = factory(size)
    module = built[0] if isinstance(built, tuple) else built
    if not isinstance(module, nn.Module):
        raise CoordCheckError(
            f"the factory returned {type(module).__name__} at size {size}; it must return an "
            "nn.Module or a (model, plan) pair"
        )
    return module


def _pool_blocks(factory: Factory, sizes: list[int]) -> Callable[[str], str]:
    """Depth mode: ``blocks.7.attn`` → ``blocks.*.attn`` for block lists whose length varies.

    Models of different depths do not share block names; pooling the blocks of a list (their
    sums of squares add up) compares "a typical block" across depths.
    """

    def names(size: int) -> list[str]:
        module = _meta_module(factory, size)
        return [canonical_name(n) for n, _ in module.named_parameters(remove_duplicate=False)]

    prefixes = set(depth_containers(names(sizes[-1]), names(sizes[0])))
    if not prefixes:
        raise CoordCheckError(
            f"vary='depth': the factory builds the same blocks at depths {sizes[0]} and "
            f"{sizes[-1]}; it must build a numbered list of blocks (e.g. nn.ModuleList) whose "
            "length is the depth"
        )

    def rename(name: str) -> str:
        parts = name.split(".")
        for k, part in enumerate(parts):
            if part.isdigit() and ".".join(parts[:k]) in prefixes:
                parts[k] = "*"
        return ".".join(parts)

    return rename


# ------------------------------------------------------------------------------------ runner
@dataclasses.dataclass
class _Runner:
    """Holds what one check accumulates: values[key][t][size][seed], losses, order, context."""

    factory: Factory
    vary: str
    base_size: int
    rules: Rules
    optimizer: Any
    lr: float
    data: DataSpec
    loss: LossFn | None
    parametrize_kwargs: dict[str, Any]
    optimizer_kwargs: dict[str, Any]
    include: Callable[[str, nn.Module], bool]
    rename: Callable[[str], str] | None
    updates: bool
    attention_logits: bool
    device: torch.device
    progress: Callable[[str], None] | None
    values: dict[Key, dict[tuple[int, int, int], float]] = dataclasses.field(default_factory=dict)
    losses: dict[tuple[int, int, int], float] = dataclasses.field(default_factory=dict)
    order: dict[Key, int] = dataclasses.field(default_factory=dict)
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    rules_name: str = ""

    def run_size(self, index: int, size: int, seeds: list[int], steps: int, n_sizes: int) -> None:
        model: nn.Module | None = None
        plan: Plan | None = None
        own_plan = True
        buffers: dict[str, torch.Tensor] = {}
        for j, seed in enumerate(seeds):
            started = time.perf_counter()
            if model is None or not own_plan:
                torch.manual_seed(seed)
                model, plan, own_plan = self._build(size)
                buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
            assert plan is not None
            if own_plan:
                torch.manual_seed(seed)
                plan.init_(model)
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
            if j == 0:
                self._describe(model, plan)
            self._train(model, plan, index, j, seed, steps)
            if self.progress is not None:
                self.progress(
                    f"{self.vary} {size} ({index + 1}/{n_sizes}) seed {seed}: "
                    f"{time.perf_counter() - started:.2f}s"
                )

    # -------------------------------------------------------------------------- building
    def _build(self, size: int) -> tuple[nn.Module, Plan, bool]:
        built = self.factory(size)
        if isinstance(built, tuple):
            if len(built) != 2 or not isinstance(built[1], Plan):
                raise CoordCheckError(
                    "the factory returned a tuple that is not (model, plan); return either an "
                    "nn.Module or (model, mutransfer.parametrize(model, ...))"
                )
            model, plan = built
            model.to(self.device)
            plan.bind(model)
            self.rules_name = plan.rules.name
            return model, plan, False
        if not isinstance(built, nn.Module):
            raise CoordCheckError(
                f"the factory returned {type(built).__name__}; it must return an nn.Module or "
                "a (model, plan) pair"
            )
        model = built.to(self.device)
        kwargs = dict(self.parametrize_kwargs)
        branches = getattr(model, "residual_branches", None)
        if "residual_branches" not in kwargs and branches:
            kwargs["residual_branches"] = tuple(branches)
        if self.vary == "width":
            kwargs.setdefault("base", self.factory)
            kwargs.setdefault("base_width", self.base_size)
        else:
            if "delta" not in kwargs:
                raise CoordCheckError(
                    "with vary='depth' every size has the same parameter shapes, so the width "
                    "dimensions cannot be inferred: pass parametrize_kwargs={'delta': "
                    "factory_at_base_depth_and_another_width_on_meta} or return (model, plan) "
                    "from the factory"
                )
            kwargs.setdefault("base", _meta_module(self.factory, self.base_size))
        try:
            plan = parametrize(
                model, rules=self.rules, optimizer=self.optimizer, init=False, **kwargs
            )
        except RoleError as exc:
            raise CoordCheckError(f"cannot parametrize the model at size {size}: {exc}") from exc
        self.rules_name = plan.rules.name
        return model, plan, True

    def _describe(self, model: nn.Module, plan: Plan) -> None:
        """What the verdict needs to know about modules (merged over sizes): parameter roles,
        the attention rule, which modules are residual branches scaled by the depth rules."""
        rename = self.rename or (lambda name: name)
        context = self.context
        roles: dict[str, list[str]] = context.setdefault("roles", {})
        for name, module in model.named_modules():
            mine = [
                plan[canonical_name(f"{name}.{leaf}" if name else leaf)].role
                for leaf, _ in module.named_parameters(recurse=False)
            ]
            if mine:
                key = rename(canonical_name(name))
                roles[key] = sorted(set(roles.get(key, [])) | set(mine))
        residual = {rename(s.module) for s in plan.module_scales.values() if "residual" in s.reason}
        context["vary"] = self.vary
        context["attention"] = plan.rules.attention
        context["residual_depth_exponent"] = plan.rules.residual_depth_exponent
        context["residual_modules"] = sorted(set(context.get("residual_modules", [])) | residual)

    # --------------------------------------------------------------------------- training
    def _train(self, model: nn.Module, plan: Plan, i: int, j: int, seed: int, steps: int) -> None:
        model.train()
        generator = torch.Generator().manual_seed(seed)
        batch = _to(_batch(self.data, model, generator), self.device)
        opt = _make_optimizer(self.optimizer, plan, model, self.lr, self.optimizer_kwargs)
        params = [p for p in model.parameters() if p.requires_grad]
        # θ_{t-1} − θ_t per parameter, for the update term; one copy of the parameters
        snapshot = [torch.empty_like(p) for p in params] if self.updates else []
        deltas = {id(p): s for p, s in zip(params, snapshot, strict=True)}
        recorder = Recorder(model, include=self.include, updates=self.updates, rename=self.rename)
        with contextlib.ExitStack() as stack:
            stack.callback(recorder.remove)
            if self.attention_logits:
                stack.enter_context(recorder.attention_logits())
            for t in range(steps + 1):
                training = t < steps
                recorder.begin(deltas if (t > 0 and self.updates) else None)
                with torch.set_grad_enabled(training):
                    output = _forward(model, batch)
                    value = _loss(self.loss, output, batch)
                for key, rms in recorder.end().items():
                    self.values.setdefault(key, {})[(t, i, j)] = rms
                    self.order.setdefault(key, len(self.order))
                self.losses[(t, i, j)] = float(value.detach())
                if not training:
                    break
                opt.zero_grad(set_to_none=True)
                value.backward()
                with torch.no_grad():
                    if self.updates:
                        torch._foreach_copy_(snapshot, [p.detach() for p in params])
                    opt.step()
                    if self.updates:
                        torch._foreach_sub_(snapshot, [p.detach() for p in params])


def _make_optimizer(
    optimizer: Any, plan: Plan, model: nn.Module, lr: float, kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    kwargs = dict(kwargs)
    if isinstance(optimizer, str):
        cls = _OPTIMIZERS.get(optimizer.lower())
        if cls is None:
            raise CoordCheckError(
                f"unknown optimizer {optimizer!r}; use one of {', '.join(_OPTIMIZERS)} or pass "
                "an optimizer class"
            )
    else:
        cls = optimizer
    groups = plan.param_groups(
        lr, model=model, weight_decay=float(kwargs.pop("weight_decay", 0.0)), names=False
    )
    result: torch.optim.Optimizer = cls(groups, lr=lr, **kwargs)
    return result


# -------------------------------------------------------------------------------------- data
def _batch(data: DataSpec, model: nn.Module, generator: torch.Generator) -> Batch:
    """One batch per seed, used at every step (as microsoft/mup does by default).

    With the input fixed, a change in a module's output from one step to the next comes from
    the updates alone, and the logits' learned part can be compared step to step.
    """
    if data is None:
        return default_batch(model, generator)
    if callable(data) and not isinstance(data, torch.Tensor):
        return data(generator)
    return data


def _to(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(_to(v, device) for v in batch)
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
        seq_len = min(int(getattr(getattr(model, "cfg", None), "seq_len", 8)), 8)
        tokens = _text_windows(2, seq_len, generator) if vocab >= 256 else None
        if tokens is None:
            tokens = torch.randint(0, vocab, (2, seq_len + 1), generator=generator)
        targets = tokens[:, 1:]
        if classes is not None and classes != vocab:
            targets = torch.randint(0, int(classes), targets.shape, generator=generator)
        return tokens[:, :-1], targets
    if isinstance(first, nn.Linear) and classes is not None:
        inputs = torch.randn(4, first.in_features, generator=generator)
        return inputs, torch.randint(0, int(classes), (4,), generator=generator)
    raise CoordCheckError(
        f"no default data for a model starting with {type(first).__name__}; pass data= "
        "(a batch (inputs, targets) or a callable data(generator) -> batch)"
    )


def _text_windows(batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor | None:
    try:
        from . import data as shipped

        corpus = shipped.shakespeare()
    except (ImportError, FileNotFoundError):
        return None
    inputs, targets = corpus.batch("train", batch, seq_len, generator)
    return torch.cat([inputs, targets[:, -1:]], dim=1)


# -------------------------------------------------------------------------- forward and loss
def _forward(model: nn.Module, batch: Batch) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(batch[0])
    return model(batch)


def _loss(loss: LossFn | None, output: Any, batch: Batch) -> torch.Tensor:
    if loss is not None:
        return loss(output, batch)
    own = getattr(output, "loss", None)
    if own is None and isinstance(output, dict):
        own = output.get("loss")
    if isinstance(own, torch.Tensor):
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
        return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1))
    return F.mse_loss(out.float(), targets.float())
