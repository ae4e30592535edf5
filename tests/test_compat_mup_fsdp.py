"""mutransfer.compat.mup under FSDP2 (2 gloo processes on CPU): MuAdam finds the sharded
parameters (mup cannot: ``fully_shard`` replaces every parameter and drops ``p.infshape``) and
training gives the same losses as one process."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mutransfer.compat import mup as ours
from test_compat_mup import LM, batch, build

WORLD = 2
STEPS = 4
pytestmark = pytest.mark.distributed


def train(model, opt, shard) -> list[float]:
    x, y = batch("lm", 0)
    x, y = shard(x), shard(y)
    losses = []
    for _ in range(STEPS):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        reported = loss.detach().clone()
        if dist.is_initialized():
            dist.all_reduce(reported)
            reported /= dist.get_world_size()
        losses.append(reported.item())
    return losses


def lrs_by_name(model, opt) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}


def _worker(rank: int, init_file: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        import mup as real

        mesh = init_device_mesh("cpu", (WORLD,))
        theirs = build(real, LM)
        for layer in theirs.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(theirs, mesh=mesh)
        try:
            real.MuAdam(theirs.parameters(), lr=1e-2)
            mup_failed = False
        except AssertionError:
            mup_failed = True

        model = build(ours, LM)  # same seed on every rank: the same initial weights
        for layer in model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = ours.MuAdam(model.parameters(), lr=1e-2)
        losses = train(model, opt, lambda t: t.chunk(WORLD)[rank])
        if rank == 0:
            with open(out, "w") as fh:
                json.dump({"losses": losses, "lrs": lrs_by_name(model, opt), "mup": mup_failed}, fh)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


def test_fsdp2_matches_one_process() -> None:
    model = build(ours, LM)
    opt = ours.MuAdam(model.parameters(), lr=1e-2)
    reference = train(model, opt, shard=lambda t: t)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), out), nprocs=WORLD, join=True)
        with open(out) as fh:
            result = json.load(fh)
    assert result["mup"], "mup's MuAdam was expected to fail on FSDP2-sharded parameters"
    assert result["lrs"] == lrs_by_name(model, opt)
    assert result["losses"] == pytest.approx(reference, rel=1e-5, abs=1e-5)
    assert reference[-1] < reference[0]
