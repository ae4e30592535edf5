"""Interrupting the demo loses nothing finished, leaves no process behind, and resumes.

Real interruptions of the real command: Ctrl-C (SIGINT to the whole process group, as a
terminal sends it) and ``kill -9`` of the main process only (its workers must notice and stop).
The resumed run (in-process, counting trainer calls) must train exactly the missing runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mutransfer import demo
from mutransfer.training.proxy import TrainConfig, train
from terminal_job import start_job

ARGS = ["--text", "pydoc", "--widths", "16,32", "--lrs=-8:-6", "--steps", "100"]
ARGS += ["--batch-size", "8", "--seq-len", "32", "--no-progress"]
SETTINGS = demo.settings_for(
    text="pydoc", widths=[16, 32], log2_lrs=range(-8, -5), steps=100, batch_size=8, seq_len=32
)
GRID = len(SETTINGS.grid())


def _start(out: Path) -> subprocess.Popen[str]:
    return start_job(
        [sys.executable, "-m", "mutransfer.cli", "demo", "--out", str(out), *ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_runs(proc: subprocess.Popen[str], folder: Path, n: int) -> list[Path]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        files = sorted(folder.glob("*.json"))
        if len(files) >= n:
            return files
        if proc.poll() is not None:
            pytest.fail(f"the demo exited early: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no finished run appeared within 90 s")


def _group_gone(pgid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _resume_and_check(out: Path) -> None:
    finished = {f: f.stat().st_mtime_ns for f in (out / "runs").glob("*.json")}
    assert 0 < len(finished) < GRID
    calls: list[TrainConfig] = []

    def counting(config: TrainConfig, **kw):
        calls.append(config)
        return train(config, **kw)

    summary = demo.run_demo(
        out, workers=0, progress=False, echo=None, settings=SETTINGS, train_fn=counting
    )
    assert len(calls) == GRID - len(finished)
    assert all(f.stat().st_mtime_ns == t for f, t in finished.items())
    assert summary["run"]["reused"] == len(finished)
    assert len(list((out / "runs").glob("*.json"))) == GRID


def test_ctrl_c_stops_everything_and_the_same_command_resumes(tmp_path) -> None:
    proc = _start(tmp_path)
    _wait_for_runs(proc, tmp_path / "runs", 2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert _group_gone(proc.pid), "worker processes survived Ctrl-C"
    _resume_and_check(tmp_path)


def test_kill_9_of_the_main_process_stops_its_workers(tmp_path) -> None:
    proc = _start(tmp_path)
    _wait_for_runs(proc, tmp_path / "runs", 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert _group_gone(proc.pid), "worker processes kept running after kill -9 of the demo"
    _resume_and_check(tmp_path)
