"""``mutransfer dashboard``: optuna-dashboard serving the sweep's own storage, over real HTTP."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mutransfer import cli
from mutransfer.sweep import Sweep, TrialHandle

pytest.importorskip("optuna_dashboard")
ROOT = Path(__file__).resolve().parents[1]


def bowl(params: dict[str, Any], width: int, trial: TrialHandle) -> float:
    final = abs(math.log2(params["lr"]) + 6) + 1.0 / width
    for step in range(1, 4):
        trial.report(step, final + 1.0 / step)
    return final


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(url: str, proc: subprocess.Popen[str], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited: {proc.communicate()[0]}")
        try:
            return get(url)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise AssertionError(f"no answer from {url} in {seconds} s")


def test_dashboard_lists_the_sweeps_studies_and_trials(tmp_path: Path) -> None:
    journal = tmp_path / "runs" / "lr.journal"
    Sweep(
        "lr", widths=[8, 16], space={"lr": {"log2": [-8, -4]}}, objective=bowl,
        storage=str(journal),
    ).run(log=None)  # fmt: skip
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "mutransfer.cli", "dashboard", "lr", "--storage",
               str(journal), "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        listing = wait_for(f"http://127.0.0.1:{port}/api/studies", proc)
        studies = {s["study_name"]: s["study_id"] for s in listing["study_summaries"]}
        assert set(studies) == {"lr-w8", "lr-w16"}
        for name, study_id in studies.items():
            detail = get(f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0")
            trials = detail["trials"]
            assert len(trials) == 5 and {t["state"] for t in trials} == {"Complete"}, name
            best = min(trials, key=lambda t: t["values"][0])
            assert float(best["params"][0]["param_external_value"]) == 2.0**-6
            assert [v["step"] for v in best["intermediate_values"]] == [1, 2, 3]
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/", timeout=10).read()
        assert b"<html" in page.lower()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert "sweep 'lr' (2 studies: lr-w16, lr-w8)" in out


def test_dashboard_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "lr.journal"
    assert cli.main(["dashboard", "nothing", "--storage", str(journal)]) == 2
    assert "no study of sweep 'nothing'" in capsys.readouterr().err
    Sweep("lr", widths=[8], space={"lr": {"log2": [-8, -7]}}, objective=bowl,
          storage=str(journal)).run(log=None)  # fmt: skip
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli.main(["dashboard", "lr", "--storage", str(journal), "--port", str(port)])
    assert code == 2
    assert f"port {port} on 127.0.0.1 is in use: pass another --port" in capsys.readouterr().err
