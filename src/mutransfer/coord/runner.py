"""Running a coordinate check: one job per size (and seeds), built once, trained per seed.

Each width's model is built once and re-initialised from its plan for every seed; worker
threads train several sizes or seeds at once, sharing only the lock around torch's global RNG.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeAlias

import torch
from torch import nn

from ..build import parametrize
from ..optim import optimizer_class
from ..plan import Plan, resettable_modules
from ..roles import RoleError, canonical_name
from ..rules import Rules
from .batches import DataSpec, LossFn, batch_for, batch_loss, to_device
from .errors import CoordCheckError
from .record import Delta, Key, Recorder

Factory: TypeAlias = Callable[[int], "nn.Module | tuple[nn.Module, Plan]"]

DEFAULT_LR = {"adam": 1e-2, "sgd": 0.1}
"""Base-width learning rates large enough that a wrong scale shows within a few steps."""

REFERENCE_INIT_STD = 1 / math.sqrt(64)
"""The hidden init std (1/√fan_in at width 64) that Adam's default LR of 1e-2 is made for."""

COORD_OPTIMIZERS = ("adam", "adamw", "sgd")
"""The optimizers the check knows by name (or pass an optimizer class)."""


def meta_module(factory: Factory, size: int) -> nn.Module:
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
    return sum(p.numel() for p in meta_module(factory, size).parameters())


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
class Runner:
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
            kwargs.setdefault("base", meta_module(self.factory, self.base_size))
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
        batch = to_device(batch_for(self.data, model, data_generator(seed)), self.device)
        opt = _make_optimizer(self.optimizer, plan, model, self.lr, self.optimizer_kwargs)
        params = [p for p in model.parameters() if p.requires_grad]
        from_grads = _plain_sgd(opt)
        if self.updates and not from_grads and not snapshot:
            snapshot = [torch.empty_like(p) for p in params]  # θ_{t-1}, then θ_{t-1} − θ_t
        recorder = Recorder(
            model,
            include=self.include,
            updates=self.updates,
            rename=self.rename,
            attention=plan.attention,
        )
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
        try:
            cls = optimizer_class(optimizer, COORD_OPTIMIZERS)
        except ValueError as exc:
            raise CoordCheckError(f"{exc} or pass an optimizer class") from None
    else:
        cls = optimizer
    groups = plan.param_groups(
        lr, model=model, weight_decay=float(kwargs.pop("weight_decay", 0.0)), names=False
    )
    result: torch.optim.Optimizer = cls(groups, lr=lr, **kwargs)
    return result
