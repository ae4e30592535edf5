"""The training entry point with 2 gloo processes: DDP and FSDP2 match one process; resume.

One spawn runs every 2-process scenario (starting processes is the slow part); the references
run in this process. A last test launches the real command line under torchrun.

Muon: torch's Muon orthogonalises its update in bfloat16, which turns the float32 rounding
difference between one all-reduced gradient and one full-batch gradient (~1e-7) into loss
differences of ~1e-4 within 5 steps (measured: up to 9e-5 for DDP, 3e-4 for FSDP2). To hold
the training loop to the 1e-5 of the other optimizers, the exact comparisons run the same
Newton–Schulz iteration in float32 (``float32_newton_schulz``); torch's own is compared too,
with a tolerance sized for bfloat16.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mutransfer.training import RunConfig, checkpoint, train
from tiny_runs import tiny_run

pytest.importorskip("transformers")
pytestmark = pytest.mark.distributed
torch.set_num_threads(1)
WORLD = 2
ROOT = Path(__file__).resolve().parents[1]


def tiny(out: Path, **kw) -> RunConfig:
    return tiny_run(out, **{"steps": 5, **kw})  # 5 steps: the DDP/FSDP2 comparison


MUON = {"optimizer": "muon", "lr": 2**-5, "adamw_lr": 2**-6, "grad_clip": 1.0}


@contextlib.contextmanager
def float32_newton_schulz() -> Iterator[None]:
    """Run torch's Muon with its quintic Newton–Schulz iteration in float32 instead of bf16."""
    muon = importlib.import_module("torch.optim._muon")
    original = muon._zeropower_via_newtonschulz

    def orthogonalise(
        grad: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
    ) -> torch.Tensor:
        a, b, c = coefficients
        wide = grad.size(0) <= grad.size(1)
        x = grad.float() if wide else grad.float().T
        x = x / x.norm().clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x if wide else x.T

    muon._zeropower_via_newtonschulz = orthogonalise
    try:
        yield
    finally:
        muon._zeropower_via_newtonschulz = original


class Stop(Exception):
    pass


def _crash_after_checkpoint(step: int, loss: float) -> None:
    if step == 4:
        raise Stop


def _worker(rank: int, port: int, tmp: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    base = Path(tmp)
    results: dict[str, list[float]] = {}
    try:
        results["ddp"] = train(
            tiny(base / "ddp", model="gpt", parallel="ddp", monitor_every=2), quiet=True
        ).losses
        results["fsdp2"] = train(
            tiny(base / "fsdp2", model="gpt2", parallel="fsdp2", grad_accum=2), quiet=True
        ).losses
        resumable = tiny(base / "llama", model="llama", parallel="fsdp2", steps=6)
        full = train(resumable.with_(out_dir=str(base / "llama_full")), quiet=True)
        results["full"] = full.losses
        with contextlib.suppress(Stop):
            train(resumable.with_(checkpoint_every=3), on_step=_crash_after_checkpoint, quiet=True)
        results["resumed"] = train(resumable, quiet=True).losses
        results["ddp_muon"] = train(
            tiny(base / "ddp_muon", model="gpt", parallel="ddp", **MUON), quiet=True
        ).losses
        with float32_newton_schulz():
            results["ddp_muon_f32"] = train(
                tiny(base / "ddp_muon_f32", model="gpt", parallel="ddp", **MUON), quiet=True
            ).losses
            muon_fsdp2 = tiny(base / "muon", model="llama", parallel="fsdp2", steps=6, **MUON)
            results["muon_full"] = train(
                muon_fsdp2.with_(out_dir=str(base / "muon_full")), quiet=True
            ).losses
            with contextlib.suppress(Stop):
                train(
                    muon_fsdp2.with_(checkpoint_every=3),
                    on_step=_crash_after_checkpoint,
                    quiet=True,
                )
            results["muon_resumed"] = train(muon_fsdp2, quiet=True).losses
        if rank == 0:
            (base / "losses.json").write_text(json.dumps(results))
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _monitor(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "monitor.jsonl").read_text().splitlines()]


