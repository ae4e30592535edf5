"""``bench/depth_transfer.py``, ``optimizers_transfer.py`` and ``axis_transfer.py --quick`` run.

The numbers of a quick run mean nothing (tiny models, pydoc text); what is checked is that the
scripts run against the current library, as ``bench/run_all.py`` calls them (``--quick``,
``--out-dir``), and write the JSON keys, figures and sections they promise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_bench_smoke import run_quick


def test_depth_transfer_quick(tmp_path: Path) -> None:
    payload, md = run_quick("depth_transfer.py", tmp_path)
    assert payload["quick"] is True and "--quick" in payload["command"].split()
    assert set(payload["settings"]) == {
        "default",
        "long",
        "warmup",
        "long_qk_norm",
        "warmup_qk_norm",
    }
    for result in payload["settings"].values():
        summary = result["summary"]
        assert summary["axis"] == "depth" and summary["rules"] == ["mup", "completep"]
        assert set(summary["claims"]) >= {"completep_optimum_stable", "mup_optimum_moves"}
        assert (tmp_path / result["figure"]).read_bytes()[:4] == b"\x89PNG"
        assert result["reading"] and "Claim 'CompleteP" in result["reading"][-1]
    assert payload["settings"]["long"]["summary"]["config"]["steps"] == 16
    assert md.startswith("## Depth transfer at a glance")
    assert "width 16 on pydoc, 1 → 2 blocks (2×)" in md
    assert "### Depth transfer: µP vs CompleteP, 1 → 2 blocks" in md
    assert payload["settings"]["warmup"]["summary"]["config"]["warmup_steps"] == 2
    assert payload["settings"]["long_qk_norm"]["summary"]["config"]["qk_norm"] is True
    assert md.count("Reading (generated") == 5 and "How it was produced" in md


def test_optimizers_transfer_quick(tmp_path: Path) -> None:
    pytest.importorskip("lion_pytorch")
    payload, md = run_quick("optimizers_transfer.py", tmp_path)
    assert payload["quick"] is True and set(payload["optimizers"]) == {"lion", "muon"}
    for key, result in payload["optimizers"].items():
        summary = result["summary"]
        assert summary["config"]["optimizer"] == key and summary["rules"] == ["sp", "mup"]
        assert (tmp_path / result["figure"]).read_bytes()[:4] == b"\x89PNG"
    assert payload["optimizers"]["muon"]["summary"]["config"]["adamw_lr"] == 2**-6
    assert md.startswith("## LR transfer across widths with Lion and Muon")
    assert "| Lion (lion-pytorch) |" in md and "| Muon (hidden) + AdamW at 2^-6 |" in md


def test_axis_transfer_quick(tmp_path: Path) -> None:
    payload, md = run_quick("axis_transfer.py", tmp_path)
    assert payload["quick"] is True and list(payload["axes"]) == [
        "batch",
        "seq-len",
        "steps",
        "schedule",
    ]
    for axis, result in payload["axes"].items():
        summary = result["summary"]
        assert summary["axis"] == axis and summary["rules"] == ["sp", "mup"]
        assert set(summary["findings"]) == {"sp", "mup"}
        assert (tmp_path / result["figure"]).read_bytes()[:4] == b"\x89PNG"
    assert md.startswith("## Transfer along batch size, sequence length, steps and schedule")
    assert "| batch | batch 2 → 4 (2×) | µP |" in md and "| schedule | constant → wsd | SP |" in md
    assert md.count("### Along") == 4 and "Does the LR transfer along this axis?" in md
