"""How the sweep writes hyperparameter values: ``2^-6`` for powers of two, else 4 digits."""

from __future__ import annotations

import math
from typing import Any


def format_value(value: Any) -> str:
    """``2^-6`` for powers of two (how µP hyperparameters are read), else 4 significant digits."""
    if isinstance(value, bool | int) or not isinstance(value, float):
        return str(value)
    if value > 0:
        exponent = math.log2(value)
        if abs(exponent - round(exponent)) < 1e-9 and abs(exponent) >= 1:
            return f"2^{round(exponent)}"
    return f"{value:.4g}"


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in params.items())
