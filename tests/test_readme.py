"""The README's quick start runs as printed: the first code a new user copies."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_quick_start_runs_and_gives_mup_groups(capsys) -> None:
    (quick_start,) = python_blocks(README.read_text(encoding="utf-8"))
    namespace: dict = {}
    exec(compile(quick_start, str(README), "exec"), namespace)
    plan, opt, model = namespace["plan"], namespace["opt"], namespace["model"]
    assert "mutransfer plan: rules=mup" in capsys.readouterr().out  # print(plan) shows the table
    assert isinstance(opt, torch.optim.AdamW)
    hidden = [plan[n] for n, _ in model.named_parameters() if plan[n].role == "hidden"]
    assert hidden and all(entry.lr_scale == 128 / 1024 for entry in hidden)  # width × 8
    assert {g["lr"] for g in opt.param_groups} >= {2**-6, 2**-6 * 128 / 1024}
