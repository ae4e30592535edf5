"""Recording coordinate sizes during training: hooks that reduce to one number on the spot.

A coordinate check needs, per module and step, the typical size of one coordinate (the RMS),
never the activations themselves. Each hook therefore turns what it sees into a running sum of
squares at once; memory stays that of plain training and the numbers are read back once per
step (one device sync per step, not one per module).

Four quantities are recorded, keyed ``(module name, quantity)``:

``out``
    RMS of the module's output: the activation coordinate size.
``update``
    RMS of ΔW·x: the part of the module's output due to the last update of its *own* parameters,
    at the input it sees now (``f(x; θ_t) − f(x; θ_{t−1})``, only the module's direct parameters
    changed). µP's promise is about this term: every layer's update moves its output by Θ(1), so
    this is where a wrong learning rate or multiplier shows, at the layer that has it, before the
    effect spreads to every activation downstream. For modules linear in their parameters
    (``Linear``, convolutions, embeddings, norms) it is computed exactly as ``f(x; ΔW)``, with no
    cancellation error; for other modules as a difference of two calls. The bias of a
    ``Linear``-like module is left out of it (see ``Δbias``).
``logits``
    RMS of the attention logits ``scale · q·kᵀ`` (over the positions the mask allows) of every
    ``F.scaled_dot_product_attention`` call made inside the module. Models that call SDPA (the
    reference GPT, Hugging Face's SDPA attention) need no change: the function is wrapped for the
    duration of the check (see ``attention_probe``). A module that computes attention by hand —
    a softmax over ``q·kᵀ`` scaled by a square root, found in its class's source the way the
    plan's ``UnscaledAttentionWarning`` finds it — has its logits read at the input of its
    softmax (``torch.softmax``, ``F.softmax``, ``Tensor.softmax``, ``nn.Softmax``), over the
    entries a mask has not set to −inf (or below −10⁴).
``Δlogits``
    RMS of the change of those logits due to the module's own last update, at its current input
    (the module called again with its previous weights). This is where a 1/√d instead of 1/d
    attention scale shows from the first step: the learned part of q·k grows like d.
``Δbias``
    RMS of the change of the output of a ``Linear``-like module (linear, convolution, GPT-2's
    ``Conv1D``) due to the last update of its ``bias``: the bias is added to every position, so
    this is the RMS of Δbias itself (no extra call). It is kept apart from ``update`` because a
    bias is a vector whose update is Θ(1) under any sane parametrization: summed with the
    weight's ΔW·x it would hide a weight that learns too slowly (measured: a readout whose LR
    was divided by width had an ``update`` slope of −0.62 instead of −1 through its bias).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..build import computes_attention_by_hand
from ..roles import canonical_name

Key = tuple[str, str]
Delta = tuple[torch.Tensor, float]
"""``(tensor, factor)`` with ``θ_{t−1} − θ_t = factor · tensor``."""
QUANTITIES = ("out", "update", "Δbias", "logits", "Δlogits")
ROOT = "<model>"
"""Name under which the model's own top-level forward is recorded (SDPA called there)."""

# Modules whose output is linear in their parameters: f(x; ΔW) is exactly the update term.
_LINEAR_IN_PARAMS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._NormBase,
)


def _is_hf_conv1d(module: nn.Module) -> bool:
    # Hugging Face GPT-2's Conv1D (x @ W + b) is matched by name: transformers is optional
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _linear_in_params(module: nn.Module) -> bool:
    return isinstance(module, _LINEAR_IN_PARAMS) or _is_hf_conv1d(module)


# Modules that add their ``bias`` to every position of the output (per output feature or
# channel): the bias's part of the update has the RMS of Δbias itself.
_BROADCAST_BIAS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)


def _broadcast_bias(module: nn.Module) -> bool:
    return isinstance(module, _BROADCAST_BIAS) or _is_hf_conv1d(module)


# Containers only pass their children's outputs on: recording them would duplicate rows.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity)

