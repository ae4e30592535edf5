"""The axes a demo can vary, and how each one is named, stored and turned into a run's config.

Width and depth are the axes µP and its depth rules are built for: the smallest size is the
base of the parametrization. Batch size, sequence length, training length and LR schedule are
the other axes Tensor Programs V tested transfer along (§ 6.1, Fig. 19); the demo varies them at
one fixed model size, under µP with SP beside it, to measure whether the best LR stays put.

One table (``AXIS_INFO``) holds every word the figure, the report and ``summary.json`` use for
an axis, so adding an axis means adding one row, not editing every sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Axis = Literal["width", "depth", "batch", "seq-len", "steps", "schedule"]
AXES: tuple[Axis, ...] = ("width", "depth", "batch", "seq-len", "steps", "schedule")

Size = int | str
"""One setting of an axis: a width, a depth, a batch size... or a schedule's name."""


@dataclass(frozen=True)
class AxisInfo:
    """What one axis is called and which ``TrainConfig`` field(s) its settings set."""

    name: Axis
    fields: tuple[str, ...]
    """The ``TrainConfig`` fields a setting sets (a schedule also sets ``warmup_steps``)."""
    label: str
    """Prefix of one setting in legends and tables: ``width`` 64, ``batch`` 16..."""
    plural: str
    """``widths``, ``batch sizes``...: "the optimum moves 1 octave across the {plural}"."""
    key: str
    """The JSON key of the settings in ``summary.json`` (``widths``, ``batch_sizes``...)."""
    smallest: str
    """The proxy setting, in words: ``narrowest`` width, ``smallest`` batch, ``first`` schedule."""
    largest: str
    noun: str = ""
    """One setting in words, for "the optimum of a {noun}" (default: ``label``)."""
    numeric: bool = True
    """Settings are positive, increasing integers (every axis but the schedule)."""

    @property
    def singular(self) -> str:
        """``width``, ``batch size``, ``training length``..."""
        return self.noun or self.label

    @property
    def field(self) -> str:
        """The main field: ``width``, ``batch_size``... (``schedule`` for schedules)."""
        return self.fields[0]


AXIS_INFO: dict[str, AxisInfo] = {
    info.name: info
    for info in (
        AxisInfo("width", ("width",), "width", "widths", "widths", "narrowest", "widest"),
        AxisInfo("depth", ("depth",), "depth", "depths", "depths", "shallowest", "deepest"),
        AxisInfo(
            "batch",
            ("batch_size",),
            "batch",
            "batch sizes",
            "batch_sizes",
            "smallest",
            "largest",
            noun="batch size",
        ),
        AxisInfo(
            "seq-len",
            ("seq_len",),
            "seq-len",
            "sequence lengths",
            "seq_lens",
            "shortest",
            "longest",
            noun="sequence length",
        ),
        AxisInfo(
            "steps",
            ("steps",),
            "steps",
            "training lengths",
            "step_counts",
            "shortest",
            "longest",
            noun="training length",
        ),
        AxisInfo(
            "schedule",
            ("schedule", "warmup_steps"),
            "schedule",
            "schedules",
            "schedules",
            "first",
            "last",
            numeric=False,
        ),
    )
}

SCHEDULE_SETTINGS: dict[str, tuple[str, float]] = {
    "constant": ("constant", 0.0),
    "cosine": ("cosine", 0.0),
    "warmup-linear": ("linear", 0.1),
    "wsd": ("wsd", 0.1),
}
"""The schedules ``--vary schedule`` compares: name → (``TrainConfig.schedule``, warmup as a
fraction of the steps). ``warmup-linear`` is linear warmup then linear decay to 10 %; ``wsd``
is warmup-stable-decay (the last 20 % of the steps decay to 10 %, ``training.options``)."""


def axis_info(axis: str) -> AxisInfo:
    """The row of ``axis``; a ``KeyError`` names the axes there are."""
    try:
        return AXIS_INFO[axis]
    except KeyError:
        raise KeyError(f"unknown axis {axis!r}; the axes are {', '.join(AXES)}") from None


def setting_label(axis: str, size: Size) -> str:
    """``width 64``, ``batch 16``, ``steps 100``; a schedule is its own name (``cosine``)."""
    info = AXIS_INFO.get(axis)
    if info is None or not info.numeric:
        return str(size)
    return f"{info.label} {size}"
