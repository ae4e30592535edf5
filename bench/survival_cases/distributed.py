"""DDP and FSDP2 cells: 2 gloo processes on CPU, each library, compared with one process.

Each rank gets half of the batch (the mean losses of the halves average to the full batch's, and
both wrappers average gradients), builds the library's model, wraps it, builds the library's
optimizer from the wrapper and takes one step. Rank 0 writes the loss and the gathered updates;
the parent compares them with the single-process reference step.
"""

from __future__ import annotations

import datetime
import os
import pickle
import tempfile
import traceback
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

WORLD = 2
WRAPS = ("DDP", "FSDP2")


def wrap(model: nn.Module, how: str) -> nn.Module:
    if how == "DDP":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    for block in model.blocks:  # type: ignore[union-attr]
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _mean_across_ranks(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t / dist.get_world_size()


def _worker(rank: int, libraries: list[str], init_file: str, out: str) -> None:
    from survival_cases.check import failure, step
    from survival_cases.libraries import LIBRARIES, batch

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),  # a hung collective fails instead of blocking
    )
    results: dict[str, Any] = {}
    try:
        x, y = batch()
        half = (x.chunk(WORLD)[rank], y.chunk(WORLD)[rank])
        for name in libraries:
            for how in WRAPS:
                lib = LIBRARIES[name]()
                try:
                    model = wrap(lib.build(), how)
                    optimizer = lib.optimizer(model)
                    results[f"{name}/{how}"] = step(
                        model, optimizer, lib.loss, half, _mean_across_ranks
                    )
                except Exception as err:  # the outcome is the measurement
                    results[f"{name}/{how}"] = failure(err)
                    results[f"{name}/{how}"]["traceback"] = traceback.format_exc(limit=4)
                dist.barrier()
        if rank == 0:
            with open(out, "wb") as fh:
                pickle.dump(results, fh)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run(libraries: list[str]) -> dict[str, Any]:
    """``{"<library>/<DDP|FSDP2>": Step or a failure dict}`` from one 2-process run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.pkl")
        mp.spawn(_worker, args=(libraries, os.path.join(tmp, "init"), out), nprocs=WORLD, join=True)
        with open(out, "rb") as fh:
            results: dict[str, Any] = pickle.load(fh)
    return results
