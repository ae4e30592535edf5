"""Where something trains: a device name checked once, before any work starts.

Every entry point that takes a ``device`` — the proxy trainer (``training.proxy.train``), the
stacked trainer, the run store, the demo, the sweep's workers, the coordinate check and the big
run — reads it here: ``"cpu"``, ``"auto"`` (the local GPU when torch sees one, else the CPU) or
any torch device name (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``). A device this machine
does not have is refused with what to use instead, not by a CUDA traceback from inside the
first step.

For proxy runs the device is where a run is computed, not part of what it is: the same config
trained on a GPU and on the CPU differs by float rounding only, so the run store keys neither
by device and one machine's finished runs are found from the other.
"""

from __future__ import annotations

import torch

from .errors import UserError

DEVICE_HELP = "'cpu', 'auto' (the GPU if torch sees one) or a torch device name such as 'cuda'"


class DeviceError(UserError, ValueError):
    """A device that is not a device, or one this machine does not have."""


def resolve_device(name: str | torch.device | None = "cpu") -> torch.device:
    """``name`` as a torch device this process can compute on (``None``: the CPU)."""
    if name is None:
        return torch.device("cpu")
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name.strip() if isinstance(name, str) else name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device {name!r} is not a device: {exc}; use {DEVICE_HELP}") from None
    if device.type == "cpu":
        return device
    if device.type == "meta":
        raise DeviceError(
            f"device {name!r} holds shapes but no numbers: nothing can be trained there; "
            f"use {DEVICE_HELP}"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no GPU visible"
        raise DeviceError(
            f"device {name!r}: CUDA is not available here ({build}); use device 'cpu', or "
            "'auto' to take the GPU only where there is one"
        )
    if not _available(device.type):
        raise DeviceError(f"device {name!r}: {device.type} is not available here; use 'cpu'")
    count = _count(device.type)
    if device.index is not None and count is not None and device.index >= count:
        raise DeviceError(
            f"device {name!r}: this machine has {count} {device.type} device(s) "
            f"({device.type}:0 … {device.type}:{count - 1})"
        )
    return device


def _available(kind: str) -> bool:
    """Whether torch can use devices of this kind here (cuda, mps, xpu...)."""
    if kind == "mps":
        return bool(torch.backends.mps.is_available())
    is_available = getattr(getattr(torch, kind, None), "is_available", None)
    return bool(is_available()) if callable(is_available) else False


def _count(kind: str) -> int | None:
    device_count = getattr(getattr(torch, kind, None), "device_count", None)
    return int(device_count()) if callable(device_count) else None
