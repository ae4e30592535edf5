"""The coordinate check's error for what it was asked and cannot do (one clear line)."""

from __future__ import annotations

from ..errors import UserError


class CoordCheckError(UserError, ValueError):
    """The coordinate check was asked for something it cannot do; the message says what."""
