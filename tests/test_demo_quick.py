"""``mutransfer demo --quick`` end to end, as a user runs it: real command, real data, 2 workers.

Kept in its own file because it is the one long test of the demo (well under 2 minutes on 2
cores); the fast checks are in ``test_demo.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path) -> None:
    from mutransfer import demo
    from mutransfer.demo import report

    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mutransfer.cli", "demo", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["format"] == demo.SUMMARY_FORMAT
    assert summary["data"]["name"] == "shakespeare"
    assert summary["widths"] == list(demo.QUICK.widths)
    n_lrs = len(demo.QUICK.log2_lrs)
    for rules in ("sp", "mup"):
        sweep = summary["sweeps"][rules]
        assert len(sweep["loss"]) == len(demo.QUICK.widths)
        finite = [v for row in sweep["loss"] for v in row if v is not None]
        assert all(len(row) == n_lrs for row in sweep["loss"])
        assert finite and all(0.5 < v < math.log(256) + 1 for v in finite)
        assert all(b is not None for b in sweep["best_log2_lr"])
        assert summary["transfer"][rules]["reused_run"] is True
    assert summary["run"]["trained"] == len(demo.QUICK.grid())
    figure = tmp_path / report.FIGURE_NAME
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 20_000
    # the terminal shows the same table as the report
    assert "optimum moves" in proc.stdout and "regret" in proc.stdout
    # no time limit asserted (a shared CI machine would make it flaky); report it instead
    print(f"mutransfer demo --quick took {elapsed:.0f} s")
