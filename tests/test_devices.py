"""Where things train (``mutransfer.devices``): the name is checked once, up front, with a
clear error for a device this machine lacks, and it reaches every trainer — ``proxy.train``,
``train_stacked``, the run store's workers, the demo, the sweep's workers, the coordinate check
and the big run's setup.

CI has no GPU: there, "auto" must mean the CPU and "cuda" must be refused before any run starts.
On a machine with a GPU the refusals are skipped (they cannot happen) and "auto" is the GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mutransfer.cli import main
from mutransfer.coord import coord_check
from mutransfer.devices import DeviceError, resolve_device
from mutransfer.sweep import Sweep, SweepError
from mutransfer.sweep.objective import TrainerObjective, check_device_for
from mutransfer.training import distributed
from mutransfer.training.proxy import TrainConfig, train
from mutransfer.training.runs import RunStore, run_all
from mutransfer.training.stacked import train_stacked

torch.set_num_threads(1)

TRAIN: dict[str, Any] = {
    "model": "gpt",
    "base_width": 16,
    "depth": 1,
    "n_heads": 2,
    "seq_len": 16,
    "batch_size": 4,
    "steps": 6,
    "data": "pydoc",
    "eval_batches": 1,
    "eval_batch_size": 4,
}
TINY = TrainConfig(width=16, **TRAIN)
HAS_CUDA = torch.cuda.is_available()
no_gpu = pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU: 'cuda' is not refused")


def test_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(DeviceError, match="'gpu0' is not a device"):
        resolve_device("gpu0")
    with pytest.raises(DeviceError, match="no numbers"):
        resolve_device("meta")
    with pytest.raises(DeviceError, match="cuda:99"):
        resolve_device("cuda:99")


@no_gpu
def test_cuda_without_a_gpu_is_refused_with_what_to_use() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available here.*use device 'cpu'"):
        resolve_device("cuda")


@no_gpu
def test_the_coordinate_check_and_the_big_run_refuse_it_too() -> None:
    def mlp(width: int) -> nn.Module:
        return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 4))

    with pytest.raises(DeviceError, match="CUDA is not available"):
        coord_check(mlp, [16, 32], steps=1, seeds=1, device="cuda")
    report = coord_check(mlp, [16, 32], steps=1, seeds=1, device="auto")
    assert report.settings["device"] == ("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        distributed.setup(parallel="none", device="cuda")


def test_the_trainers_train_on_the_device_they_are_given() -> None:
    alone = train(TINY)
    on_cpu = train(TINY, device="cpu")
    automatic = train(TINY, device="auto")
    assert on_cpu.losses == alone.losses and on_cpu.val_loss == alone.val_loss
    if not HAS_CUDA:  # "auto" is the CPU here: the very same numbers
        assert automatic.losses == alone.losses
    else:  # another device: the same run up to its float rounding
        assert automatic.losses == pytest.approx(alone.losses, rel=1e-3)
    grid = [TINY.with_(lr=2.0**-7), TINY.with_(lr=2.0**-5)]
    stacked = train_stacked(grid, device="auto")
    for result, config in zip(stacked, grid, strict=True):
        assert result.losses == pytest.approx(train(config).losses, rel=1e-5)


@no_gpu
def test_a_missing_gpu_stops_every_entry_point_before_any_run(tmp_path: Path) -> None:
    trained: list[Any] = []

    def counting(config: TrainConfig, **kw: Any) -> Any:
        trained.append(config)
        return train(config, **kw)

    with pytest.raises(DeviceError, match="CUDA is not available"):
        train(TINY, device="cuda")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        train_stacked([TINY, TINY.with_(seed=1)], device="cuda")
    store = RunStore(tmp_path / "runs", "x")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        run_all([TINY], store, workers=1, progress=False, train_fn=counting, device="cuda")
    sweep = Sweep("s", [16], {"lr": {"values": [2.0**-6]}}, storage=str(tmp_path / "s.journal"))
    with pytest.raises(DeviceError, match="CUDA is not available"):
        sweep.run(device="cuda")
    assert not trained and not list(tmp_path.glob("runs/*.json"))


def test_the_run_store_hands_the_device_to_the_trainer(tmp_path: Path) -> None:
    seen: list[Any] = []

    def recording(config: TrainConfig, **kw: Any) -> Any:
        seen.append(kw.get("device"))
        return train(config, **kw)

    store = RunStore(tmp_path / "runs", "x")
    run_all([TINY], store, workers=1, progress=False, train_fn=recording, device="auto")
    assert seen == ["cuda" if HAS_CUDA else "cpu"]  # "auto" resolved once, before the runs


def test_sweep_workers_train_on_the_device(tmp_path: Path) -> None:
    lrs = [2.0**-7, 2.0**-5]
    space = {"lr": {"values": lrs}}
    sweep = Sweep("dev", [16], space, train=TRAIN, storage=str(tmp_path / "s.journal"))
    objective = sweep.load_objective("cpu")
    assert isinstance(objective, TrainerObjective) and objective.device == "cpu"
    # two spawned workers, each told the device (resolved from "auto" before they start)
    sweep.run(workers=2, device="auto", log=None)
    values = sorted(t.value for t in sweep.studies()[16].trials if t.value is not None)
    alone = sorted(train(TINY.with_(lr=lr)).val_loss for lr in lrs)
    assert values == pytest.approx(alone, rel=1e-5)


def test_a_users_objective_refuses_a_device_it_would_ignore() -> None:
    check_device_for("mine.py:objective", "cpu")  # the default: nothing to refuse
    with pytest.raises(SweepError, match="chooses its own device"):
        check_device_for("mine.py:objective", "cuda")


@no_gpu
@pytest.mark.parametrize("command", ["demo", "sweep"])
def test_the_commands_say_what_is_wrong_in_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).parents[1] / "examples" / "sweep_gpt.toml"
    argv = {
        "demo": ["demo", "--quick", "--out", str(tmp_path / "demo"), "--device", "cuda"],
        "sweep": ["sweep", str(config), "--storage", str(tmp_path / "s.journal"), "--device=cuda"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"mutransfer {command}: error: device 'cuda': CUDA is not available" in err
    assert "Traceback" not in err
    assert not (tmp_path / "demo").exists() and not (tmp_path / "s.journal").exists()


def test_the_demo_records_where_its_runs_trained(tmp_path: Path) -> None:
    from mutransfer import demo
    from mutransfer.demo.report import _on_device, provenance_lines

    summary = demo.run_demo(
        tmp_path,
        workers=0,
        progress=False,
        echo=None,
        device="auto",
        text="pydoc",
        widths=[16, 32],
        log2_lrs=[-7.0, -5.0],
        steps=4,
        **{k: v for k, v in TRAIN.items() if k in ("batch_size", "seq_len", "eval_batch_size")},
        eval_batches=1,
    )
    assert summary["run"]["device"] == ("cuda" if HAS_CUDA else "cpu")
    machine_line = next(line for line in provenance_lines(summary) if line.startswith("machine"))
    assert ("every run on cuda" in machine_line) == HAS_CUDA
    assert summary["run"]["stacked"] is False and "stacked" not in machine_line
    on_gpu = {"device": "cuda:1", "gpu": "NVIDIA H200"}
    assert _on_device(on_gpu) == ", every run on cuda:1 (NVIDIA H200)"
    assert "runs of one size stacked" in _on_device({"device": "cpu", "stacked": True})


def test_the_demo_command_passes_device_and_stacking_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mutransfer.demo import cli as demo_cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(demo_cli, "run_demo", lambda out, **kw: seen.update(kw, out=out))
    argv = ["demo", "--quick", "--out", str(tmp_path), "--device", "auto", "--stack"]
    assert main(argv) == 0
    assert seen["device"] == "auto" and seen["stacked"] is True and seen["out"] == str(tmp_path)
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert seen["device"] == "cpu" and seen["stacked"] is False
