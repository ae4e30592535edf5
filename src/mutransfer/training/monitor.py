"""Seeing µP during the big run: each layer's activation and update size, sampled as it trains.

The coordinate check says before training whether every layer's coordinates stay Θ(1) as the
model grows; this module keeps watching while the target trains, so that a layer that blows up
shows on day one of a week-long run, not in the post-mortem. Every ``monitor_every`` steps:

1. before the optimizer step, the model's parameters are copied (one copy, freed right after);
2. after the step, one forward pass on a small fixed validation batch, in ``eval`` mode and
   without gradients, under the coordinate check's own ``Recorder``, with ``θ_old − θ_new`` as
   the update of every parameter. It records, per module, the same quantities the coordinate
   check measures (``coord/record.py``): ``out`` (activation RMS), ``update`` (RMS of ΔW·x, the
   module's output change due to its own last update), ``Δbias``, attention ``logits`` and
   ``Δlogits``;
3. one line of ``monitor.jsonl`` in the run folder, and the same numbers to TensorBoard/W&B;
4. a warning naming the layer when a value is not finite, or is more than ``tolerance`` times
   the reference: the proxy's own ``monitor.jsonl`` at the nearest step (µP's promise: at the
   same hyperparameters every coordinate size is the proxy's), or, without a proxy, the run's own
   first sample. Against a proxy a value ``tolerance`` times *smaller* is reported too (a layer
   that stopped learning). Each (layer, quantity) warns once per session.

A deeper target than its proxy has blocks the proxy does not: ``blocks.7.attn`` is compared with
the proxy's ``blocks.*.attn`` (its blocks pooled: the largest value for growth, the smallest for
shrinkage).

Costs: one copy of the parameters for the length of one step, and one probe forward pass on a
few sequences (with the recorder's extra calls) every ``monitor_every`` steps; measured in
``bench/monitor_overhead.py``. Under FSDP2 the parameters are sharded across processes and the
probe would need every process; it is refused there (see ``check_supported``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..coord.record import Recorder, attention_probe
from .config import ConfigError

MONITOR = "monitor.jsonl"
SUPERSEDED = "monitor.superseded.jsonl"
QUANTITY_NAMES = {
    "out": "activation RMS",
    "update": "update RMS (ΔW·x)",
    "Δbias": "bias update RMS",
    "logits": "attention logit RMS",
    "Δlogits": "attention logit update RMS",
}

Sample = dict[str, dict[str, float]]
"""``{layer: {quantity: rms}}`` of one sampled step."""


class LayerDriftWarning(UserWarning):
    """A layer's coordinate size left the range the reference (the proxy) showed."""


def check_supported(parallel: str, monitor_every: int) -> None:
    """Refuse monitoring under FSDP2: said at the start, not discovered a week in."""
    if monitor_every and parallel == "fsdp2":
        raise ConfigError(
            "monitor_every is not supported under FSDP2 yet: the probe would need the sharded "
            "parameters of every process. Set monitor_every = 0, or monitor a DDP or "
            "single-process run of the same config (the coordinate sizes do not depend on "
            "how the model is sharded)"
        )


def pooled(name: str) -> str:
    """``blocks.7.attn`` → ``blocks.*.attn``: a layer's name with its block numbers pooled."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)", "*", name)


UPDATES = frozenset({"update", "Δbias", "Δlogits"})
"""Quantities proportional to the step's learning rate: compared per unit of LR, so that a
warmup, a decay or a proxy trained on another schedule does not look like drift."""


@dataclass(frozen=True)
class Reading:
    """One sampled step: its base learning rate and every layer's sizes."""

    step: int
    lr: float
    layers: Sample

    def to_record(self) -> dict[str, Any]:
        return {"step": self.step, "lr": self.lr, "layers": self.layers}


