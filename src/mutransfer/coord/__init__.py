"""The coordinate check: does a model's parametrization keep every coordinate's size with width?

``coord_check(factory, widths)`` trains the model at several widths for a few steps and returns
a ``CoordReport`` with a verdict per module. The package, one job per module:

- ``check``: the entry point and its arguments;
- ``runner``: building each size once, training it per seed, in worker threads;
- ``batches``: the small fixed batch, and how a model's loss is obtained from it;
- ``record``: the RMS of every module's output, own update and attention logits;
- ``verdict``: slopes against width and the verdict per series (``status``: their names);
- ``plot``: the figure; ``cli``: ``mutransfer coord-check``.
"""

from .batches import batch_loss, default_batch, model_loss, targets_argument
from .check import coord_check
from .errors import CoordCheckError
from .runner import data_generator, reinit
from .verdict import CoordReport, CoordRow, Thresholds

__all__ = [
    "CoordCheckError",
    "CoordReport",
    "CoordRow",
    "Thresholds",
    "batch_loss",
    "coord_check",
    "data_generator",
    "default_batch",
    "model_loss",
    "reinit",
    "targets_argument",
]
