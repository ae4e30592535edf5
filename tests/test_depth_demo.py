"""Depth in the trainer and the demo: ``base_depth`` reaches the plan, ``--vary depth`` runs.

The trainer test checks what CompleteP / Depth-µP depend on: m_L = depth / base_depth in the
plan, and a residual-branch multiplier that the forward pass really applies. The demo test is
the depth grid end to end on tiny settings (pydoc text, width 16, a few steps), in-process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mutransfer import cli, demo
from mutransfer.demo import analysis as demo_analysis
from mutransfer.demo import cli as demo_cli
from mutransfer.demo import report
from mutransfer.training.proxy import TrainConfig, build_model, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import demo_results_section

torch.set_num_threads(1)

TINY_TRAIN = {"eval_batches": 1, "eval_batch_size": 4, "batch_size": 4, "seq_len": 16}


# ------------------------------------------------------------------------------ trainer
@pytest.mark.parametrize(
    ("rules", "branch", "hidden_lr", "hidden_eps"),
    [
        ("completep", 1 / 8, 1.0, 1 / 8),  # α = 1: branches × 1/m_L, Adam LR unchanged
        ("depth-mup", 8**-0.5, 8**-0.5, 8**-0.5),  # α = ½
        ("mup", None, 1.0, 1.0),  # width rules only: no depth scaling at all
    ],
)
def test_trainer_depth_plumbing(
    rules: str, branch: float | None, hidden_lr: float, hidden_eps: float
) -> None:
    config = TrainConfig(
        width=32, base_width=32, depth=16, base_depth=2, rules=rules, n_heads=2, seq_len=8
    )
    model, plan = build_model(config)
    for name in ("blocks.0.attn.q.weight", "blocks.15.mlp.fc.weight"):
        entry = plan[name]
        assert entry.m_depth == 8.0  # m_L = 16 / 2, for the first block and the last
        assert entry.lr_scale == pytest.approx(hidden_lr)
        assert entry.eps_scale == pytest.approx(hidden_eps)
    assert plan["wte.weight"].m_depth == 1.0  # outside the blocks: no depth multiplier
    scales = {name: s.multiplier for name, s in plan.module_scales.items()}
    if branch is None:
        assert not scales
    else:
        expected = {f"blocks.{i}.{b}": branch for i in range(16) for b in ("attn", "mlp")}
        assert scales == pytest.approx(expected)

    # the hook really scales what the branch adds to the residual stream
    attn = model.blocks[15].attn
    x = torch.randn(2, 8, 32)
    with torch.no_grad():
        hooked = attn(x)
        plain = attn.o(
            torch.nn.functional.scaled_dot_product_attention(
                *(p(x).view(2, 8, 2, 16).transpose(1, 2) for p in (attn.q, attn.k, attn.v)),
                is_causal=True,
                scale=attn.scaling,
            )
            .transpose(1, 2)
            .reshape(2, 8, 32)
        )
    assert torch.allclose(hooked, plain * (branch or 1.0), atol=1e-6)


def test_base_depth_defaults_to_depth_and_is_validated() -> None:
    _, plan = build_model(TrainConfig(width=32, base_width=16, depth=4, rules="completep"))
    assert plan["blocks.3.attn.q.weight"].m_depth == 1.0
    assert not plan.module_scales or all(s.multiplier == 1.0 for s in plan.module_scales.values())
    with pytest.raises(ValueError, match="base_depth must be >= 1"):
        TrainConfig(base_depth=0)


def test_deep_completep_run_trains() -> None:
    from mutransfer import data

    cfg = TrainConfig(
        width=16, base_width=16, depth=8, base_depth=2, n_heads=2, rules="completep", steps=15
    ).with_(**TINY_TRAIN)
    result = train(cfg, source=data.pydoc_text())
    assert not result.diverged and result.losses[-1] < result.losses[0]


# --------------------------------------------------------------------------------- demo
TINY_DEPTH = {
    "vary": "depth",
    "text": "pydoc",
    "depths": [1, 2],
    "log2_lrs": [-7.0, -5.0],
    "steps": 6,
    "width": 16,
    "n_heads": 2,
}


def test_depth_settings_fix_the_width_and_set_the_base_depth() -> None:
    settings = demo.settings_for(vary="depth", depths=[2, 8], width=32)
    assert settings.axis == "depth" and settings.rules == ("mup", "completep")
    assert settings.widths == (32,) and settings.depths == (2, 8)
    cfg = settings.config("completep", 8, -6.0, 0)
    assert (cfg.depth, cfg.base_depth, cfg.width, cfg.base_width) == (8, 2, 32, 32)
    assert cfg.lr == 2**-6
    # the width demo is unchanged: widths vary, the base config's depth stays, no base_depth
    width = demo.settings_for(widths=[32, 64])
    cfg = width.config("mup", 64, -6.0, 0)
    assert (cfg.width, cfg.base_width, cfg.depth, cfg.base_depth) == (64, 32, 2, None)
    assert width.rules == ("sp", "mup") and width.axis == "width"


def test_depth_options_that_do_not_fit_are_clear_errors() -> None:
    with pytest.raises(demo.DemoError, match="widths are fixed when the demo varies the depth"):
        demo.settings_for(vary="depth", widths=[32, 64])
    with pytest.raises(demo.DemoError, match="depths are fixed when the demo varies the width"):
        demo.settings_for(depths=[2, 4])
    with pytest.raises(demo.DemoError, match="give the depths to sweep"):
        demo.settings_for(vary="depth", depth=4)
    with pytest.raises(demo.DemoError, match="at least two depths"):
        demo.settings_for(vary="depth", depths=[4])
    with pytest.raises(demo.DemoError, match="unknown rules preset 'complete'"):
        demo.settings_for(vary="depth", rules=["mup", "complete"])
    with pytest.raises(demo.DemoError, match="vary must be one of width, depth, batch"):
        demo.settings_for(vary="heads")


def test_depth_demo_end_to_end_and_resume(tmp_path) -> None:
    calls: list[TrainConfig] = []

    def trainer(config: TrainConfig, **kw: object) -> object:
        calls.append(config)
        return train(config, **kw)  # type: ignore[arg-type]

    def run() -> dict:
        return demo.run_demo(
            tmp_path,
            workers=0,
            progress=False,
            echo=None,
            train_fn=trainer,
            rules=["mup", "completep", "depth-mup"],
            **TINY_DEPTH,
            **TINY_TRAIN,
        )

    summary = run()
    assert len(calls) == 3 * 2 * 2  # rules × depths × LRs; the transfer reuses a grid run
    assert {(c.depth, c.base_depth, c.width) for c in calls} == {(1, 1, 16), (2, 1, 16)}
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["axis"] == "depth" and on_disk["sizes"] == on_disk["depths"] == [1, 2]
    assert on_disk["config"]["width"] == 16 and "depth" not in on_disk["config"]
    for rules in ("mup", "completep", "depth-mup"):
        sweep, transfer = on_disk["sweeps"][rules], on_disk["transfer"][rules]
        assert sweep["axis"] == "depth" and sweep["depths"] == [1, 2]
        assert (transfer["proxy_depth"], transfer["target_depth"]) == (1, 2)
        assert transfer["reused_run"] is True
    # at the base depth the three presets are the same model: identical first rows
    first = {r: on_disk["sweeps"][r]["loss"][0] for r in on_disk["rules"]}
    assert first["mup"] == first["completep"] == first["depth-mup"]
    assert set(on_disk["claims"]) == {
        "completep_optimum_stable",
        "mup_optimum_moves",
        "completep_deeper_is_better",
        "completep_transfer_regret_small",
        "mup_transfer_regret_larger",
    }
    figure = tmp_path / report.DEPTH_FIGURE_NAME
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / report.FIGURE_NAME).exists()
    text = (tmp_path / "report.md").read_text()
    assert "lr_transfer_depth.png" in text and "CompleteP" in text and "depth 2" in text
    names = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert len(names) == 12 and all("-w16-d" in n for n in names)

    calls.clear()
    again = run()
    assert calls == [] and again["run"]["reused"] == 12
    assert again["sweeps"] == summary["sweeps"]


def test_depth_claims_can_hold_and_fail() -> None:
    lrs = [-8.0, -7.0, -6.0]

    def sweep(rules: str, table: dict[int, list[float]]) -> demo_analysis.Sweep:
        def lookup(d: int, lr: float, s: int) -> dict:
            return {"val_loss": table[d][lrs.index(lr)], "flops": 1.0, "steps_done": 1}

        return demo_analysis.build_sweep(rules, list(table), lrs, [0], lookup, "depth")

    mup = sweep("mup", {2: [2.6, 2.4, 2.3], 16: [2.35, 2.4, 2.6]})  # optimum falls 2 octaves
    cp = sweep("completep", {2: [2.6, 2.4, 2.3], 16: [2.5, 2.2, 2.1]})  # stays put
    t_mup = demo_analysis.transfer(mup, 2.6, reused=True)
    t_cp = demo_analysis.transfer(cp, 2.1, reused=True)
    assert t_mup.to_dict()["proxy_depth"] == 2 and t_mup.regret_percent == pytest.approx(
        100 * 0.25 / 2.35
    )
    held = demo_analysis.claims(mup, cp, t_mup, t_cp)
    assert all(c["holds"] for c in held.values())
    assert held["mup_optimum_moves"]["rule"] == (
        "µP optimum moves more than CompleteP's across the depths"
    )
    swapped = demo_analysis.claims(cp, mup, t_cp, t_mup)
    assert not any(c["holds"] for c in swapped.values())


def test_old_width_summaries_still_render(tmp_path) -> None:
    """A summary written before depth existed (no axis, proxy_width keys) still draws."""
    recorded = Path(__file__).parents[1] / "bench" / "results" / "demo.json"
    summary = json.loads(recorded.read_text())["summary"]
    assert "axis" not in summary
    paths = report.write_outputs(summary, tmp_path)
    assert paths["figure"].name == report.FIGURE_NAME
    text = report.markdown_report(summary)
    assert "from width 32 → width 256" in text
    section = demo_results_section(summary)
    assert "| transfer regret | 24.72 % | 0.73 % |" in section


def test_cli_depth_errors_are_one_line(tmp_path, capsys) -> None:
    assert cli.main(["demo", "--vary", "depth", "--widths", "32,64", "--out", str(tmp_path)]) == 2
    assert "widths are fixed" in capsys.readouterr().err
    assert cli.main(["demo", "--vary", "depth", "--depths", "4", "--out", str(tmp_path)]) == 2
    assert "at least two depths" in capsys.readouterr().err


def test_fitted_optimum_resolves_drift_below_one_grid_step() -> None:
    lrs = [-9.0, -8.0, -7.0, -6.0, -5.0]
    # losses from parabolas with minima at -7.4 and -6.6 (same grid optimum, -7)
    table = {
        2: [(x + 7.4) ** 2 / 10 + 2.0 for x in lrs],
        16: [(x + 6.6) ** 2 / 10 + 2.1 for x in lrs],
        32: [3.0, 2.5, 2.4, None, 2.2],  # a diverged neighbour: no fit
    }

    def lookup(d: int, lr: float, s: int) -> dict:
        value = table[d][lrs.index(lr)]
        return {"val_loss": value, "diverged": value is None}

    sweep = demo_analysis.build_sweep("completep", [2, 16], lrs, [0], lookup, "depth")
    assert sweep.best_log2_lr == [-7.0, -7.0] and sweep.drift_octaves == 0
    assert sweep.fitted_log2_lr == pytest.approx([-7.4, -6.6])
    assert sweep.fitted_drift_octaves == pytest.approx(0.8)
    edge = demo_analysis.build_sweep("mup", [2, 32], lrs, [0], lookup, "depth")
    assert edge.fitted_log2_lr[1] is None and edge.fitted_drift_octaves is None
    text = report.terminal_report(
        {
            "axis": "depth",
            "rules": ["completep"],
            "sizes": [2, 16],
            "seeds": [0],
            "sweeps": {"completep": sweep.to_dict()},
            "transfer": {"completep": demo_analysis.transfer(sweep, 2.2, True).to_dict()},
        }
    )
    assert "optimum moves 0 octaves (fitted 0.80) across depths" in text


def test_cli_qk_norm_reaches_every_run(tmp_path, monkeypatch) -> None:
    seen = {}

    def fake_run_demo(out, *, settings, **kwargs):
        seen["settings"] = settings

    monkeypatch.setattr(demo_cli, "run_demo", fake_run_demo)
    assert cli.main(["demo", "--vary", "depth", "--qk-norm", "--out", str(tmp_path)]) == 0
    assert seen["settings"].base.qk_norm is True
    assert cli.main(["demo", "--vary", "depth", "--out", str(tmp_path)]) == 0
    assert seen["settings"].base.qk_norm is False
