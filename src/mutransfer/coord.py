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
update term costs one extra call per parameterised module per step, plus one copy of the
parameters unless the optimizer is plain SGD (whose update is lr·grad). ``workers`` threads
train several sizes or seeds at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import inspect
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from .build import parametrize
from .coord_record import Delta, Key, Recorder, attention_probe, default_include, first_tensor
from .coord_verdict import CoordReport, Thresholds, judge
from .plan import Plan, resettable_modules
from .roles import RoleError, canonical_name, depth_containers
from .rules import Rules, get_rules, optimizer_family

Factory: TypeAlias = Callable[[int], "nn.Module | tuple[nn.Module, Plan]"]
Batch: TypeAlias = Any
DataSpec: TypeAlias = "Callable[[torch.Generator], Batch] | Iterable[Batch] | Batch | None"
LossFn: TypeAlias = Callable[[Any, Batch], torch.Tensor]

DEFAULT_LR = {"adam": 1e-2, "sgd": 0.1}
"""Base-width learning rates large enough that a wrong scale shows within a few steps."""

REFERENCE_INIT_STD = 1 / math.sqrt(64)
"""The hidden init std (1/√fan_in at width 64) that Adam's default LR of 1e-2 is made for."""

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
    strict: bool = False,
    device: str | torch.device | None = None,
    workers: int = 1,
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
        lr: base learning rate (the plan scales it per tensor). Default 0.1 for SGD; for Adam
            1e-2, times (hidden init std at the base) / (1/√64) when the model's hidden weights
            start smaller than 1/√64 (see ``_Runner.default_lr``): e.g. 1.6e-3 for a GPT-2-style
            init of σ 0.02.
        data: a batch, a callable ``data(generator) -> batch`` called once per seed, or
            batches (a list, a DataLoader) of which the first is used; the same batch is used
            at every step. A batch is ``(inputs, targets)``
            (``model(inputs)``) or a dict (``model(**batch)``). Keep it small (a few vectors or
            a few dozen tokens): see ``default_batch``. Default: 2 windows of 8 tokens of the
            shipped text (random bytes without it) for models starting with an Embedding, 4
            Gaussian vectors with random labels for models starting with a Linear.
        loss: ``loss(output, batch) -> scalar``. Default: the model's own loss, and else
            cross-entropy for integer targets, MSE otherwise. A model whose forward takes a
            ``targets``/``labels`` argument (nanoGPT, Hugging Face; see ``TARGET_ARGUMENTS``)
            is given the batch's targets there, and the loss it returns (``.loss``,
            ``["loss"]``, or the scalar of a ``(logits, loss)`` tuple) is used.
        rules: rules for modules returned by the factory (``"mup"``, ``"sp"`` or ``Rules``).
        base_width: base width (or base depth) of the plan; default the smallest size.
        vary: ``"width"`` or ``"depth"`` (blocks vary at fixed width, for the depth rules).
        depths: the depths to compare with ``vary="depth"``.
        parametrize_kwargs: extra arguments for ``parametrize`` (``zero_init``, constants such
            as ``output_multiplier``; with ``vary="depth"`` also ``delta=``, see below).
        optimizer_kwargs: extra optimizer arguments (``betas``, ``momentum``, ``weight_decay``).
        modules: fnmatch patterns of module names to record (default: every module but
            containers).
        updates: record the update terms ΔW·x and Δlogits (one extra call per parameterised
            module per step, and a copy of the parameters unless the optimizer is plain SGD).
        attention_logits: record the logits of ``F.scaled_dot_product_attention`` calls.
        thresholds: slope thresholds of the verdict (defaults calibrated on real runs).
        strict: also fail when a series vanishes (an activation or update that shrinks with
            width at some step, beyond µP's explained shrinkages); by default those are
            warnings, and only blow-ups and layers that learn too slowly fail.
        device: where to train (default: CPU).
        workers: threads training different sizes and seeds at once (torch kernels release
            the GIL; torch's intra-op threads are divided between them). Results do not
            depend on it.
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
    if workers < 1:
        raise CoordCheckError(f"workers must be at least 1 (got {workers})")
    family = optimizer_family(optimizer)
    if lr is None and family not in DEFAULT_LR:
        raise CoordCheckError(f"pass lr= for optimizer {optimizer!r} (no default for it)")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
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
        lr=lr or 0.0,
        data=data,
        loss=loss,
        parametrize_kwargs=dict(parametrize_kwargs or {}),
        optimizer_kwargs=dict(optimizer_kwargs or {}),
        include=include,
        rename=rename,
        updates=updates,
        device=target,
        progress=progress,
    )
    started = time.perf_counter()
    lr_source = "given"
    if lr is None:
        lr, lr_source = runner.default_lr(family)
        runner.lr = lr
    fork_devices = [target] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), contextlib.ExitStack() as stack:
        if attention_logits:
            stack.enter_context(attention_probe())
        result = runner.run(sizes, seed_list, steps, workers)
    rules_used = result.rules or rules_obj
    context = {
        "vary": vary,
        "roles": {name: sorted(roles) for name, roles in result.roles.items()},
        "attention": rules_used.attention,
        "residual_depth_exponent": rules_used.residual_depth_exponent,
        "residual_modules": sorted(result.residual),
    }
    settings = {
        "vary": vary,
        "rules": rules_used.name,
        "optimizer": optimizer if isinstance(optimizer, str) else optimizer.__name__,
        "family": family,
        "lr": lr,
        "lr_source": lr_source,
        "steps": steps,
        "base_size": base_size,
        "device": str(target),
        "workers": workers,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return judge(
        sizes=sizes,
        seeds=seed_list,
        steps=steps,
        values=result.values,
        losses=result.losses,
        order={key: n for n, key in enumerate(result.order)},
        context=context,
        settings=settings,
        thresholds=thresholds or Thresholds(),
        strict=strict,
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


def _parameter_count(factory: Factory, size: int) -> int:
    return sum(p.numel() for p in _meta_module(factory, size).parameters())


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
# The global RNG (module construction, reset_parameters) is shared by worker threads: whatever
# draws from it runs under this lock, right after seeding it, so results do not depend on timing.
_GLOBAL_RNG = threading.Lock()


@dataclasses.dataclass
class _Job:
    index: int
    size: int
    seeds: list[tuple[int, int]]  # (seed index, seed)
    cost: float = 0.0  # parameters × seeds, for scheduling


@dataclasses.dataclass
class _JobResult:
    values: dict[Key, dict[tuple[int, int, int], float]] = dataclasses.field(default_factory=dict)
    losses: dict[tuple[int, int, int], float] = dataclasses.field(default_factory=dict)
    order: list[Key] = dataclasses.field(default_factory=list)
    roles: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    residual: set[str] = dataclasses.field(default_factory=set)
    rules: Rules | None = None


@dataclasses.dataclass
class _Runner:
    """Runs jobs (one size, some seeds) and merges their results in a fixed order."""

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
    device: torch.device
    progress: Callable[[str], None] | None
    n_sizes: int = 0

    def run(self, sizes: list[int], seeds: list[int], steps: int, workers: int) -> _JobResult:
        self.n_sizes = len(sizes)
        costs = [
            _parameter_count(self.factory, size) * len(seeds) if workers > 1 else 0
            for size in sizes
        ]
        jobs = _jobs(sizes, seeds, workers, costs)
        if workers <= 1:
            results = [self.run_job(job, steps) for job in jobs]
        else:
            threads = torch.get_num_threads()
            torch.set_num_threads(max(1, threads // workers))
            try:
                with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                    results = list(pool.map(lambda job: self.run_job(job, steps), jobs))
            finally:
                torch.set_num_threads(threads)
        merged = _JobResult()
        for _, result in sorted(zip(jobs, results, strict=True), key=lambda jr: _job_key(jr[0])):
            for key in result.order:
                if key not in merged.values:
                    merged.order.append(key)
                merged.values.setdefault(key, {}).update(result.values[key])
            merged.losses.update(result.losses)
            for name, roles in result.roles.items():
                merged.roles.setdefault(name, set()).update(roles)
            merged.residual |= result.residual
            merged.rules = merged.rules or result.rules
        return merged

    def run_job(self, job: _Job, steps: int) -> _JobResult:
        result = _JobResult()
        first_seed = job.seeds[0][1]
        model, plan, own_plan = self._build(job.size, first_seed)
        self._describe(model, plan, result)
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        snapshot: list[torch.Tensor] = []
        for k, (j, seed) in enumerate(job.seeds):
            started = time.perf_counter()
            if not own_plan and k > 0:
                model, plan, _ = self._build(job.size, seed)
                snapshot = []
            elif own_plan:
                reinit(plan, model, seed)
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
            snapshot = self._train(model, plan, job.index, j, seed, steps, result, snapshot)
            if self.progress is not None:
                self.progress(
                    f"{self.vary} {job.size} ({job.index + 1}/{self.n_sizes}) seed {seed}: "
                    f"{time.perf_counter() - started:.2f}s"
                )
        return result

    def default_lr(self, family: str) -> tuple[float, str]:
        """The base LR when none is given, and where it comes from.

        Adam moves every weight by about the LR per step, whatever its size, so its default
        is scaled to the model's hidden init at the base: 1e-2 suits hidden weights of std
        1/√64 (the rules' σ/√fan_in at width 64), where a step changes a weight by ~8 % of its
        size. A model that draws its hidden weights with GPT-2's σ 0.02 would be moved by ~60 %
        per step: a regime so nonlinear that finite-width effects swamp the slopes (measured on
        a nanoGPT-style model under correct µP, widths 64–512, 2 seeds: at 1e-2, 4 of 8 seed
        pairs had a series at slope +0.25 to +0.5; at 1e-3 none above +0.2), while its faults
        show as clearly at the smaller LR. SGD's step scales with the gradient: 0.1, unscaled.
        """
        lr = DEFAULT_LR[family]
        if family != "adam":
            return lr, "default"
        std = self._hidden_init_std()
        if std is None or std >= REFERENCE_INIT_STD:
            return lr, "default"
        scaled = lr * std / REFERENCE_INIT_STD
        return scaled, f"1e-2 × hidden init std {std:.3g} at the base / {REFERENCE_INIT_STD:.3g}"

    def _hidden_init_std(self) -> float | None:
        """Median init std of the hidden weights at the base size (None: none, or unknown)."""
        try:
            with torch.device("meta"):
                built = self.factory(self.base_size)
            if isinstance(built, tuple):
                plan = built[1]
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the real build warns, once
                    plan = self._parametrize(built, self.base_size)
        except Exception:  # the real build reports what is wrong with the factory
            return None
        if not isinstance(plan, Plan):
            return None
        stds = sorted(
            t.init_std for t in plan.tensors.values() if t.role == "hidden" and t.init == "normal"
        )
        return stds[len(stds) // 2] if stds else None

    # -------------------------------------------------------------------------- building
    def _build(self, size: int, seed: int) -> tuple[nn.Module, Plan, bool]:
        """The model at ``size``, its plan, and whether the plan is ours (then ``reinit``
        initialises the model for every seed, the first one included)."""
        empty = self._build_empty(size)
        if empty is not None:
            return empty[0], empty[1], True
        with _GLOBAL_RNG:
            torch.manual_seed(seed)
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
            return model, plan, False
        if not isinstance(built, nn.Module):
            raise CoordCheckError(
                f"the factory returned {type(built).__name__}; it must return an nn.Module or "
                "a (model, plan) pair"
            )
        model = built.to(self.device)
        return model, self._parametrize(model, size), True

    def _build_empty(self, size: int) -> tuple[nn.Module, Plan] | None:
        """The model built on ``meta`` and given uninitialised memory, when ``reinit`` will set
        every one of its tensors anyway; None when that cannot be shown (buffers, a tensor left
        at a default no ``reset_parameters`` restores, a factory that fails on meta or returns
        its own plan).

        Building for real draws each tensor's default init only for ``reinit`` to overwrite it
        before the first step: for the widest model that is a full pass of the slow CPU RNG,
        made while holding the global-RNG lock that keeps the other workers waiting.
        """
        try:
            with torch.device("meta"):
                built = self.factory(size)
        except Exception:  # the real build below reports what is wrong with the factory
            return None
        if not isinstance(built, nn.Module) or any(True for _ in built.buffers()):
            return None  # a (model, plan) pair is initialised by its factory: built for real
        plan = self._parametrize(built, size)
        resettable = {
            f"{prefix}.{leaf}" if prefix else leaf
            for prefix, module, _ in resettable_modules(built)
            for leaf, _ in module.named_parameters(recurse=False)
        }
        for name, _ in built.named_parameters():
            if plan[canonical_name(name)].init == "default" and name not in resettable:
                return None
        model = built.to_empty(device=self.device)
        plan.retie_(model)
        return model, plan

    def _parametrize(self, model: nn.Module, size: int) -> Plan:
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
        return plan

    def _describe(self, model: nn.Module, plan: Plan, result: _JobResult) -> None:
        """What the verdict needs to know about modules: the roles of their parameters and
        which modules are residual branches that the depth rules scale.

        A parameter's role is taken under the name the module uses it by (``plan.role_of``): a
        weight tied between the input embedding and the readout is ``input`` in the embedding
        and ``output`` in the readout, whose expected 1/√width shrinkage at step 0 must be
        judged as a readout's, not reported as an embedding that vanishes.
        """
        rename = self.rename or (lambda name: name)
        for name, module in model.named_modules():
            mine = {
                plan.role_of(canonical_name(f"{name}.{leaf}" if name else leaf))
                for leaf, _ in module.named_parameters(recurse=False, remove_duplicate=False)
            }
            if mine:
                result.roles.setdefault(rename(canonical_name(name)), set()).update(mine)
        result.residual |= {
            rename(s.module) for s in plan.module_scales.values() if "residual" in s.reason
        }
        result.rules = plan.rules

    # --------------------------------------------------------------------------- training
    def _train(
        self,
        model: nn.Module,
        plan: Plan,
        i: int,
        j: int,
        seed: int,
        steps: int,
        result: _JobResult,
        snapshot: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """Train one seed; returns the snapshot buffers so the next seed reuses them."""
        model.train()
        batch = _to(_batch(self.data, model, data_generator(seed)), self.device)
        opt = _make_optimizer(self.optimizer, plan, model, self.lr, self.optimizer_kwargs)
        params = [p for p in model.parameters() if p.requires_grad]
        from_grads = _plain_sgd(opt)
        if self.updates and not from_grads and not snapshot:
            snapshot = [torch.empty_like(p) for p in params]  # θ_{t-1}, then θ_{t-1} − θ_t
        recorder = Recorder(model, include=self.include, updates=self.updates, rename=self.rename)
        deltas: dict[int, Delta] | None = None
        with recorder.recording():
            try:
                for t in range(steps + 1):
                    training = t < steps
                    recorder.begin(deltas if t > 0 else None)
                    with torch.set_grad_enabled(training):
                        value = batch_loss(model, batch, self.loss)
                    for key, rms in recorder.end().items():
                        if key not in result.values:
                            result.values[key] = {}
                            result.order.append(key)
                        result.values[key][(t, i, j)] = rms
                    result.losses[(t, i, j)] = float(value.detach())
                    if not training:
                        break
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    deltas = self._step(opt, params, snapshot, from_grads)
            finally:
                recorder.remove()
        return snapshot

    def _step(
        self,
        opt: torch.optim.Optimizer,
        params: list[nn.Parameter],
        snapshot: list[torch.Tensor],
        from_grads: bool,
    ) -> dict[int, Delta] | None:
        """One optimizer step; returns θ_{t−1} − θ_t for every parameter, as cheaply as possible.

        Plain SGD moves θ by exactly lr·grad: the gradient itself is the delta (no copy).
        Otherwise the parameters are copied before the step and subtracted after it.
        """
        with torch.no_grad():
            if not self.updates:
                opt.step()
                return None
            if from_grads:
                opt.step()
                return {
                    id(p): (p.grad, float(group["lr"]))
                    for group in opt.param_groups
                    for p in group["params"]
                    if p.grad is not None
                }
            torch._foreach_copy_(snapshot, [p.detach() for p in params])
            opt.step()
            torch._foreach_sub_(snapshot, [p.detach() for p in params])
            return {id(p): (s, 1.0) for p, s in zip(params, snapshot, strict=True)}


def _jobs(sizes: list[int], seeds: list[int], workers: int, costs: list[int]) -> list[_Job]:
    """One job per size, with its seeds split only where a size outweighs a worker's share.

    A job builds its model once and re-initialises it per seed, so splitting costs one more
    build; it pays only for sizes larger than ``total / workers`` (the widest ones, whose
    parameter count dominates). Jobs are returned largest first so that a pool of workers
    never ends with one expensive job running alone.
    """
    indexed = list(enumerate(seeds))
    if workers <= 1:
        return [_Job(i, size, indexed) for i, size in enumerate(sizes)]
    share = sum(costs) / workers
    jobs = []
    for i, (size, cost) in enumerate(zip(sizes, costs, strict=True)):
        parts = max(1, min(len(seeds), workers, math.ceil(cost / share - 1e-9)))
        jobs += [_Job(i, size, indexed[k::parts], cost / parts) for k in range(parts)]
    return sorted(jobs, key=lambda job: -job.cost)


def _job_key(job: _Job) -> tuple[int, int]:
    return (job.index, job.seeds[0][0])


_DATA_STREAM = 0x9E3779B97F4A7C15  # any large odd constant: keeps data and init streams apart


def data_generator(seed: int) -> torch.Generator:
    """The generator of a seed's data: a different stream from its initialisation.

    Seeding both with ``seed`` would make them draw the same numbers: with Gaussian inputs, the
    first input vector would equal the first row of the first weight matrix (up to its std),
    one output coordinate would be ‖x‖²·std instead of ‖x‖·std, and the small widths would look
    like they blow up.
    """
    return torch.Generator().manual_seed((seed + _DATA_STREAM) % 2**63)


def _plain_sgd(opt: torch.optim.Optimizer) -> bool:
    """True when every step is exactly θ ← θ − lr·grad (SGD without momentum or decay)."""
    return type(opt) is torch.optim.SGD and all(
        not g.get("momentum") and not g.get("weight_decay") and not g.get("maximize")
        for g in opt.param_groups
    )


@torch.no_grad()
def reinit(plan: Plan, model: nn.Module, seed: int) -> None:
    """``plan.init_(model, seed)`` with the global RNG seeded as well.

    The tensors the plan leaves at their default are set by the modules' own
    ``reset_parameters``, which draw from the global RNG; seeding it under a lock makes a
    width's init a function of ``seed`` alone, also when worker threads check widths in parallel.
    Only that step holds the lock: the plan's own draws (the wide weights, most of the time)
    use a generator of their own, so worker threads make them at the same time.
    """
    with _GLOBAL_RNG:
        torch.manual_seed(seed)
        plan.reset_defaults_(model)
    plan.init_(model, seed=seed, defaults=False)


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
        from . import data as shipped

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
