"""``mutransfer demo``: µTransfer on real text, SP and µP side by side.

The demo sweeps the learning rate (a log2 grid) at several widths of the reference GPT, once
under the standard parametrization and once under µP, on Shakespeare (or the user's text). It
then plays the µTransfer game: take the LR that was best on the narrowest model (the cheap proxy)
and use it for the widest; the loss it reaches, next to the best the widest model reaches when
swept directly, is the *regret* of transferring. Under SP the optimum drifts with width and the
regret is large; under µP it stays put and the regret is small. This is Tensor Programs V's
Figure 1, measured by the library's own code on data that ships with it.

``--vary depth`` plays the same game along depth: a fixed width, the number of transformer
blocks from 2 to 16, µP (width rules only: every residual branch adds its full update) against
CompleteP (branches × base_depth/depth, Dey et al. 2025) and optionally Depth-µP (× its square
root). The proxy is the shallowest model and the target the deepest.

The package: ``settings`` (the grids and presets), ``run`` (the runs, through
``mutransfer.training.runs``, saved as they finish so Ctrl-C or ``kill -9`` loses only the runs
in flight; the µTransfer game), ``analysis`` (drift, regret, claims), ``report`` (figure and
tables) and ``cli``.
"""

from .run import SUMMARY_FORMAT, run_demo
from .settings import (
    DEFAULT,
    DEPTH_DEFAULT,
    DEPTH_QUICK,
    QUICK,
    DemoError,
    DemoSettings,
    settings_for,
)

__all__ = [
    "DEFAULT",
    "DEPTH_DEFAULT",
    "DEPTH_QUICK",
    "QUICK",
    "SUMMARY_FORMAT",
    "DemoError",
    "DemoSettings",
    "run_demo",
    "settings_for",
]
