"""The plan: a parametrization applied to one concrete model.

``parametrize(model, base)`` infers every parameter's role (``roles.py``), looks up the rule for
that role and optimizer family (``rules.py``) and stores the result per parameter *name*:
role, init std, LR / weight-decay / ε scales and forward multiplier. Nothing is written onto
the parameters themselves, so the plan survives ``deepcopy``, pickling, ``state_dict`` round
trips, ``to_empty`` from meta, DDP, FSDP2 and ``torch.compile`` — anything that keeps names.

The plan is plain data: ``plan.to_json()`` saves it beside a checkpoint, ``Plan.from_json``
restores it without the base model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from . import ops
from .roles import canonical_name
from .rules import Rules

Mode = Literal["absorbed", "explicit"]
DEFAULT_ADAM_EPS = 1e-8  # torch.optim.Adam's default; used when ε must be scaled per tensor


@dataclass(frozen=True)
class TensorPlan:
    """What the plan prescribes for one parameter tensor."""

    name: str
    shape: tuple[int, ...]
    role: str
    m_in: float
    m_out: float
    m_depth: float
    init_std: float
    lr_scale: float
    wd_scale: float
    eps_scale: float
    multiplier: float
    """Forward multiplier applied explicitly (by a hook or the model); 1.0 when absorbed."""
    absorbed: float = 1.0
    """The multiplier folded into init, LR, ε and weight decay (absorbed mode)."""
    init: Literal["normal", "zeros", "ones", "default"] = "normal"
    aliases: tuple[str, ...] = ()
    tied_roles: tuple[str, ...] = ()
    init_source: str = "rules"
    """Where the init std at the base width came from: ``base``, ``torch default``, ``model``,
    ``base_init_std`` or ``rules`` (see ``mutransfer.own_init``)."""
    alias_roles: tuple[str, ...] = ()
    """For a tied tensor, the role under each of ``names`` (e.g. ``("input", "output")`` for an
    embedding shared with the readout); empty when the tensor has one role."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def role_as(self, name: str) -> str:
        """The role of this tensor as used under ``name``: a tied readout alias is ``output``."""
        if self.alias_roles:
            key = canonical_name(name)
            for alias, role in zip(self.names, self.alias_roles, strict=True):
                if alias == key:
                    return role
        return self.role


@dataclass(frozen=True)
class ModuleScale:
    """A forward multiplier applied by a hook on a module (``kind``: ``input`` or ``output``)."""

    module: str
    kind: Literal["input", "output"]
    multiplier: float
    reason: str


@dataclass(frozen=True)
class AttentionPlan:
    """The logit scale of one attention module (one exposing ``head_dim`` and ``scaling``)."""

    module: str
    head_dim: int
    base_head_dim: int
    scale: float


class PlanError(ValueError):
    """The plan and the model it is used with do not fit together."""


