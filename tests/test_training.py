"""The training entry point in one process: config, resume, accumulation, bf16, compile, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mutransfer import cli
from mutransfer.training import ConfigError, RunConfig, checkpoint, load, models, train
from mutransfer.training.config import parse_override
from mutransfer.training.proxy import TrainConfig
from tiny_runs import tiny_run

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def tiny(tmp_path: Path, **kw) -> RunConfig:
    return tiny_run(tmp_path / "run", **kw)


# ----------------------------------------------------------------------------------- config
def test_transfer_output_is_a_run_config_and_hparams_take_only_transferred_values(
    tmp_path: Path,
) -> None:
    transferred = tmp_path / "transferred.toml"
    transferred.write_text(
        "[train]\nmodel = 'gpt'\nwidth = 512\nbase_width = 32\nlr = 0.004\nsteps = 200\n"
        "batch_size = 16\noutput_multiplier = 2.0\nwarmup_steps = 7\ndivergence_factor = 1.5\n"
        "[transfer]\nfrom_width = 128\nparams = { lr = 0.004, output_multiplier = 2.0 }\n"
    )
    whole = load(transferred)
    assert (whole.width, whole.lr, whole.steps, whole.batch_size) == (512, 0.004, 200, 16)
    run = tmp_path / "run.toml"
    run.write_text(
        "model = 'llama'\nsteps = 9000\nbatch_size = 64\nlr = 1.0\n[hf]\nrope_theta = 1e4\n"
    )
    merged = load(run, hparams=transferred, overrides={"precision": "bf16"})
    assert (merged.model, merged.steps, merged.batch_size) == ("llama", 9000, 64)
    assert (merged.width, merged.lr, merged.output_multiplier) == (512, 0.004, 2.0)
    assert merged.warmup_steps == 7 and merged.precision == "bf16"
    assert dict(merged.hf) == {"rope_theta": 1e4}


def _transfer_output(folder: Path, proxy: TrainConfig, params: dict[str, float]) -> str:
    """The config file ``mutransfer transfer`` writes for a proxy run (to width 512)."""
    from mutransfer.sweep.transfer import Transfer

    written = Transfer(
        sweep="s",
        storage="journal",
        from_width=128,
        to_width=512,
        trial=3,
        loss=2.1,
        params=params,
        config=proxy.to_dict(),
    ).write(folder)
    return str(written["config"])


def test_reads_what_mutransfer_transfer_writes(tmp_path: Path) -> None:
    proxy = TrainConfig(width=512, lr=0.004, output_multiplier=2.0, steps=200)
    written = _transfer_output(
        tmp_path / "transfer", proxy, {"lr": 0.004, "output_multiplier": 2.0}
    )
    assert load(written).to_dict() == {
        **RunConfig().to_dict(),
        **{k: v for k, v in proxy.to_dict().items() if k in RunConfig().to_dict()},
    }
    run = tmp_path / "run.toml"
    run.write_text("steps = 5000\nbatch_size = 64\n")
    merged = load(run, hparams=written)
    assert (merged.steps, merged.width, merged.lr, merged.output_multiplier) == (
        5000,
        512,
        0.004,
        2.0,
    )
    muon = proxy.with_(optimizer="muon", lr=0.02, adamw_lr=0.004)
    merged = load(run, hparams=_transfer_output(tmp_path / "muon", muon, {"lr": 0.02}))
    assert (merged.optimizer, merged.lr, merged.adamw_lr) == ("muon", 0.02, 0.004)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("widht = 64\n")
    with pytest.raises(ConfigError, match="widht"):
        load(bad)
    with pytest.raises(ConfigError, match="grad_accum"):
        RunConfig(batch_size=6, grad_accum=4)
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml")
    # the options shared with the proxy's TrainConfig are checked by the same code
    with pytest.raises(ConfigError, match="optimizer must be one of adamw, adam, sgd, lion"):
        RunConfig(optimizer="adagrad")
    with pytest.raises(ConfigError, match="adamw_lr is the LR of Muon's AdamW side"):
        RunConfig(adamw_lr=0.01)
    with pytest.raises(ConfigError, match="^width must be a positive integer, got 0"):
        RunConfig(width=0)
    with pytest.raises(ConfigError, match="qk_norm is an option of the reference model"):
        RunConfig(model="llama", qk_norm=True)
    with pytest.raises(ValueError, match="^TrainConfig.width must be a positive integer, got 0"):
        TrainConfig(width=0)
    assert parse_override("lr=3e-3") == ("lr", 0.003)
    assert parse_override("model=llama") == ("model", "llama")
    assert parse_override("compile=true") == ("compile", True)


# ----------------------------------------------------------------------------------- resume
class Stop(Exception):
    pass


OPTIMIZER_OPTIONS = {
    "adamw": {},
    "muon": {"optimizer": "muon", "lr": 2**-5, "adamw_lr": 2**-6, "grad_clip": 1.0},
    "lion": {"optimizer": "lion", "lr": 2**-9},
}


@pytest.mark.parametrize(
    ("model", "optimizer"),
    [("gpt", "adamw"), ("gpt2", "adamw"), ("gpt", "muon"), ("llama", "muon"), ("gpt", "lion")],
)
def test_resume_reproduces_the_uninterrupted_run_exactly(
    tmp_path: Path, model: str, optimizer: str
) -> None:
    if model != "gpt":
        pytest.importorskip("transformers")
    if optimizer == "lion":
        pytest.importorskip("lion_pytorch")
    config = tiny(
        tmp_path, model=model, checkpoint_every=3, grad_accum=2, **OPTIMIZER_OPTIONS[optimizer]
    )
    full = train(config.with_(out_dir=str(tmp_path / "full")), quiet=True)

    def crash(step: int, loss: float) -> None:
        if step == 4:  # after the step-3 checkpoint, before step 5's
            raise Stop

    with pytest.raises(Stop):
        train(config, on_step=crash, quiet=True)
    assert checkpoint.latest(config.out_dir).name == "step_00000003"
    resumed = train(config, quiet=True)  # resume = "auto"
    assert resumed.start_step == 3
    assert resumed.losses == full.losses[3:]  # bit for bit
    assert resumed.val_losses == full.val_losses
    state = checkpoint.read_state(resumed.checkpoint)
    assert state["step"] == 6 and state["plan"] == resumed.plan.to_dict()
    assert len(state["schedulers"]) == (2 if optimizer == "muon" else 1)
    assert full.losses[-1] < full.losses[0] - 0.3  # it learns


def test_muon_checkpoint_holds_both_optimizers_and_logs_both_lrs(tmp_path: Path) -> None:
    from torch.distributed.checkpoint import FileSystemReader

    config = tiny(tmp_path, steps=3, warmup_steps=2, **OPTIMIZER_OPTIONS["muon"])
    result = train(config, quiet=True)
    stored = set(FileSystemReader(result.checkpoint).read_metadata().state_dict_metadata)
    hidden = "optim.state.blocks.0.attn.q.weight.momentum_buffer"  # Muon's state
    embedding = "optim.state.wte.weight.exp_avg_sq"  # AdamW's state
    assert {hidden, embedding} <= stored
    assert not any(k.startswith("optim.state.wte.weight.momentum") for k in stored)
    trained = torch.load(checkpoint.export_model(result.checkpoint, tmp_path / "m.pt"))["model"]
    initial = models.build(config)[0].state_dict()
    # Muon moved the hidden matrices, AdamW everything else
    assert [n for n, w in initial.items() if torch.equal(w, trained[n])] == []
    schedulers = checkpoint.read_state(result.checkpoint)["schedulers"]
    assert [s["last_epoch"] for s in schedulers] == [3, 3]
    records = [json.loads(line) for line in (Path(config.out_dir) / "metrics.jsonl").open()]
    # warmup over 2 steps: the base LRs of both sides at steps 1 and 2, then the full LR
    assert [r["lr"] for r in records] == pytest.approx([2**-6, 2**-5, 2**-5])
    assert [r["adamw_lr"] for r in records] == pytest.approx([2**-7, 2**-6, 2**-6])
    with pytest.raises(ConfigError, match=r"optimizer = 'adamw' \(was 'muon'\)"):
        train(config.with_(steps=4, optimizer="adamw", adamw_lr=None), quiet=True)


def test_resumes_a_checkpoint_written_before_several_optimizers(tmp_path: Path) -> None:
    """Checkpoints from before Muon support hold one scheduler state under "scheduler"."""
    config = tiny(tmp_path, steps=2)
    first = train(config, quiet=True)
    file = Path(first.checkpoint) / checkpoint.STATE_FILE
    state = torch.load(file, weights_only=True)
    state["scheduler"] = state.pop("schedulers")[0]
    torch.save(state, file)
    assert train(config.with_(steps=3), quiet=True).start_step == 2
    with pytest.raises(ConfigError, match=r"optimizer = 'muon' \(was 'adamw'\)"):
        train(config.with_(steps=4, **OPTIMIZER_OPTIONS["muon"]), quiet=True)
    state = torch.load(file, weights_only=True)
    state["schedulers"] = [state.pop("scheduler")] * 2
    torch.save(state, file)
    with pytest.raises(ConfigError, match="trained with 2 optimizer"):
        train(config.with_(steps=4, resume=str(file.parent)), quiet=True)


def test_resume_refuses_another_plan_or_a_used_folder(tmp_path: Path) -> None:
    config = tiny(tmp_path, steps=2)
    train(config, quiet=True)
    with pytest.raises(ConfigError, match=r"output_multiplier = 2\.0 \(was 1\.0\)"):
        train(config.with_(steps=4, output_multiplier=2.0), quiet=True)
    changed = config.with_(steps=4, output_multiplier=2.0, allow_changes=("output_multiplier",))
    with pytest.raises(ConfigError, match="fixed when the model and its plan are built"):
        train(changed, quiet=True)
    # the same config but a plan that differs (e.g. written by another version): refused too
    file = checkpoint.latest(config.out_dir) / checkpoint.STATE_FILE
    state = torch.load(file, weights_only=True)
    state["plan"]["tensors"]["wte.weight"]["lr_scale"] = 2.0
    torch.save(state, file)
    with pytest.raises(ConfigError, match="different plan"):
        train(config.with_(steps=4), quiet=True)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(config.with_(resume="never"), quiet=True)


def test_exported_weights_rebuild_the_model(tmp_path: Path) -> None:
    config = tiny(tmp_path, steps=2)
    result = train(config, quiet=True)
    out = checkpoint.export_model(result.checkpoint, tmp_path / "model.pt")
    saved = torch.load(out, weights_only=True)
    model, _ = models.build(config)
    model.load_state_dict(saved["model"])
    x = torch.randint(0, 256, (2, 16))
    trained, _ = models.build(config)
    assert not torch.allclose(model(x), trained(x))  # the trained weights, not the init
    assert saved["plan"] == result.plan.to_dict() and saved["step"] == 2


# ---------------------------------------------------------------------- accumulation, bf16
def test_gradient_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    one = train(tiny(tmp_path, steps=4, out_dir=str(tmp_path / "a")), quiet=True)
    four = train(tiny(tmp_path, steps=4, grad_accum=4, out_dir=str(tmp_path / "b")), quiet=True)
    assert four.losses == pytest.approx(one.losses, rel=1e-5, abs=1e-6)


def test_bf16_autocast_trains_close_to_fp32(tmp_path: Path) -> None:
    fp32 = train(tiny(tmp_path, steps=4, out_dir=str(tmp_path / "a")), quiet=True)
    bf16 = train(tiny(tmp_path, steps=4, precision="bf16", out_dir=str(tmp_path / "b")), quiet=True)
    assert bf16.losses != fp32.losses  # autocast really ran in bf16
    assert bf16.losses == pytest.approx(fp32.losses, rel=0.05)


# ----------------------------------------------------------------------------------- compile
@pytest.mark.parametrize("model", ["gpt", "gpt2"])
def test_compile_fullgraph_no_graph_breaks_same_losses(tmp_path: Path, model: str) -> None:
    if model == "gpt2":
        pytest.importorskip("transformers")
    config = tiny(tmp_path, model=model, steps=3)
    net, _ = models.build(config)
    explanation = torch._dynamo.explain(net)(torch.randint(0, 256, (2, 16)))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    eager = train(config.with_(out_dir=str(tmp_path / "eager")), quiet=True)
    compiled = train(
        config.with_(
            out_dir=str(tmp_path / "compiled"),
            compile=True,
            compile_backend="aot_eager",
            compile_fullgraph=True,
            monitor_every=1,  # the layer monitor's probe (uncompiled, hooked) changes nothing
        ),
        quiet=True,
    )
    torch._dynamo.reset()
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-6, abs=1e-6)
    sampled = (tmp_path / "compiled" / "monitor.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in sampled] == [1, 2, 3]


# --------------------------------------------------------------------------------------- CLI
def test_example_config_runs_from_the_command_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "example"
    status = cli.main(
        ["train", str(ROOT / "examples" / "train_gpt.toml"), "--steps", "2", "--out", str(out)]
    )
    assert status == 0
    assert (checkpoint.latest(out) / "plan.json").is_file()
    printed = capsys.readouterr().out
    assert "step 2/2" in printed and "val" in printed


def test_cli_reports_bad_options_as_user_errors(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text("model = 'bert'\n")
    assert cli.main(["train", str(config)]) == 2
    assert "model must be one of" in capsys.readouterr().err
    assert cli.main(["train", str(config), "--set", "model=gpt", "--print-config"]) == 0
