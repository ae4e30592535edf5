"""Resuming ``mutransfer train``: never another run than the one saved, nothing lost.

A changed config is applied (steps, cadence) or refused with the list of changes unless allowed
by name — and then really applied; metrics after the checkpoint are superseded, not repeated;
a damaged checkpoint is detected before loading and the newest intact one used (or named); a
checkpoint that cannot be written (a real file-size limit) is removed and the previous one said
intact. Each fault is injected for real.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mutransfer import cli
from mutransfer.training import checkpoint, train
from mutransfer.training.config import ConfigError
from mutransfer.training.options import lr_lambda
from mutransfer.training.resume import SUPERSEDED
from tiny_runs import tiny_run

torch.set_num_threads(1)


class Stop(Exception):
    pass


def crash_after(step_index: int):
    def on_step(step: int, loss: float) -> None:
        if step == step_index:
            raise Stop

    return on_step


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_metrics_after_the_checkpoint_are_superseded_not_repeated(tmp_path: Path) -> None:
    config = tiny_run(tmp_path / "run", checkpoint_every=3, log_every=1)
    with pytest.raises(Stop):  # killed after step 4 was logged, before the step-6 checkpoint
        train(config, on_step=crash_after(4), quiet=True)
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3, 4]
    result = train(config, quiet=True)
    assert result.start_step == 3
    steps = [r["step"] for r in metrics(tmp_path / "run")]
    assert steps == [1, 2, 3, 4, 5, 6]  # each step once
    superseded = (tmp_path / "run" / SUPERSEDED).read_text().splitlines()
    assert [json.loads(line)["step"] for line in superseded] == [4]  # kept, not deleted


def test_changed_steps_are_applied_other_changes_refused_unless_allowed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_run(out), quiet=True)  # finished at step 6, lr 2^-6
    more = tiny_run(out, steps=9)
    with pytest.raises(ConfigError, match=r"lr = 0\.1 \(was 0\.015625\).*--allow-change lr"):
        train(more.with_(lr=0.1), quiet=True)
    with pytest.raises(ConfigError, match="fixed when the model and its plan are built"):
        train(more.with_(width=128, allow_changes=("width",)), quiet=True)

    allowed = more.with_(lr=0.1, allow_changes=("lr",))
    result = train(allowed, quiet=True)
    assert result.start_step == 6 and result.end_step == 9
    # the new lr reached the optimizer: the logged base LR is 0.1 × the (new) schedule
    factor = lr_lambda(allowed)
    logged = [r["lr"] for r in metrics(out) if r["step"] > 6]
    assert logged == pytest.approx([0.1 * factor(s) for s in (6, 7, 8)])
    state = checkpoint.read_state(result.checkpoint)
    assert state["config"]["lr"] == 0.1


def test_a_damaged_latest_checkpoint_falls_back_to_the_intact_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tiny_run(out, checkpoint_every=3, keep_checkpoints=3)
    full = train(config.with_(out_dir=str(tmp_path / "ref")), quiet=True)
    train(config, quiet=True)  # checkpoints at 3 and 6
    latest = checkpoint.latest(out)
    shard = next(latest.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # half a shard
    with pytest.warns(RuntimeWarning, match=r"step_00000006 is damaged \(shard .* cut short"):
        resumed = train(config, quiet=True)
    assert resumed.start_step == 3
    assert resumed.losses == full.losses[3:]  # the intact checkpoint continues exactly


@pytest.mark.parametrize(
    "damage", ["state_cut_short", "metadata_deleted", "shards_deleted"], ids=str
)
def test_a_damaged_checkpoint_asked_for_by_path_is_refused_naming_the_intact_one(
    tmp_path: Path, damage: str
) -> None:
    out = tmp_path / "run"
    train(tiny_run(out, checkpoint_every=3, keep_checkpoints=3), quiet=True)
    folders = checkpoint.complete_checkpoints(out)
    bad = folders[-1]
    if damage == "state_cut_short":
        state = bad / checkpoint.STATE_FILE
        state.write_bytes(state.read_bytes()[:100])
    elif damage == "metadata_deleted":
        (bad / ".metadata").unlink()
    else:
        for shard in bad.glob("*.distcp"):
            shard.unlink()
    with pytest.raises(
        ConfigError, match=rf"cannot resume from .*step_00000006: .*--resume .*{folders[0].name}"
    ):
        train(tiny_run(out, steps=9, resume=str(bad)), quiet=True)


def test_disk_full_while_checkpointing_removes_the_half_checkpoint_and_says_so(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "run.toml"
    options = dict(
        width=64,
        base_width=32,
        n_heads=2,
        seq_len=16,
        batch_size=8,
        data="pydoc",
        eval_batches=1,
        eval_batch_size=4,
        log_every=0,
        checkpoint_every=3,
        out_dir=str(tmp_path / "run"),
    )
    config_file.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items()))
    command = [sys.executable, "-m", "mutransfer", "train", str(config_file)]

    assert subprocess.run([*command, "--steps", "3"], capture_output=True).returncode == 0

    def limit() -> None:  # `ulimit -f 64`: a shard of the next checkpoint does not fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    proc = subprocess.run(
        [*command, "--steps", "6"], capture_output=True, text=True, preexec_fn=limit
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "could not write the checkpoint of step 6" in proc.stderr
    assert "step_00000003 is intact" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "step_00000006").exists()
    proc = subprocess.run([*command, "--steps", "6"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout and "step_00000003" in proc.stdout


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "taken").write_text("a file where the run folder should be")
    config = tmp_path / "c.toml"
    config.write_text("width = 64\nbase_width = 32\nn_heads = 2\ndata = 'pydoc'\n")
    code = cli.main(["train", str(config), "--out", str(tmp_path / "taken" / "run")])
    assert code == 2
    assert "cannot create the run folder" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "taken", ignore_errors=True)