def _close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    if len(a) != len(b):
        return False
    return all(abs(x - y) <= tol * max(1.0, abs(x)) for x, y in zip(a, b, strict=True))


def test_two_processes_match_one_and_fsdp2_resumes_exactly(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = json.loads((tmp_path / "losses.json").read_text())

    ddp_ref = train(tiny(tmp_path / "ref_ddp", model="gpt", monitor_every=2), quiet=True).losses
    assert _close(got["ddp"], ddp_ref), (got["ddp"], ddp_ref)
    # the layer monitor under DDP: written once (main process), the one-process run's numbers
    ddp_monitor = _monitor(tmp_path / "ddp")
    one_monitor = _monitor(tmp_path / "ref_ddp")
    assert [r["step"] for r in ddp_monitor] == [r["step"] for r in one_monitor] == [2, 4]
    for got_r, ref_r in zip(ddp_monitor, one_monitor, strict=True):
        for layer, values in ref_r["layers"].items():
            for quantity, value in values.items():
                assert got_r["layers"][layer][quantity] == pytest.approx(value, rel=1e-3)
    fsdp_ref = train(tiny(tmp_path / "ref_fsdp2", model="gpt2"), quiet=True).losses
    assert _close(got["fsdp2"], fsdp_ref), (got["fsdp2"], fsdp_ref)  # also: grad_accum=2

    # FSDP2 resumed from its step-3 checkpoint: the uninterrupted curve, bit for bit
    assert got["resumed"] == got["full"][3:]
    # and the sharded checkpoint loads into one process (resharded by torch.distributed.checkpoint)
    step3 = checkpoint.checkpoint_dir(tmp_path / "llama", 3)
    single = train(
        tiny(tmp_path / "single", model="llama", steps=6, resume=str(step3)), quiet=True
    ).losses
    assert _close(single, got["full"][3:]), (single, got["full"])

    # Muon (+ AdamW for the rest): DDP and FSDP2 (Newton–Schulz on DTensor shards) match one
    # process, and FSDP2 resumes both optimizers' states and schedules exactly
    muon_ref = train(tiny(tmp_path / "ref_muon", model="gpt", **MUON), quiet=True).losses
    assert _close(got["ddp_muon"], muon_ref, tol=1e-3), (got["ddp_muon"], muon_ref)
    with float32_newton_schulz():
        ddp_ref = train(tiny(tmp_path / "ref_muon32", model="gpt", **MUON), quiet=True).losses
        fsdp_ref = train(
            tiny(tmp_path / "ref_muon_llama", model="llama", steps=6, **MUON), quiet=True
        ).losses
    assert _close(got["ddp_muon_f32"], ddp_ref), (got["ddp_muon_f32"], ddp_ref)
    assert _close(got["muon_full"], fsdp_ref), (got["muon_full"], fsdp_ref)
    assert got["muon_resumed"] == got["muon_full"][3:]


def test_torchrun_command_line_fsdp2_bf16(tmp_path: Path) -> None:
    overrides = {
        "width": 64,
        "base_width": 32,
        "n_heads": 2,
        "depth": 2,
        "seq_len": 16,
        "batch_size": 4,
        "eval_batches": 1,
        "eval_batch_size": 2,
        "compile": "false",
        "data": '"pydoc"',
        "hf": "{num_key_value_heads=2}",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={WORLD}",
        "-m",
        "mutransfer.cli",
        "train",
        str(ROOT / "examples" / "train_llama.toml"),
        "--steps",
        "2",
        "--out",
        str(tmp_path / "run"),
    ]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "2 process(es), fsdp2" in done.stdout and "bf16" in done.stdout
    assert "step 2/2" in done.stdout
    saved = checkpoint.latest(tmp_path / "run")
    assert saved is not None and (saved / "rng_rank1.pt").is_file()
    assert checkpoint.read_state(saved)["world_size"] == WORLD
