"""The reference GPT written against the peer libraries, for side-by-side benchmarks.

Each module builds the *same* pre-LN byte-level GPT as ``mutransfer.models.GPT`` (same widths,
heads, depth, GELU MLP, learned positions, untied embeddings) the way a user of that library
would write it, so that what differs between columns is the library, not the model:

- ``mup_gpt``: microsoft/mup 1.0.0 — ``MuReadout`` readout, 1/d attention written by hand,
  ``set_base_shapes``, ``mup.init`` and ``MuAdamW``;
- ``unit_gpt``: graphcore's unit-scaling 0.3.5 (u-µP) — unit-scaled modules and ops, its
  residual τ rule, ``unit_scaling.optim.AdamW``;
- ``loop``: the training loop of ``mutransfer.training.proxy.train`` for any model and optimizer
  (same batches, same steps, same divergence rule, same validation bytes).

The peers are optional: ``available()`` says which are installed, and why not.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PEERS = {"mup": "mup", "unit-scaling": "unit_scaling"}
"""Distribution name → import name of each peer library."""


def peer_version(dist: str) -> str | None:
    """The installed version of a peer distribution, or None when it is not installed."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def available() -> dict[str, str | None]:
    """Distribution name → installed version (None: not installed) for every peer."""
    return {dist: peer_version(dist) for dist in PEERS}


INSTALL_HINT = {
    "mup": "pip install --no-deps mup==1.0.0",
    "unit-scaling": "pip install --no-deps unit-scaling==0.3.5 einops tabulate docstring-parser",
}