@dataclass
class Plan:
    """Rules × roles for one model; see the module docstring."""

    rules: Rules
    family: str
    mode: Mode
    tensors: dict[str, TensorPlan]
    module_scales: dict[str, ModuleScale] = field(default_factory=dict)
    attention: dict[str, AttentionPlan] = field(default_factory=dict)
    base_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _model_ref: Callable[[], nn.Module | None] | None = field(
        default=None, repr=False, compare=False
    )

    # ----------------------------------------------------------------------------- lookups
    def __getitem__(self, name: str) -> TensorPlan:
        key = canonical_name(name)
        entry = self.tensors.get(key) or self._by_alias().get(key)
        if entry is None:
            raise KeyError(f"{name!r} is not a parameter in this plan")
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            canonical_name(name) in self.tensors or canonical_name(name) in self._by_alias()
        )

    def __len__(self) -> int:
        return len(self.tensors)

    def role_of(self, name: str) -> str:
        """The role of parameter ``name`` as used under that name (a tied readout: ``output``)."""
        return self[name].role_as(name)

    def _by_alias(self) -> dict[str, TensorPlan]:
        return {alias: t for t in self.tensors.values() for alias in t.aliases}

    @property
    def model(self) -> nn.Module | None:
        """The model this plan was built for, while it is alive (held by weak reference)."""
        return self._model_ref() if self._model_ref is not None else None

    def bind(self, model: nn.Module) -> Plan:
        """Make ``model`` the default for ``init_``/``param_groups`` (e.g. after ``deepcopy``)."""
        self._check_fits(model)
        self._model_ref = weakref.ref(model)
        return self

    def _resolve(self, model: nn.Module | None) -> nn.Module:
        target = model if model is not None else self.model
        if target is None:
            raise PlanError(
                "this plan is not bound to a live model (it was loaded, unpickled or its model "
                "was deleted); pass the model explicitly, e.g. plan.param_groups(lr, model=model)"
            )
        return target

    def _check_fits(self, model: nn.Module) -> None:
        known = {n for t in self.tensors.values() for n in t.names}
        for name, p in model.named_parameters(remove_duplicate=False):
            key = canonical_name(name)
            if key not in known:
                raise PlanError(
                    f"parameter {key!r} of the model is not in the plan; was the model changed "
                    "after parametrize()? Build the plan again for this model."
                )
            planned = self[key].shape
            if tuple(p.shape) != planned:
                raise PlanError(
                    f"parameter {key!r} has shape {list(p.shape)} but the plan was built for "
                    f"{list(planned)}; build the plan for this width with parametrize()."
                )

    # ----------------------------------------------------------------------- forward side
    @property
    def forward(self) -> dict[str, float]:
        """Explicit forward multipliers a model may apply itself, by parameter name."""
        return {t.name: t.multiplier for t in self.tensors.values() if t.multiplier != 1.0}

    def attention_scale(self, head_dim: int, base_head_dim: int | None = None) -> float:
        """The attention logit scale these rules give for a head dimension."""
        return ops.attention_scale(
            head_dim,
            base_head_dim=base_head_dim,
            kind=self.rules.attention,
            multiplier=self.rules.attention_multiplier,
        )

    def attach(self, model: nn.Module | None = None) -> nn.Module:
        """Install the explicit multipliers on ``model``: hooks and attention ``scaling``.

        Idempotent: previous mutransfer hooks are removed first. Returns the model.
        """
        target = self._resolve(model)
        ops.remove_hooks(target)
        modules = {canonical_name(n): m for n, m in target.named_modules()}
        for scale in self.module_scales.values():
            module = modules.get(scale.module)
            if module is None:
                raise PlanError(f"module {scale.module!r} from the plan is not in the model")
            if scale.kind == "input":
                module.register_forward_pre_hook(ops.InputScale(scale.multiplier))
            else:
                module.register_forward_hook(ops.OutputScale(scale.multiplier))
        for att in self.attention.values():
            module = modules.get(att.module)
            if module is None:
                raise PlanError(
                    f"attention module {att.module!r} from the plan is not in the model"
                )
            if isinstance(module, nn.MultiheadAttention):
                ops.scale_multihead_attention_(module, att.scale)
                module.register_forward_pre_hook(ops.KeepSlowPath())
            else:
                module.scaling = att.scale
        for module in modules.values():
            # torch's encoder packs padded batches into nested tensors for its fused kernels,
            # which would bypass the scaled attention: keep it on the ordinary path
            layers = getattr(module, "layers", None)
            if (
                isinstance(module, nn.TransformerEncoder)
                and layers is not None
                and any(
                    isinstance(getattr(layer, "self_attn", None), ops.ScaledMultiheadAttention)
                    for layer in layers
                )
            ):
                module.use_nested_tensor = False
        return target

    # ------------------------------------------------------------------------------ init
    @torch.no_grad()
    def init_(
        self, model: nn.Module | None = None, seed: int | None = None, *, defaults: bool = True
    ) -> nn.Module:
        """Initialise every parameter as the plan prescribes (works after ``to_empty``).

        First the tensors the plan leaves at their default (norm gains, custom vectors, biases
        under some rules) get them from their modules' own ``reset_parameters`` (see
        ``reset_defaults_``; ``defaults=False`` skips this step for a caller that ran it
        itself, e.g. under a lock on the global RNG). Then weights get N(0, init_std²) from
        ``seed``'s own generator (or zeros) and biases zeros. Under DTensor (FSDP2) each shard
        is filled in place.
        """
        target = self._resolve(model)
        self._check_fits(target)
        self.retie_(target)
        if defaults:
            self.reset_defaults_(target)
        generator = None
        if seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(seed)
        params = _dedup_named_parameters(target)
        for name, p in params.items():
            entry = self[name]
            if entry.init == "default":
                continue
            if entry.init == "ones":
                p.fill_(1.0)
            elif entry.init == "zeros" or entry.init_std == 0.0:
                p.zero_()
            else:
                _normal_(p, entry.init_std, generator)
        for module in target.modules():
            pad = getattr(module, "padding_idx", None)
            if isinstance(module, nn.Embedding) and pad is not None:
                module.weight[pad].zero_()
        return target

    @torch.no_grad()
    def reset_defaults_(self, model: nn.Module | None = None) -> nn.Module:
        """Run modules' ``reset_parameters`` for the tensors the plan leaves at their default.

        These draws come from torch's global RNG (seed it for a reproducible init). A module
        whose parameters the plan sets entirely is skipped unless it has buffers to reset:
        that halves the init time of wide models.
        """
        target = self._resolve(model)
        for prefix, module, reset in resettable_modules(target):
            own = [
                f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)
            ]
            planned = own and all(self[n].init != "default" for n in own)
            if planned and not any(True for _ in module.buffers(recurse=False)):
                continue  # the plan overwrites everything reset_parameters would set
            reset()
        return target

    def retie_(self, model: nn.Module | None = None) -> nn.Module:
        """Restore weight tying that ``Module.to_empty`` (and some loaders) silently break.

        ``to_empty`` gives each module its own new tensor, so a tied embedding/readout becomes
        two independent weights that drift apart in training. The plan knows the aliases.
        """
        target = self._resolve(model)
        for entry in self.tensors.values():
            if not entry.aliases:
                continue
            shared = _get_param(target, entry.name)
            for alias in entry.aliases:
                alias_owner, _, alias_leaf = alias.rpartition(".")
                module = _get_module(target, alias_owner)
                if getattr(module, alias_leaf) is not shared:
                    setattr(module, alias_leaf, shared)
        return target

    # ------------------------------------------------------------------------- optimizer
    def param_groups(
        self,
        lr: float,
        *,
        model: nn.Module | None = None,
        weight_decay: float = 0.0,
        eps: float | None = None,
        no_decay: Sequence[str] = (),
        names: bool = True,
        roles: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Parameter groups for any ``torch.optim`` optimizer, one per distinct set of scales.

        Each group carries ``lr = lr · lr_scale`` and the key ``lr_scale`` so that schedulers
        that multiply the initial LR (``LambdaLR``, ``CosineAnnealingLR`` with ``eta_min=0``,
        ``LinearLR``...) keep the ratios; for ``OneCycleLR`` pass
        ``max_lr=mutransfer.scaled_lrs(optimizer, max_lr)``.

        ``eps``: the base Adam ε; scaled per group when the rules scale it (default 1e-8 then).
        ``no_decay``: roles excluded from weight decay, e.g. ``("vector", "scalar")``.
        ``names``: add torch's ``param_names`` key (names in optimizer state dicts).
        ``roles``: only these roles, e.g. Muon for ``("hidden",)`` beside AdamW for the rest.
        """
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("eps", eps)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        if lr <= 0 or not math.isfinite(lr):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        target = self._resolve(model)
        self._check_fits(target)
        scale_eps = self.family == "adam" and (
            eps is not None or any(t.eps_scale != 1.0 for t in self.tensors.values())
        )
        base_eps = DEFAULT_ADAM_EPS if eps is None else eps
        groups: dict[tuple[float, float, float], dict[str, Any]] = {}
        for name, p in target.named_parameters():
            if not p.requires_grad:
                continue
            entry = self[name]
            if roles is not None and entry.role not in roles:
                continue
            lr_scale = entry.lr_scale
            wd = 0.0 if entry.role in no_decay else weight_decay * entry.wd_scale
            if self.rules.weight_decay == "independent" and wd:
                # torch multiplies decay by the group LR; divide it out so that the decay per
                # step is wd (times the schedule's factor), whatever the per-tensor LR.
                wd = wd / (lr * lr_scale)
            key = (_key(lr_scale), _key(wd), _key(entry.eps_scale))
            group = groups.get(key)
            if group is None:
                group = {
                    "params": [],
                    "lr": lr * lr_scale,
                    "lr_scale": lr_scale,
                    "weight_decay": wd,
                }
                if names:
                    group["param_names"] = []
                if scale_eps:
                    group["eps"] = base_eps * entry.eps_scale
                groups[key] = group
            group["params"].append(p)
            if names:
                group["param_names"].append(canonical_name(name))
        return list(groups.values())

    def check_optimizer(self, optimizer: torch.optim.Optimizer, lr: float | None = None) -> None:
        """Raise if an optimizer's per-group LRs no longer carry the plan's ratios.

        Catches what silently breaks µP in practice: a scheduler that sets absolute LRs
        (``OneCycleLR(max_lr=float)``), param groups built by hand, or torch's Muon with
        ``adjust_lr_fn="match_rms_adamw"`` (0.2·√max(fan_in, fan_out): not a width rule).
        ``lr`` is the current base LR (default: inferred from the first group).
        """
        for group in optimizer.param_groups:
            if group.get("adjust_lr_fn") == "match_rms_adamw":
                raise PlanError(
                    "Muon(adjust_lr_fn='match_rms_adamw') scales the LR by 0.2·sqrt(max(fan_in, "
                    "fan_out)), which grows with width and undoes µP; use the default "
                    "adjust_lr_fn ('original') with the plan's groups"
                )
        base: float | None = lr
        for group in optimizer.param_groups:
            scale = group.get("lr_scale")
            if scale is None:
                raise PlanError(
                    "an optimizer param group has no 'lr_scale': build the optimizer from "
                    "plan.param_groups(...) so that every tensor gets its µP learning rate"
                )
            current = float(group["lr"]) / float(scale)
            if base is None:
                base = current
            if not math.isclose(current, base, rel_tol=1e-6):
                raise PlanError(
                    f"param group LRs lost their µP ratios (base LR {current:.3g} in one group, "
                    f"{base:.3g} in another); a scheduler probably set absolute LRs. For "
                    "OneCycleLR pass max_lr=mutransfer.scaled_lrs(optimizer, max_lr)."
                )

    # --------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "mutransfer.plan/1",
            "rules": self.rules.to_dict(),
            "family": self.family,
            "mode": self.mode,
            "tensors": {n: dataclasses.asdict(t) for n, t in self.tensors.items()},
            "module_scales": {n: dataclasses.asdict(s) for n, s in self.module_scales.items()},
            "attention": {n: dataclasses.asdict(a) for n, a in self.attention.items()},
            "base_shapes": {n: list(s) for n, s in self.base_shapes.items()},
        }

    def to_json(self, path: str | None = None, indent: int = 1) -> str:
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if not isinstance(data, Mapping) or data.get("format") != "mutransfer.plan/1":
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise PlanError(f"not a mutransfer plan (format={found!r})")
        missing = [k for k in _PLAN_KEYS if k not in data]
        if missing:
            raise PlanError(f"the plan lacks {', '.join(missing)}: an incomplete plan file")
        try:
            return cls._from_checked_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"a malformed plan ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_checked_dict(cls, data: Mapping[str, Any]) -> Plan:

        def tensor(d: Mapping[str, Any]) -> TensorPlan:
            d = dict(d)
            for key in ("shape", "aliases", "tied_roles", "alias_roles"):
                d[key] = tuple(d.get(key, ()))
            return TensorPlan(**d)

        return cls(
            rules=Rules.from_dict(data["rules"]),
            family=data["family"],
            mode=data["mode"],
            tensors={n: tensor(t) for n, t in data["tensors"].items()},
            module_scales={n: ModuleScale(**s) for n, s in data["module_scales"].items()},
            attention={n: AttentionPlan(**a) for n, a in data["attention"].items()},
            base_shapes={n: tuple(s) for n, s in data["base_shapes"].items()},
        )

    @classmethod
    def from_json(cls, text_or_path: str) -> Plan:
        """A plan from JSON text or a file; a file that is not a whole plan is named."""
        text, where = text_or_path, "the JSON text"
        if not text_or_path.lstrip().startswith("{"):
            where = repr(text_or_path)
            try:
                with open(text_or_path, encoding="utf-8") as fh:
                    text = fh.read()
            except UnicodeDecodeError:
                raise PlanError(f"{where} is not a plan: not a text (JSON) file") from None
            except OSError as exc:
                raise PlanError(f"cannot read the plan file {where}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(
                f"{where} is not a plan: not valid JSON ({exc.msg} at line {exc.lineno}); "
                "a file cut short?"
            ) from None
        try:
            return cls.from_dict(data)
        except PlanError as exc:
            raise PlanError(f"{where}: {exc}") from None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model_ref"] = None  # a weak reference is neither picklable nor meaningful there
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> Plan:
        clone = copy.copy(self)
        for key, value in self.__dict__.items():
            if key != "_model_ref":
                setattr(clone, key, copy.deepcopy(value, memo))
        return clone

    # --------------------------------------------------------------------------- display
    def table(self) -> str:
        """One row per tensor: the first thing to check after parametrizing."""
        header = (
            "name",
            "shape",
            "role",
            "m_in",
            "m_out",
            "init_std",
            "lr×",
            "mult",
            "eps×",
            "wd×",
        )
        rows = [header]
        for t in self.tensors.values():
            name = t.name + (f" (tied: {', '.join(t.aliases)})" if t.aliases else "")
            rows.append(
                (
                    name,
                    "×".join(map(str, t.shape)) or "()",
                    "+".join(t.tied_roles) if t.tied_roles else t.role,
                    f"{t.m_in:g}",
                    f"{t.m_out:g}",
                    _INIT_LABELS.get(t.init, f"{t.init_std:.4g}"),
                    f"{t.lr_scale:.4g}",
                    f"{t.multiplier:.4g}"
                    + (f" (absorbed {t.absorbed:.4g})" if t.absorbed != 1.0 else ""),
                    f"{t.eps_scale:.4g}",
                    f"{t.wd_scale:.4g}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        title = f"mutransfer plan: rules={self.rules.name} optimizer={self.family} mode={self.mode}"
        sources: dict[str, int] = {}
        for t in self.tensors.values():
            sources[t.init_source] = sources.get(t.init_source, 0) + 1
        extra = [
            "  init std at the base width from: "
            + ", ".join(f"{_SOURCE_LABELS.get(k, k)} ({n})" for k, n in sources.items())
        ]
        extra += [
            f"  hook {s.module}: {s.kind} × {s.multiplier:.4g} ({s.reason})"
            for s in self.module_scales.values()
        ]
        extra += [
            f"  attention {a.module}: logits × {a.scale:.4g} "
            f"(head_dim {a.head_dim}, base {a.base_head_dim})"
            for a in self.attention.values()
        ]
        return "\n".join([title, *lines, *extra])

    def __str__(self) -> str:
        return self.table()


# what every plan file holds (from to_dict)
_PLAN_KEYS = ("rules", "family", "mode", "tensors", "module_scales", "attention", "base_shapes")

# how the table names where a tensor's init std at the base width came from (own_init.py)
_SOURCE_LABELS = {
    "base": "the base model's own init",
    "torch default": "torch's default init of the layer",
    "model": "the model's own init, width-independent",
    "rules": "the rules' σ/√fan_in",
    "base_init_std": "base_init_std",
}

# how the table shows tensors that are not drawn from N(0, init_std²)
_INIT_LABELS = {"zeros": "zero", "ones": "one", "default": "—"}


def _key(x: float) -> float:
    """Round a scale for grouping so that 1/3·3 and 1.0 land in the same group."""
    return float(f"{x:.12g}")


def resettable_modules(
    model: nn.Module,
) -> Iterator[tuple[str, nn.Module, Callable[[], Any]]]:
    """``(name, module, module.reset_parameters)`` for the modules that can restore their own
    tensors' default init: what ``Plan.reset_defaults_`` calls for tensors the plan leaves at
    their default. ``MultiheadAttention`` is left out even where a subclass adds a public
    ``reset_parameters``: torch's own reset is private and re-draws the packed in-projection,
    whose planned init it would mix with torch's."""
    for prefix, module in model.named_modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset) and not isinstance(module, nn.MultiheadAttention):
            yield prefix, module, reset


