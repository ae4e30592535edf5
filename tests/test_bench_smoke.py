"""Smoke test of the core benchmarks: each runs in ``--quick`` mode and writes what it promises.

The numbers of a quick run mean nothing (tiny sizes, a loaded CI machine); what is checked is
that the scripts still run against the current library and that their JSON keeps the keys
that BENCHMARKS.md and later tooling read. Each script runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_quick(script: str, out_dir: Path) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--out-dir", str(out_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    name = script.removesuffix(".py")
    payload = json.loads((out_dir / f"{name}.json").read_text(encoding="utf-8"))
    return payload, (out_dir / f"{name}.md").read_text(encoding="utf-8")


def check_machine(payload: dict[str, Any]) -> None:
    for key in ("cpu", "cpu_count", "torch", "python", "platform", "date", "torch_threads"):
        assert key in payload["machine"], key
    assert payload["quick"] is True
    assert "--quick" in payload["command"].split()


def test_step_overhead_quick(tmp_path: Path) -> None:
    payload, md = run_quick("step_overhead.py", tmp_path)
    check_machine(payload)
    assert [w["name"] for w in payload["workloads"]] == ["mlp", "gpt"]
    variants = {"plain", "plain-copy", "mup-1group", "absorbed", "explicit"}
    for work in payload["workloads"]:
        assert work["parameters"] > 0
        for impl in ("for-loop", "foreach"):
            res = work["impls"][impl]
            assert set(res["param_groups"]) == variants
            assert res["param_groups"]["plain"] == res["param_groups"]["mup-1group"] == 1
            assert res["hooks"]["absorbed"] == 0 < res["hooks"]["explicit"]
            for what in ("step", "opt_step"):
                assert set(res[what]["seconds"]) == variants
                assert all(s["median"] > 0 for s in res[what]["seconds"].values())
                assert set(res[what]["ratio_vs_plain"]) == variants - {"plain"}
                assert set(res[what]["ratio_vs_mup_1group"]) == {"absorbed", "explicit"}
    for impl, cost in payload["group_cost"].items():
        assert impl in ("for-loop", "foreach", "fused")
        assert cost["one_group_s"]["median"] > 0
    assert md.startswith("## Per-step overhead")
    assert "| model | AdamW |" in md and "Reading" in md


def test_plan_7b_quick(tmp_path: Path) -> None:
    payload, md = run_quick("plan_7b.py", tmp_path)
    check_machine(payload)
    assert 6.5e9 < payload["model"]["parameters"] < 7.0e9
    mt = payload["summary"]["mutransfer"]
    assert mt["not_on_meta"] == 0
    assert mt["tensors"] == 2 + 9 * 32 + 1  # embedding, lm_head, 9 per layer, final norm
    assert 0 < mt["plan"]["seconds"]["median"] < 10
    assert mt["param_groups"] >= 1
    assert payload["materialise_small"]["mutransfer"]["ok"] is True
    if payload["mup"] is not None:
        mp = payload["summary"]["mup"]
        assert mp["not_on_meta"] == 0
        assert mp["plan"]["seconds"]["median"] > 0
        assert "ok" in payload["mup_plain_lm_head"]
        assert "infshape_kept" in payload["materialise_small"]["mup"]
    assert md.startswith("## Building the plan of a 7B model")
    assert "Reading" in md


def test_monitor_overhead_quick(tmp_path: Path) -> None:
    payload, md = run_quick("monitor_overhead.py", tmp_path)
    check_machine(payload)
    assert payload["sample_in_steps"] > 0
    assert set(payload["predicted_overhead"]) == {"10", "50", "100"}
    assert payload["end_to_end"]["ratio"]["median"] > 0
    assert md.startswith("## Watching µP during training")
