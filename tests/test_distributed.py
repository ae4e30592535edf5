"""DDP and FSDP2 (2 gloo processes on CPU) give the same losses as one process."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mutransfer as mt
from conftest import make_gpt, on_meta

STEPS = 5
WORLD = 2
pytestmark = pytest.mark.distributed


def batches():
    g = torch.Generator().manual_seed(123)
    data = torch.randint(0, 256, (STEPS, 4, 17), generator=g)
    return [(d[:, :-1], d[:, 1:]) for d in data]


def build(init: bool):
    model = make_gpt(64, tie_embeddings=True)
    plan = mt.parametrize(
        model,
        on_meta(make_gpt, 32, tie_embeddings=True),
        "mup",
        "adamw",
        seed=0,
        init=init,
        output_multiplier=2.0,
    )
    return model, plan


def train(model, plan, shard) -> list[float]:
    opt = torch.optim.AdamW(plan.param_groups(1e-2, model=model, weight_decay=0.1, eps=1e-6))
    losses = []
    for x, y in batches():
        x, y = shard(x), shard(y)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        reported = loss.detach().clone()
        if dist.is_initialized():
            dist.all_reduce(reported)
            reported /= dist.get_world_size()
        losses.append(reported.item())
    return losses


def _worker(rank: int, wrap: str, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        if wrap == "ddp":
            model, plan = build(init=True)
            model = torch.nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            model, plan = build(init=False)
            mesh = init_device_mesh("cpu", (WORLD,))
            for block in model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            plan.init_(model, seed=0)  # DTensor init: each rank fills its shard of one sample

        def shard(t: torch.Tensor) -> torch.Tensor:
            return t.chunk(WORLD)[rank]

        losses = train(model, plan, shard)
        if rank == 0:
            with open(out, "w") as fh:
                json.dump(losses, fh)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("wrap", ["ddp", "fsdp2"])
def test_two_process_losses_match_single_process(wrap: str) -> None:
    torch.manual_seed(0)
    model, plan = build(init=True)
    reference = train(model, plan, shard=lambda t: t)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "losses.json")
        mp.spawn(_worker, args=(wrap, os.path.join(tmp, "init"), out), nprocs=WORLD, join=True)
        with open(out) as fh:
            distributed = json.load(fh)
    assert len(distributed) == STEPS
    for a, b in zip(reference, distributed, strict=True):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (reference, distributed)
    assert reference[-1] < reference[0]
