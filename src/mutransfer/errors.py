"""The library's error types, shared by every layer (the command line catches them).

``UserError``: something the user asked for cannot be done, and the message says what and how
to fix it; the command line prints it as one line (exit status 2) instead of a traceback. The
library's own input errors derive from it (``SweepError``, the coordinate check's
``CoordCheckError``...). ``Diverged``: a training run's loss became NaN/infinite or blew up —
a *result* (this point diverges), raised by the trainers and by users' sweep objectives alike.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for: printed as one clear line, exit status 2."""


class Diverged(RuntimeError):
    """A run's loss became NaN or infinite, or grew far above where it started.

    In a sweep a diverged trial is a result: kept as ``FAIL`` with its reason, never retried
    (the same point would diverge again). Raise it from an objective to record a divergence.
    """
