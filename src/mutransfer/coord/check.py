"""The coordinate check: train a model at several widths for a few steps and judge the scaling.

µP promises that every activation, and every layer's update ΔW·x, has coordinates of a size that
does not depend on width. The check trains the same architecture at several widths (or depths)
for a few steps and records, per module and step, the RMS of its output, of its update term and
of its attention logits (see ``record``). The slope of log RMS against log width, fitted
per seed and averaged, gives a verdict per module (see ``verdict``): ``stable``,
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

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from ..devices import resolve_device
from ..roles import canonical_name, depth_containers
from ..rules import Rules, get_rules, optimizer_family
from .batches import DataSpec, LossFn
from .errors import CoordCheckError
from .record import attention_probe, default_include
from .runner import DEFAULT_LR, Factory, Runner, meta_module
from .verdict import CoordReport, Thresholds, judge


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
            start smaller than 1/√64 (see ``Runner.default_lr``): e.g. 1.6e-3 for a GPT-2-style
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
        device: where to train: "cpu" (default), "auto" (the GPU if torch sees one) or a
            torch device name; one this machine lacks is refused before anything is built.
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
    target = resolve_device(device)
    include = _include(modules)
    rename = _pool_blocks(factory, sizes) if vary == "depth" else None
    runner = Runner(
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


def _pool_blocks(factory: Factory, sizes: list[int]) -> Callable[[str], str]:
    """Depth mode: ``blocks.7.attn`` → ``blocks.*.attn`` for block lists whose length varies.

    Models of different depths do not share block names; pooling the blocks of a list (their
    sums of squares add up) compares "a typical block" across depths.
    """

    def names(size: int) -> list[str]:
        module = meta_module(factory, size)
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
