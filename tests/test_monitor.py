"""Watching µP during the big run: layer sizes sampled while training, TensorBoard, W&B.

The monitor must (1) record what the coordinate check measures, every N steps, for every layer;
(2) stay quiet when the target under µP behaves like its proxy and name the layer when it does
not; (3) survive a resume without repeating steps; (4) reach TensorBoard and W&B.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest
import torch

from mutransfer.training import ConfigError, train
from mutransfer.training.monitor import (
    MONITOR,
    SUPERSEDED,
    LayerDriftWarning,
    check_supported,
    pooled,
)
from tiny_runs import tiny_run

torch.set_num_threads(1)


def samples(out: Path, name: str = MONITOR) -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def drift_warnings(config) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config, quiet=True)
    return [str(w.message) for w in caught if issubclass(w.category, LayerDriftWarning)]


def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_every_layer_is_sampled_every_n_steps_and_reaches_tensorboard(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_run(out, monitor_every=2, tensorboard=True, log_every=1), quiet=True)
    records = samples(out)
    assert [r["step"] for r in records] == [2, 4, 6]
    layers = records[-1]["layers"]
    for name in ("wte", "blocks.0.attn.q", "blocks.1.mlp.proj", "lm_head"):
        assert layers[name]["out"] > 0 and layers[name]["update"] > 0, name
    # attention: the logits and their update, measured on SDPA's inputs
    assert layers["blocks.1.attn"]["logits"] > 0 and layers["blocks.1.attn"]["Δlogits"] > 0
    assert records[0]["lr"] > 0  # the base LR of the sampled step, for per-LR comparisons

    scalars = event_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    logged = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(logged)
    assert [s for s, _ in scalars["val/loss"]] == [6]
    update = scalars["monitor/update/blocks.0.attn.q"]
    assert [s for s, _ in update] == [2, 4, 6]
    assert update[-1][1] == pytest.approx(layers["blocks.0.attn.q"]["update"])


def test_target_under_mup_matches_its_proxy_and_a_fault_is_named(tmp_path: Path) -> None:
    """Proxy width 32 → target width 512 with the same hyperparameters: µP stays within the
    tolerance of the proxy at every layer; SP, and a readout multiplier 64× too large, do not —
    and the warning names the layers."""
    common = dict(steps=6, monitor_every=3, base_width=32, lr=0.01)
    proxy = tmp_path / "proxy"
    train(tiny_run(proxy, width=32, **common), quiet=True)
    target = dict(width=512, monitor_reference=str(proxy), **common)

    assert drift_warnings(tiny_run(tmp_path / "mup", **target)) == []

    sp = drift_warnings(tiny_run(tmp_path / "sp", rules="sp", **target))
    assert len(sp) == 1  # one warning per sample, naming the layers worst first
    assert "left the proxy's (step 3) by more than 8×" in sp[0]
    assert "blocks.0.attn.o update RMS" in sp[0] or "blocks.1.attn.o update RMS" in sp[0]

    loud = drift_warnings(tiny_run(tmp_path / "loud", output_multiplier=64.0, **target))
    assert len(loud) == 1 and "lm_head activation RMS" in loud[0]
    assert "blocks.0" not in loud[0]  # the hidden layers are as the proxy's
    recorded = samples(tmp_path / "loud")[0]
    assert any(a.startswith("lm_head activation RMS") for a in recorded["alerts"])


def test_a_deeper_target_is_compared_with_the_proxys_pooled_blocks(tmp_path: Path) -> None:
    common = dict(steps=3, monitor_every=3, base_width=32, lr=0.01, base_depth=2)
    proxy = tmp_path / "proxy"
    train(tiny_run(proxy, width=32, depth=2, **common), quiet=True)
    assert pooled("blocks.3.attn.q") == "blocks.*.attn.q" and pooled("wte") == "wte"
    deep = tiny_run(tmp_path / "deep", width=64, depth=4, monitor_reference=str(proxy), **common)
    assert drift_warnings(deep) == []
    assert "blocks.3.attn.q" in samples(tmp_path / "deep")[0]["layers"]


def test_samples_after_the_checkpoint_are_superseded_and_tensorboard_purged(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    config = tiny_run(out, monitor_every=1, checkpoint_every=3, log_every=1, tensorboard=True)

    class Stop(Exception):
        pass

    def crash_after_step_5(step: int, loss: float) -> None:
        if step == 4:
            raise Stop

    with pytest.raises(Stop):
        train(config, on_step=crash_after_step_5, quiet=True)
    assert [r["step"] for r in samples(out)] == [1, 2, 3, 4, 5]
    result = train(config, quiet=True)
    assert result.start_step == 3
    assert [r["step"] for r in samples(out)] == [1, 2, 3, 4, 5, 6]  # each step once
    assert [r["step"] for r in samples(out, SUPERSEDED)] == [4, 5]  # kept, not deleted
    losses = event_scalars(out / "tensorboard")["train/loss"]
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]


def test_wandb_offline_run_holds_the_metrics_and_a_resume_continues_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    config = tiny_run(out, steps=2, monitor_every=2, wandb_project="mutransfer-test")
    train(config, quiet=True)
    run_id = (out / "wandb-run-id").read_text()
    (log,) = (out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    names = (b"train/loss", b"val/loss", b"monitor/update/blocks.0.attn.q")
    # W&B's own record file (the metric names are stored as text) is written by its service
    # process; on a loaded machine the last records can land a moment after finish() returns
    deadline = time.monotonic() + 60
    while not all(n in log.read_bytes() for n in names) and time.monotonic() < deadline:
        time.sleep(0.5)
    data = log.read_bytes()
    for name in names:
        assert name in data
    train(config.with_(steps=3), quiet=True)  # resumed: the same W&B run id
    assert (out / "wandb-run-id").read_text() == run_id
    assert len(list((out / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # one per session


def test_bad_monitor_settings_are_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="monitor_every is not supported under FSDP2"):
        check_supported("fsdp2", 10)
    check_supported("ddp", 10)
    check_supported("fsdp2", 0)
    with pytest.raises(ConfigError, match="monitor_every must be >= 0"):
        tiny_run(tmp_path, monitor_every=-1)
    with pytest.raises(ConfigError, match="monitor_tolerance must be a number > 1"):
        tiny_run(tmp_path, monitor_tolerance=0.5)
    missing = tiny_run(tmp_path / "r", monitor_every=2, monitor_reference=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"nope does not exist; point it at .* monitor_every > 0"):
        train(missing, quiet=True)

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "tensorboard" else real(n, *a)
    )
    with pytest.raises(ConfigError, match=r'pip install "mutransfer\[monitor\]"'):
        train(tiny_run(tmp_path / "tb", tensorboard=True), quiet=True)