@dataclass
class Reference:
    """The coordinate sizes a run is compared with, by step (the proxy's, or its own first)."""

    readings: dict[int, Reading]

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Reference:
        """A run folder's (or a file's) ``monitor.jsonl``; a clear error when there is none."""
        p = Path(path)
        file = p / MONITOR if p.is_dir() else p
        if not file.is_file():
            raise ConfigError(
                f"monitor_reference: {file} does not exist; point it at the folder of a run "
                f"trained with monitor_every > 0 (e.g. the proxy: mutransfer train proxy.toml "
                f"--set monitor_every=10), or leave it empty to compare with this run's own "
                f"first sample"
            )
        readings: dict[int, Reading] = {}
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                step = int(record["step"])
                readings[step] = Reading(step, float(record.get("lr", 0.0)), record["layers"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a run that was killed
        if not readings:
            raise ConfigError(f"monitor_reference: {file} holds no sample")
        return cls(readings)

    def at(self, step: int) -> Reading:
        """The reading at the nearest step."""
        nearest = min(self.readings, key=lambda s: (abs(s - step), s))
        return self.readings[nearest]

    def first(self) -> Reading:
        return self.readings[min(self.readings)]


def reference_value(sample: Sample, layer: str, quantity: str, largest: bool) -> float | None:
    """The reference's value for a layer: its own, or its pooled blocks' largest/smallest."""
    own = sample.get(layer, {}).get(quantity)
    if own is not None:
        return own
    key = pooled(layer)
    values = [v[quantity] for name, v in sample.items() if pooled(name) == key and quantity in v]
    if not values:
        return None
    return max(values) if largest else min(values)


@dataclass
class Alert:
    """One layer out of range at one sampled step (``ratio``: value / reference, per unit of
    LR for update quantities; ``nan`` for a value that is not finite)."""

    layer: str
    quantity: str
    value: float
    ratio: float

    def describe(self) -> str:
        what = QUANTITY_NAMES.get(self.quantity, self.quantity)
        if not math.isfinite(self.value):
            return f"{self.layer} {what} = {self.value}"
        up = self.ratio >= 1
        factor = self.ratio if up else 1 / self.ratio
        return f"{self.layer} {what} {self.value:.3g} ({factor:.1f}× {'up' if up else 'down'})"

    @property
    def severity(self) -> float:
        if not math.isfinite(self.value):
            return math.inf
        return max(self.ratio, 1 / self.ratio) if self.ratio > 0 else math.inf


@dataclass
class LayerMonitor:
    """Samples every layer's coordinate sizes every ``every`` steps (see the module docstring).

    ``model`` is the unwrapped module (not a DDP wrapper: the probe is one process's business);
    ``probe`` the fixed input of the probe forward pass. Call ``before_step(step)`` before the
    optimizer step of step ``step`` (0-based) and ``after_step(step, lr)`` after it, with the
    base learning rate that step used.
    """

    model: nn.Module
    probe: torch.Tensor
    every: int
    out_dir: str
    tolerance: float = 8.0
    reference: Reference | None = None
    warn: bool = True
    attention: tuple[str, ...] = ()
    """The plan's attention modules: a softmax inside one is read as its attention logits
    (eager attention computes them by hand, out of any SDPA call)."""
    _snapshot: dict[int, torch.Tensor] | None = field(default=None, repr=False)
    _own_first: Reading | None = field(default=None, repr=False)
    _attention: frozenset[str] | None = field(default=None, repr=False)
    _warned: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def due(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is sampled: steps every, 2·every, ... (1-based)."""
        return self.every > 0 and (step + 1) % self.every == 0

    def before_step(self, step: int) -> None:
        if not self.due(step):
            return
        self._snapshot = {
            id(p): p.detach().clone() for p in self.model.parameters() if p.requires_grad
        }

    def continue_from(self, out_dir: str | os.PathLike[str]) -> None:
        """After a resume: this run's first sample (kept in its ``monitor.jsonl``) stays the
        reference, not the resumed session's first."""
        file = Path(out_dir) / MONITOR
        if self.reference is None and file.is_file():
            with contextlib.suppress(ConfigError):
                self._own_first = Reference.read(file).first()

    def after_step(self, step: int, lr: float) -> tuple[Reading, list[Alert]] | None:
        """Probe, log and check step ``step`` just taken; ``None`` when it is not sampled."""
        if self._snapshot is None:
            return None
        snapshot, self._snapshot = self._snapshot, None
        with torch.no_grad():
            deltas = {
                id(p): (snapshot[id(p)].sub_(p.detach()), 1.0)
                for p in self.model.parameters()
                if id(p) in snapshot
            }
        reading = Reading(step + 1, float(lr), self.probe_sizes(deltas))
        del snapshot, deltas
        alerts = self.check(reading)
        self._write(reading, alerts)
        return reading, alerts

    def probe_sizes(self, deltas: Mapping[int, tuple[torch.Tensor, float]] | None) -> Sample:
        """One recorded forward pass on the probe batch: ``{layer: {quantity: rms}}``."""
        if self._attention is None and deltas is not None:
            self.probe_sizes(None)  # once: which modules attend (their Δlogits need their input)
        recorder = Recorder(self.model, attention=self.attention)
        recorder.expect_attention(self._attention or ())
        try:
            with _eval_mode(self.model), torch.no_grad(), attention_probe(), recorder.recording():
                recorder.begin(deltas)
                self.model(self.probe)
                values = recorder.end()
            self._attention = recorder.attention_owners
        finally:
            recorder.remove()
        sample: Sample = {}
        for (layer, quantity), value in values.items():
            sample.setdefault(layer, {})[quantity] = value
        return sample

    def check(self, reading: Reading) -> list[Alert]:
        """The values out of range. New ones (a layer and quantity not reported before) are
        said in one warning, worst first, naming each layer."""
        if self.reference is not None:
            ref, source, both_ways = self.reference.at(reading.step), "the proxy", True
        else:
            if self._own_first is None:
                self._own_first = reading
            ref, source, both_ways = self._own_first, "this run's first sample", False
        alerts = [
            alert
            for layer, values in reading.layers.items()
            for quantity, value in values.items()
            if (alert := self._judge(reading, ref, layer, quantity, value, both_ways))
        ]
        fresh = [a for a in alerts if (a.layer, a.quantity) not in self._warned]
        if self.warn and fresh:
            self._warned.update((a.layer, a.quantity) for a in fresh)
            fresh.sort(key=lambda a: -a.severity)
            shown = "; ".join(a.describe() for a in fresh[:6])
            more = f"; and {len(fresh) - 6} more" if len(fresh) > 6 else ""
            worst = fresh[0]
            hint = (
                "the run is diverging there: lower its learning rate or multiplier"
                if worst.severity == math.inf
                else "a learning rate, multiplier or init wrong for this width?"
                if worst.ratio >= 1
                else "a layer that stopped learning: a learning rate scaled down too much?"
            )
            warnings.warn(
                f"mutransfer train: at step {reading.step}, {len(fresh)} layer size(s) left "
                f"{source}'s (step {ref.step}) by more than {self.tolerance:g}× (update sizes "
                f"per unit of LR), worst first: {shown}{more}. {hint} "
                f"(every sample: {Path(self.out_dir) / MONITOR})",
                LayerDriftWarning,
                stacklevel=2,
            )
        return alerts

    def _judge(
        self,
        reading: Reading,
        ref: Reading,
        layer: str,
        quantity: str,
        value: float,
        both_ways: bool,
    ) -> Alert | None:
        if not math.isfinite(value):
            return Alert(layer, quantity, value, math.nan)
        scale = 1.0
        if quantity in UPDATES:
            if reading.lr <= 0 or ref.lr <= 0:
                return None  # no step was taken (or none recorded): nothing to compare
            scale = reading.lr / ref.lr
        high = reference_value(ref.layers, layer, quantity, largest=True)
        if high is not None and high > 0 and value > self.tolerance * high * scale:
            return Alert(layer, quantity, value, value / (high * scale))
        low = reference_value(ref.layers, layer, quantity, largest=False) if both_ways else None
        if low is not None and low > 0 and value * self.tolerance < low * scale:
            return Alert(layer, quantity, value, value / (low * scale))
        return None

    def _write(self, reading: Reading, alerts: list[Alert]) -> None:
        record = reading.to_record()
        if alerts:
            record["alerts"] = [a.describe() for a in alerts]
        path = Path(self.out_dir) / MONITOR
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, allow_nan=True) + "\n")


def scalars(sample: Sample) -> dict[str, float]:
    """A sample as flat scalar names for TensorBoard/W&B: ``monitor/update/blocks.0.attn``."""
    return {
        f"monitor/{quantity}/{layer}": value
        for layer, values in sample.items()
        for quantity, value in values.items()
    }


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off and batch statistics untouched for the probe; the mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