_SDPA_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        for name, default in (
            ("query", inspect.Parameter.empty),
            ("key", inspect.Parameter.empty),
            ("value", inspect.Parameter.empty),
            ("attn_mask", None),
            ("dropout_p", 0.0),
            ("is_causal", False),
            ("scale", None),
            ("enable_gqa", False),
        )
    ]
)


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module "outputs": itself, or the first tensor of a tuple/list/mapping."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple):
        values: Any = output
    elif isinstance(output, Mapping):
        values = output.values()
    else:
        return None
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    return None


def default_include(name: str, module: nn.Module) -> bool:
    """Record every module except the root and pure containers (they repeat a child's output)."""
    return bool(name) and not isinstance(module, _CONTAINERS)


class Recorder:
    """Hooks on every module of ``model`` accumulating the recorded quantities for one step.

    Use ``begin(deltas)`` before a forward pass and ``end()`` after it; ``end`` returns
    ``{(module, quantity): rms}``. ``deltas`` maps ``id(param)`` to ``(tensor, factor)`` with
    ``θ_{t−1} − θ_t = factor · tensor`` (the sign does not matter for an RMS): a snapshot
    difference with factor 1, or, for plain SGD, the gradient and the group's LR, which costs
    no copy at all. ``None`` skips the update terms (step 0).

    Attention logits are recorded while ``recording()`` is open (see ``attention_probe``):
    those of SDPA calls, and the input of a softmax called inside a module that computes
    attention by hand or that ``attention`` names (the plan's attention modules).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        include: Callable[[str, nn.Module], bool] = default_include,
        updates: bool = True,
        rename: Callable[[str], str] | None = None,
        attention: Iterable[str] = (),
    ) -> None:
        self.model = model
        self.updates = updates
        self._sums: dict[Key, list[Any]] = {}
        self._stack: list[str] = []
        self._saved_args: dict[int, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
        self._deltas: Mapping[int, Delta] | None = None
        self._paused = False
        self._replay: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self._replaying: str | None = None  # the module whose Δlogits replay is running
        self._attention_owners: set[str] = set()
        self._new_logits: dict[str, list[tuple[torch.Tensor, torch.Tensor | None]]] = {}
        self._handles: list[Any] = []
        # key names: module names, or pooled names in depth mode ("blocks.3" → "blocks.*")
        self._keys: dict[str, str] = {}
        self._softmax_owners = _softmax_attention(model, attention)
        for raw_name, module in model.named_modules():
            name = canonical_name(raw_name) or ROOT
            self._keys[name] = rename(name) if rename is not None else name
            record = include(canonical_name(raw_name), module)
            owns = record and updates and any(True for _ in module.parameters(recurse=False))
            self._handles.append(
                module.register_forward_pre_hook(
                    self._pre_hook(name, owns), prepend=True, with_kwargs=True
                )
            )
            self._handles.append(
                module.register_forward_hook(
                    self._post_hook(name, record, owns), with_kwargs=True, always_call=True
                )
            )

    @property
    def attention_owners(self) -> frozenset[str]:
        """Modules seen calling attention so far (their ``Δlogits`` are recorded from the
        next step on: the module's input has to be kept before it is known to need it)."""
        return frozenset(self._attention_owners)

    def expect_attention(self, owners: Iterable[str]) -> None:
        """Record ``Δlogits`` of these modules from the first step (a new recorder on a model
        whose attention modules an earlier one found: ``attention_owners``)."""
        self._attention_owners.update(owners)

    # ------------------------------------------------------------------------------ steps
    def begin(self, deltas: Mapping[int, Delta] | None = None) -> None:
        self._sums = {}
        self._stack = []
        self._saved_args = {}
        self._new_logits = {}
        self._deltas = deltas if self.updates else None

    def end(self) -> dict[Key, float]:
        """RMS of every quantity recorded since ``begin``, read back with one sync."""
        sums, self._sums = self._sums, {}
        self._deltas = None
        self._saved_args = {}
        self._new_logits = {}
        if not sums:
            return {}
        keys = list(sums)
        totals = torch.stack([torch.as_tensor(sums[k][0], dtype=torch.float32) for k in keys])
        counts = torch.stack(
            [torch.as_tensor(sums[k][1], dtype=torch.float32, device=totals.device) for k in keys]
        )
        values = (totals.cpu() / counts.cpu().clamp_min(1)).sqrt().tolist()
        return dict(zip(keys, values, strict=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ------------------------------------------------------------------------------ hooks
    def _add(self, key: Key, sumsq: torch.Tensor, count: Any) -> None:
        entry = self._sums.get(key)
        if entry is None:
            self._sums[key] = [sumsq, count]
        else:
            entry[0] = entry[0] + sumsq
            entry[1] = entry[1] + count

    def _add_tensor(self, key: Key, x: torch.Tensor | None, factor: float = 1.0) -> None:
        if x is None or not x.is_floating_point() or x.numel() == 0:
            return
        norm = torch.linalg.vector_norm(x.detach(), dtype=torch.float32) * abs(factor)
        self._add(key, norm * norm, x.numel())

    def _pre_hook(self, name: str, owns: bool) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self._paused:
                return
            self._stack.append(name)
            if self._deltas is not None and (owns or name in self._attention_owners):
                # the inputs as the caller passed them, before other pre-hooks (e.g. the plan's
                # input multipliers) change them: calling the module again re-applies those
                self._saved_args.setdefault(id(module), []).append((args, kwargs))

        return hook

    def _post_hook(self, name: str, record: bool, owns: bool) -> Callable[..., None]:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            if self._paused:
                return
            if self._stack and self._stack[-1] == name:
                self._stack.pop()
            saved = self._saved_args.get(id(module))
            call = saved.pop() if saved else None
            out = first_tensor(output)
            if record:
                self._add_tensor((self._keys[name], "out"), out)
            if call is None:
                return
            if owns:
                self._record_update(name, module, *call, out)
            if name in self._new_logits:
                self._record_logit_update(name, module, *call)

        return hook

    @contextlib.contextmanager
    def _pause(self) -> Iterator[None]:
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def _record_update(
        self,
        name: str,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        out: torch.Tensor | None,
    ) -> None:
        assert self._deltas is not None
        params = dict(module.named_parameters(recurse=False))
        deltas = {n: self._deltas[id(p)] for n, p in params.items() if id(p) in self._deltas}
        if not deltas or out is None:
            return
        # buffers are passed as copies so that a second call cannot change running statistics
        buffers = {n: b.clone() for n, b in module.named_buffers(recurse=False)}
        factor = 1.0
        if "bias" in deltas and len(params) > 1 and _broadcast_bias(module):
            bias, bias_factor = deltas.pop("bias")
            self._add_tensor((self._keys[name], "Δbias"), bias, bias_factor)
            if not deltas:
                return
        with torch.no_grad(), self._pause():
            if _linear_in_params(module):
                # f(x; θ_old − θ_new) = −ΔW·x exactly (frozen parameters count as zero). f is
                # linear in all its parameters jointly, so a common factor (the LR of plain SGD)
                # is taken out and applied to the RMS: no pass over the weight
                main = max(deltas, key=lambda n: deltas[n][0].numel())
                factor = deltas[main][1]
                call = {
                    n: t if f == factor else t * (f / factor if factor else 0.0)
                    for n, (t, f) in deltas.items()
                }
                zeros = {n: torch.zeros_like(p) for n, p in params.items() if n not in deltas}
                change = first_tensor(
                    functional_call(module, {**call, **zeros, **buffers}, args, kwargs)
                )
            else:
                old = {n: torch.add(params[n], t, alpha=f) for n, (t, f) in deltas.items()}
                previous = first_tensor(functional_call(module, {**old, **buffers}, args, kwargs))
                change = None if previous is None else out.detach() - previous
        self._add_tensor((self._keys[name], "update"), change, factor)

    def _record_logit_update(
        self, name: str, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Δlogits: the logits' change due to this module's own last update, at its input.

        The module (an attention block) is called again with its previous weights; the logits
        of that call are compared with the ones just computed. Changes coming from upstream
        layers are left out: they are not aligned with this module's q and k, so under µP they
        shrink like 1/√d and would hide the Θ(1) part µP promises.
        """
        assert self._deltas is not None
        new = self._new_logits.pop(name)
        old_params = {
            n: torch.add(p, self._deltas[id(p)][0], alpha=self._deltas[id(p)][1])
            for n, p in module.named_parameters()
            if id(p) in self._deltas
        }
        buffers = {n: b.clone() for n, b in module.named_buffers()}
        self._replay, self._replaying = [], name
        try:
            with torch.no_grad(), self._pause():
                functional_call(module, {**old_params, **buffers}, args, kwargs)
            old = self._replay
        finally:
            self._replay, self._replaying = None, None
        for (logits, valid), (previous, _) in zip(new, old, strict=False):
            if previous.shape == logits.shape:
                self._add((self._keys[name], "Δlogits"), *_masked_sumsq(logits - previous, valid))

    # ---------------------------------------------------------------------- attention logits
    def _record_logits(self, bound: Mapping[str, Any]) -> None:
        logits, valid = attention_logits(
            bound["query"],
            bound["key"],
            attn_mask=bound.get("attn_mask"),
            is_causal=bool(bound.get("is_causal", False)),
            scale=bound.get("scale"),
        )
        self._note_logits(logits, valid, self._stack[-1] if self._stack else ROOT)

    def _on_softmax(self, x: Any) -> None:
        """A softmax's input, recorded as attention logits when a hand-written attention
        module (the innermost one running) computed it; every other softmax is left alone."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return
        if self._replay is None:
            if self._paused:
                return
            owner = next((n for n in reversed(self._stack) if n in self._softmax_owners), None)
            if owner is None:
                return
        elif self._replaying not in self._softmax_owners:
            return
        else:
            owner = self._replaying  # a replay of the owner records in call order
        logits = x.detach().float()
        self._note_logits(logits, torch.isfinite(logits) & (logits > MASKED_LOGIT), owner)

    def _note_logits(self, logits: torch.Tensor, valid: torch.Tensor | None, owner: str) -> None:
        if self._replay is not None:
            self._replay.append((logits, valid))
            return
        self._attention_owners.add(owner)
        self._add((self._keys.get(owner, owner), "logits"), *_masked_sumsq(logits, valid))
        if self._deltas is not None:
            self._new_logits.setdefault(owner, []).append((logits, valid))

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Make this recorder receive the attention logits of SDPA calls in this thread."""
        previous = getattr(_ACTIVE, "recorder", None)
        _ACTIVE.recorder = self
        try:
            yield
        finally:
            _ACTIVE.recorder = previous

    def _on_sdpa(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._replay is not None or not self._paused:
            self._record_logits(_SDPA_SIGNATURE.bind(*args, **kwargs).arguments)


def _softmax_attention(model: nn.Module, attention: Iterable[str]) -> frozenset[str]:
    """Names (as on the recorder's stack) of the innermost modules whose softmax is attention:
    those that compute attention by hand, and the plan's attention modules (``attention``; e.g.
    Hugging Face's eager attention, whose softmax sits in a helper function). A softmax in a
    container of such modules belongs to the module inside it."""
    names = {canonical_name(name) or ROOT for name in attention}
    names |= {
        canonical_name(raw) or ROOT
        for raw, module in model.named_modules()
        if computes_attention_by_hand(module)
    }
    return frozenset(
        n for n in names if not any(o != n and (n == ROOT or o.startswith(f"{n}.")) for o in names)
    )


MASKED_LOGIT = -1e4
"""Softmax inputs at or below this are taken as masked out (``-inf``, ``finfo.min``, ``-1e9``)."""

# ---------------------------------------------------------------------- the attention probe
_ACTIVE = threading.local()
_PROBE_LOCK = threading.Lock()
_PROBE_USERS = 0
# (owner, attribute) → the original, while probed: SDPA, and the softmax of hand-written attention
_ORIGINALS: dict[tuple[Any, str], Callable[..., Any]] = {}
_INHERITED: dict[tuple[Any, str], bool] = {}


def _probed_sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
    recorder = getattr(_ACTIVE, "recorder", None)
    if recorder is not None:
        recorder._on_sdpa(args, kwargs)
    return _ORIGINALS[(F, "scaled_dot_product_attention")](*args, **kwargs)


def _softmax_probe(owner: Any, attribute: str) -> Callable[..., Any]:
    def probed(x: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = getattr(_ACTIVE, "recorder", None)
        if recorder is not None:
            recorder._on_softmax(x)
        return _ORIGINALS[(owner, attribute)](x, *args, **kwargs)

    return probed


_PROBES: dict[tuple[Any, str], Callable[..., Any]] = {
    (F, "scaled_dot_product_attention"): _probed_sdpa,
    (F, "softmax"): _softmax_probe(F, "softmax"),  # also what nn.Softmax calls
    (torch, "softmax"): _softmax_probe(torch, "softmax"),
    (torch.Tensor, "softmax"): _softmax_probe(torch.Tensor, "softmax"),
}


@contextlib.contextmanager
def attention_probe() -> Iterator[None]:
    """Route attention through the recorders while the context is open.

    ``F.scaled_dot_product_attention`` and the softmax functions (for attention written by hand)
    are replaced where models look them up at call time — ``torch.nn.functional``, ``torch``,
    ``torch.Tensor`` — which reaches them without any change to their code (the reference GPT,
    Hugging Face's SDPA attention, ``nn.MultiheadAttention``, nanoGPT's manual path). Calls are
    passed on unchanged; a call is recorded only in a thread where a recorder is active
    (``Recorder.recording``), so other code keeps working. Restored on exit, even on error;
    nested and concurrent uses share one set of wrappers.
    """
    global _PROBE_USERS
    with _PROBE_LOCK:
        if _PROBE_USERS == 0:
            for (owner, attribute), probe in _PROBES.items():
                _ORIGINALS[(owner, attribute)] = getattr(owner, attribute)
                _INHERITED[(owner, attribute)] = attribute not in vars(owner)
                setattr(owner, attribute, probe)
        _PROBE_USERS += 1
    try:
        yield
    finally:
        with _PROBE_LOCK:
            _PROBE_USERS -= 1
            if _PROBE_USERS == 0:
                for (owner, attribute), original in _ORIGINALS.items():
                    if _INHERITED.pop((owner, attribute)):  # Tensor.softmax lives on its C base
                        delattr(owner, attribute)
                    else:
                        setattr(owner, attribute, original)
                _ORIGINALS.clear()


@torch.no_grad()
def attention_logits(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``scale·q·kᵀ`` in float32, and where attention may look (None: everywhere)."""
    q = query.detach().float()
    k = key.detach().float()
    if k.shape[-3] != q.shape[-3] and q.shape[-3] % k.shape[-3] == 0:  # grouped-query attention
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    logits = (q @ k.transpose(-2, -1)) * factor
    length, source = logits.shape[-2:]
    valid: torch.Tensor | None = None
    if is_causal:
        valid = torch.ones(length, source, dtype=torch.bool, device=logits.device).tril()
    elif attn_mask is not None:
        valid = attn_mask if attn_mask.dtype == torch.bool else attn_mask > -math.inf
    return logits, valid


def _masked_sumsq(x: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
    if valid is None:
        return x.square().sum(), x.numel()
    valid = valid.expand(x.shape)
    return x.square().masked_fill(~valid, 0.0).sum(), valid.sum()
