"""Which device the proxy runs train on: a name checked once, before any run starts.

The proxy trainer (``proxy.train``), the stacked trainer, the run store, the demo and the sweep
workers take a ``device``: ``"cpu"`` (the default: results as they have always been, and what the
2-core CI machine has), ``"auto"`` (the local GPU when torch sees one, else the CPU) or any torch
device name (``"cuda"``, ``"cuda:1"``, ``"mps"``). A device this machine does not have is refused
here with what to use instead, not by a CUDA traceback from inside the first run.

The device is where a run is computed, not part of what it is: a run trained on a GPU and the
same config trained on the CPU differ by float rounding only, so the run store keys neither by
device and one machine's finished runs are found from the other.
"""

from __future__ import annotations

import torch

from ..errors import UserError

DEVICE_HELP = "'cpu' (the default), 'auto' (the GPU if torch sees one) or a torch device name"


class DeviceError(UserError, ValueError):
    """A device that is not a device, or one this machine does not have."""


def proxy_device(name: str | torch.device | None = "cpu") -> torch.device:
    """``name`` as a torch device this process can train on (``None``: the CPU)."""
    if name is None:
        return torch.device("cpu")
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name.strip() if isinstance(name, str) else name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device {name!r} is not a device: {exc}; use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no GPU visible"
            raise DeviceError(
                f"device {name!r}: CUDA is not available here ({build}); use device 'cpu', or "
                "'auto' to take the GPU only where there is one"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"device {name!r}: this machine has {count} CUDA device(s) (cuda:0 … "
                f"cuda:{count - 1})"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name!r}: MPS is not available here; use 'cpu' or 'auto'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {name!r}: proxy runs train on {DEVICE_HELP}")
    return device