def _normal_(p: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    """Fill ``p`` with N(0, std²); a DTensor (FSDP2) gets its slice of one global sample.

    Drawing the full tensor on every rank (same seed) and keeping the local shard makes the
    sharded init identical to the single-process one, whatever the number of ranks.
    """
    if torch.distributed.is_available() and _is_dtensor(p):
        from torch.distributed.tensor import distribute_tensor

        dtensor: Any = p
        full = torch.randn(p.shape, generator=generator).to(p.dtype).mul_(std)
        local = dtensor.to_local()
        shard = distribute_tensor(
            full.to(local.device), dtensor.device_mesh, dtensor.placements, src_data_rank=None
        )
        local.copy_(shard.to_local())
    elif generator is None:
        p.normal_(0.0, std)
    elif p.device.type == "cpu" and p.dtype == torch.float32:
        p.normal_(0.0, std, generator=generator)  # the same numbers as below, without a copy
    else:
        # draw in float32 (the same numbers whatever the dtype), scale in the tensor's dtype
        p.copy_(torch.randn(p.shape, generator=generator).to(p.dtype).mul_(std))


def _is_dtensor(p: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(p, DTensor)


def _get_module(model: nn.Module, name: str) -> nn.Module:
    modules = {canonical_name(n): m for n, m in model.named_modules()}
    try:
        return modules[name]
    except KeyError:
        raise PlanError(f"module {name!r} from the plan is not in the model") from None


def _get_param(model: nn.Module, name: str) -> nn.Parameter:
    owner, _, leaf = name.rpartition(".")
    param = getattr(_get_module(model, owner), leaf)
    if not isinstance(param, nn.Parameter):
        raise PlanError(f"{name!r} is not a parameter of the model")
    return param


def _dedup_named_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {canonical_name(n): p for n, p in model.named_parameters()}


def scaled_lrs(optimizer: torch.optim.Optimizer, lr: float) -> list[float]:
    """Per-group absolute LRs for schedulers that take them (``OneCycleLR(max_lr=...)``).

    ``OneCycleLR(opt, max_lr=3e-3)`` would overwrite every group's LR with 3e-3 and erase the
    µP scales (microsoft/mup silently suffers this); pass ``max_lr=scaled_lrs(opt, 3e-3)``.
    """
    return [lr * float(g.get("lr_scale", 1.0)) for g in optimizer.param_groups]
