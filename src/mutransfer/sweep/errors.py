"""The sweep's exceptions: bad input (printed as one clear line) and a diverged trial.

``SweepError`` derives from the library's ``UserError`` so that a bad config or a missing
study reaches the user as ``mutransfer sweep: error: <what is wrong and how to fix it>`` rather
than as a traceback, and from ``ValueError`` so that Python callers can catch it naturally.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import Diverged, UserError


class SweepError(UserError, ValueError):
    """Something the user asked of a sweep cannot be done; the message says how to fix it."""


class ConfigError(SweepError):
    """A sweep config (TOML file or Python arguments) is malformed; the message names the field."""


__all__ = ["ConfigError", "Diverged", "SweepError", "make_output_dir"]  # Diverged: one for all


def make_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create an output folder (``--out``), or say in one line why it cannot be."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(
            f"cannot create the output folder {out}: {exc.strerror}; pass another --out"
        ) from None
    if not os.access(out, os.W_OK):
        raise SweepError(f"the output folder {out} is not writable; pass another --out")
    return out
