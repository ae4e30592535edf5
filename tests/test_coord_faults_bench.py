"""``bench/coord_faults.py --quick`` still runs and writes the matrix and calibration it promises.

The verdicts of a quick run mean nothing (widths 32 and 64, one step, one seed): what is checked
is that every column is built and checked against the current library (or shows its error),
that the decay probe separates coupled from independent weight decay even in 3 steps, and that
the JSON keeps the keys BENCHMARKS.md is rendered from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_bench_smoke import check_machine, run_quick

pytestmark = pytest.mark.slow
COLUMNS = ["gpt", "mlp", "gpt2", "llama", "bert"]


def test_coord_faults_quick(tmp_path: Path) -> None:
    payload, md = run_quick("coord_faults.py", tmp_path)
    check_machine(payload)
    matrix = payload["matrix"]
    assert [c["key"] for c in matrix["columns"]] == COLUMNS
    assert [r["key"] for r in matrix["rows"]] == ["mup", "lazy_readout", "wd_coupled_probe"]
    for row in matrix["rows"]:
        for column in COLUMNS:
            cell = matrix["cells"][row["key"]][column]
            assert cell["outcome"] in ("pass", "fail", "error", "n/a"), cell
            assert cell["judgement"] in (
                "right",
                "false pass",
                "false fail",
                "wrong culprit",
                "blind",
                "error",
                "n/a",
            )
            assert cell["outcome"] != "error" or cell["error"]
    # the decay probe measures, even in 3 steps: coupled decay with µP's LR shrinks like 1/width
    probes = matrix["cells"]["wd_coupled_probe"]
    assert all(p["slope"] < -0.8 for p in probes.values() if p["outcome"] != "error")
    assert sum(matrix["counts"].values()) == 3 * len(COLUMNS)
    calibration = payload["calibration"]
    assert {s["rules"] for s in calibration["summary"]} == {"mup", "lazy_readout"}
    assert all(r["largest"] == r["largest"] for r in calibration["runs"])  # no NaN
    assert md.startswith("## Coordinate check: false passes and false fails")
    assert "| fault | reference GPT |" in md and "### Calibration" in md
