"""Process groups, devices and model wrapping for one, DDP or FSDP2 training.

A run is launched either as one plain process or by ``torchrun`` (which sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). ``setup`` reads that
environment, starts the process group (NCCL on GPUs, gloo on CPU) and picks the device.

Every process draws the same *global* batch from the same seeded generator and keeps its own
slice. Since DDP and FSDP2 average gradients over processes, a step then sees exactly the
gradient of the global batch: the loss curve does not depend on the number of processes (up to
float rounding), which is what makes a 2-process test against 1 process meaningful.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..devices import resolve_device
from .config import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank, world size, device and the wrapping in use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    parallel: str
    """``none``, ``ddp`` or ``fsdp2`` (resolved from the config's ``auto``)."""
    owns_group: bool = False
    """True when ``setup`` started the process group (and ``teardown`` must end it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def setup(parallel: str = "auto", device: str = "auto") -> DistEnv:
    """Start (or join) the process group described by the environment and pick a device."""
    world = dist.get_world_size() if dist.is_initialized() else _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device)  # a device this machine lacks is said in one line, not by CUDA
    if dev.type == "cuda" and dev.index is None:  # "auto" or "cuda": this process's own GPU
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world == 1:
        if parallel in ("ddp", "fsdp2"):
            print(
                f"mutransfer train: parallel={parallel!r} needs several processes (launch with "
                "torchrun --nproc-per-node N); training in this one process."
            )
        return DistEnv(0, 1, local_rank, dev, "none")
    if parallel == "none":
        raise ConfigError(
            f"parallel='none' but {world} processes were launched; use parallel = 'ddp' or "
            "'fsdp2' (or 'auto'), or launch one process"
        )
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
        owns = True
    resolved = "fsdp2" if parallel == "auto" else parallel
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, resolved, owns)


def teardown(env: DistEnv) -> None:
    """End the process group if ``setup`` started it; all ranks meet first.

    Without the barrier a fast rank may tear gloo down while another still talks to it, and the
    other aborts.
    """
    if env.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def block_lists(model: nn.Module) -> list[nn.ModuleList]:
    """The lists of repeated blocks (transformer layers): FSDP2 shards each block separately.

    Sharding per block lets FSDP2 gather one block's weights at a time; the outermost
    ``ModuleList`` of each branch of the module tree is taken (``blocks``, ``transformer.h``,
    ``model.layers``).
    """
    found: list[nn.ModuleList] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList) and len(child) > 0:
                found.append(child)
            else:
                visit(child)

    visit(model)
    return found


def wrap(model: nn.Module, env: DistEnv) -> nn.Module:
    """Wrap for the resolved parallelism: DDP, FSDP2 (per block, then the root) or nothing.

    The returned module keeps parameter names up to wrapper prefixes, which the plan ignores.
    """
    if env.parallel == "ddp":
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if env.parallel == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(env.device.type, (env.world_size,))
        for blocks in block_lists(model):
            for block in blocks:
                fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    return model


def local_slice(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """This process's share of a global batch: its contiguous chunk of the rows."""
    if env.world_size == 1:
        return t
    if t.shape[0] % env.world_size:
        raise ConfigError(
            f"a batch of {t.shape[0]} cannot be split evenly over {env.world_size} processes; "
            "make batch_size (and eval_batch_size) a multiple of the number of processes times "
            "grad_accum"
        )
    return t.chunk(env.world_size)[env.rank]


def mean_across(value: torch.Tensor, env: DistEnv) -> float:
    """The mean of a scalar over all processes (every rank gets it)."""
    value = value.detach().float().reshape(1).clone()
    if env.world_size > 1:
        dist.all_reduce(value)
        value /= env.world_size
    return float(value.item())


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps (all but the last one).

    Pure communication saving: results are the same either way.
    """
    if enabled:
        yield
        return
    if isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
        return
    setter: Any = getattr(model, "set_requires_gradient_sync", None)  # FSDP2's module API
    if callable(setter):
        setter(False)
        try:
            yield
        finally:
            setter(True)
        return
    yield


def barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        dist.barrier()
