"""The demo: the GPT it trains, its analysis, its outputs, and resuming without recomputing.

Everything here runs in-process on tiny settings (pydoc text, widths 16/32, a few steps); the
real ``--quick`` run in a subprocess lives in ``test_demo_quick.py`` and the interruption tests
(Ctrl-C, kill -9) in ``test_demo_interrupt.py``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import mutransfer as mt
from mutransfer import cli, demo
from mutransfer.demo import analysis as demo_analysis
from mutransfer.demo import run as demo_run
from mutransfer.models import GPT, GPTConfig
from mutransfer.training.proxy import TrainConfig, train
from mutransfer.training.runs import RunStore, run_key, source_fingerprint

TINY = {"text": "pydoc", "widths": [16, 32], "log2_lrs": [-7.0, -5.0], "steps": 6}
TINY_TRAIN = {"eval_batches": 1, "eval_batch_size": 4, "batch_size": 4, "seq_len": 16}


# ------------------------------------------------------------------------------- model
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("rules", ["sp", "mup"])
def test_gpt_forward_backward_at_several_widths(tie: bool, rules: str) -> None:
    def make(width: int) -> GPT:
        return GPT(GPTConfig(width=width, n_heads=2, seq_len=8, tie_embeddings=tie))

    for width in (16, 32, 64):
        model = make(width)
        if tie:
            assert model.lm_head.weight is model.wte.weight
        mt.parametrize(model, make, rules, "adamw", base_width=16, seed=0)
        idx = torch.randint(0, 256, (3, 8))
        logits = model(idx)
        assert logits.shape == (3, 8, 256) and torch.isfinite(logits).all()
        model.loss(idx, torch.roll(idx, -1, 1)).backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        # the attention scale follows the rules: 1/d under µP (= 1/sqrt(d) at base), else 1/sqrt(d)
        head_dim = width // 2
        expected = 1 / math.sqrt(head_dim) if rules == "sp" else math.sqrt(8) / head_dim
        assert model.blocks[0].attn.scaling == pytest.approx(expected)


def test_qk_norm_normalises_each_heads_queries_and_keys_and_passes_the_coord_check() -> None:
    from mutransfer.coord import coord_check
    from mutransfer.training.proxy import build_model

    model, plan = build_model(TrainConfig(width=64, base_width=32, seq_len=8, qk_norm=True))
    attn = model.blocks[0].attn
    assert plan["blocks.0.attn.q_norm.weight"].role == "vector"  # head_dim grows with width
    seen = {}
    attn.q_norm.register_forward_hook(lambda m, args, out: seen.update(q=out))
    with torch.no_grad():
        attn.q_norm.weight.fill_(3.0)
        model(torch.randint(0, 256, (2, 8)))
    rms = seen["q"].pow(2).mean(-1).sqrt()  # per head and position: the gain, whatever x was
    assert rms.shape == (2, 8, 4) and torch.allclose(rms, torch.full_like(rms, 3.0), atol=1e-3)

    def make(width: int) -> GPT:
        return GPT(GPTConfig(width=width, n_heads=2, seq_len=16, qk_norm=True))

    assert coord_check(make, (32, 64, 128, 256), steps=3, seeds=2).ok
    assert not coord_check(make, (32, 64, 128, 256), steps=3, seeds=2, rules="sp").ok


# ---------------------------------------------------------------------------- analysis
def _fake_sweep(rules: str, table: dict[int, list[float | None]]) -> demo_analysis.Sweep:
    lrs = [-8.0, -7.0, -6.0, -5.0]

    def lookup(w: int, lr: float, s: int) -> dict:
        value = table[w][lrs.index(lr)]
        steps = 5 if value is None else 10  # a diverged run stops early
        return {
            "val_loss": value,
            "diverged": value is None,
            "flops": float(w * steps),
            "steps_done": steps,
            "config": {"steps": 10},
            "seconds": 1.0,
        }

    return demo_analysis.build_sweep(rules, list(table), lrs, [0], lookup)


def test_analysis_optimum_drift_regret_and_claims() -> None:
    sp = _fake_sweep("sp", {32: [2.6, 2.4, 2.2, 2.3], 256: [2.25, 2.3, 2.5, None]})
    mup = _fake_sweep("mup", {32: [2.6, 2.4, 2.2, 2.3], 256: [2.3, 2.0, 1.9, 2.0]})
    assert sp.best_log2_lr == [-6.0, -8.0] and sp.drift_octaves == 2 and sp.shift_octaves == -2
    assert sp.loss[1][3] is None and sp.edge_optima == [256]
    assert mup.best_log2_lr == [-6.0, -6.0] and mup.drift_octaves == 0
    t_sp = demo_analysis.transfer(sp, transferred_loss=2.5, reused=True)
    t_mup = demo_analysis.transfer(mup, transferred_loss=1.9, reused=True)
    assert t_sp.regret_percent == pytest.approx(100 * 0.25 / 2.25) and t_mup.regret_percent == 0.0
    assert t_sp.compute_fraction == pytest.approx(32 / 256)  # planned, not cut by divergence
    assert sum(sp.flops[1]) == 256 * (3 * 10 + 5)
    claims = demo_analysis.claims(sp, mup, t_sp, t_mup)
    assert all(c["holds"] for c in claims.values())
    # and each claim can fail: swap the roles of SP and µP
    swapped = demo_analysis.claims(mup, sp, t_mup, t_sp)
    assert not any(c["holds"] for c in swapped.values())


def test_a_cell_with_one_diverged_seed_counts_as_diverged() -> None:
    def lookup(w: int, lr: float, s: int) -> dict:
        diverged = s == 1 and lr == -5.0
        return {"val_loss": None if diverged else 2.0 + s, "diverged": diverged}

    sweep = demo_analysis.build_sweep("sp", [32, 64], [-6.0, -5.0], [0, 1], lookup)
    assert sweep.loss[0] == [2.5, None] and sweep.seed_loss[0][1] == [2.0, None]


# ----------------------------------------------------------------------- end to end
class CountingTrainer:
    """The real trainer, counting which configs it was asked to train."""

    def __init__(self) -> None:
        self.calls: list[TrainConfig] = []

    def __call__(self, config: TrainConfig, **kw) -> object:
        self.calls.append(config)
        return train(config, **kw)


def _run(out, trainer, **changes) -> dict:
    options = {**TINY, **TINY_TRAIN, **changes}
    return demo.run_demo(out, workers=0, progress=False, echo=None, train_fn=trainer, **options)


def test_demo_writes_summary_figure_report_and_resumes(tmp_path) -> None:
    first = CountingTrainer()
    summary = _run(tmp_path, first)
    assert len(first.calls) == 2 * 2 * 2  # rules × widths × LRs; transfer reuses a grid run

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["format"] == demo.SUMMARY_FORMAT and on_disk["rules"] == ["sp", "mup"]
    for rules in ("sp", "mup"):
        sweep = on_disk["sweeps"][rules]
        assert len(sweep["loss"]) == 2 and all(len(row) == 2 for row in sweep["loss"])
        assert sweep["best_log2_lr"][0] in (-7.0, -5.0)
        assert on_disk["transfer"][rules]["reused_run"] is True
    assert set(on_disk["claims"]) >= {"mup_optimum_stable", "mup_transfer_regret_small"}
    assert on_disk["run"]["trained"] == 8 and on_disk["run"]["reused"] == 0
    assert (tmp_path / "lr_transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        "![" in (tmp_path / "report.md").read_text()
        and "lr_transfer.png" in (tmp_path / "report.md").read_text()
    )

    # interrupted run: three results lost; the rest must not be recomputed
    files = sorted((tmp_path / "runs").glob("*.json"))
    assert len(files) == 8
    lost = files[:3]
    kept = {f: f.stat().st_mtime_ns for f in files[3:]}
    for f in lost:
        f.unlink()
    second = CountingTrainer()
    again = _run(tmp_path, second)
    assert len(second.calls) == 3
    assert {f.stat().st_mtime_ns for f in kept} == set(kept.values())
    for rules in ("sp", "mup"):  # a run is a pure function of its config
        assert again["sweeps"][rules]["loss"] == summary["sweeps"][rules]["loss"]
    assert again["run"]["reused"] == 5 and again["run"]["trained"] == 3

    # other options must not pick up these results
    third = CountingTrainer()
    _run(tmp_path, third, steps=5)
    assert len(third.calls) == 8


def test_transfer_trains_the_target_when_its_lr_was_not_run(tmp_path) -> None:
    settings = demo.settings_for(**TINY, **TINY_TRAIN)
    source = mt.data.pydoc_text()
    store = RunStore(tmp_path, source_fingerprint(source))
    # a sweep whose proxy optimum (2^-6.5) is not among the runs we hold
    sweep = _fake_sweep("mup", {16: [3.0, 2.9, 2.5, 2.7], 32: [2.9, 2.8, 2.6, 2.4]})
    sweep.log2_lrs = [-8.0, -7.0, -6.5, -5.0]
    trainer = CountingTrainer()
    how = {"source": source, "workers": 0, "progress": False, "train_fn": trainer}
    t = demo_run._transfer(settings, sweep, {}, store, how)
    target = settings.config("mup", 32, -6.5, 0)
    assert trainer.calls == [target] and t.reused_run is False
    assert t.transferred_loss == pytest.approx(store.load(target)["val_loss"])
    assert t.regret_percent == pytest.approx(100 * (t.transferred_loss - 2.4) / 2.4)
    # asked again, the finished run is found on disk
    again = CountingTrainer()
    assert demo_run._transfer(settings, sweep, {}, store, {**how, "train_fn": again}).reused_run
    assert again.calls == []


def test_run_key_covers_every_option_and_the_data() -> None:
    cfg = TrainConfig()
    assert run_key(cfg, "a") == run_key(TrainConfig(), "a")
    assert run_key(cfg, "a") != run_key(cfg, "b")
    for change in (
        {"steps": 201},
        {"beta2": 0.99},
        {"rules": "sp"},
        {"seed": 1},
        {"qk_norm": True},
    ):
        assert run_key(cfg.with_(**change), "a") != run_key(cfg, "a")
    # a field added later is left out at its default: runs stored before it keep their key
    assert "qk_norm" not in cfg.to_dict() and cfg.with_(qk_norm=True).to_dict()["qk_norm"]
    assert TrainConfig.from_dict(cfg.with_(qk_norm=True).to_dict()).qk_norm


def test_cli_rejects_bad_options_with_a_clear_message(tmp_path, capsys) -> None:
    assert cli.main(["demo", "--out", str(tmp_path), "--widths", "32"]) == 2
    assert "at least two widths" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path), "--widths", "30,60"]) == 2
    assert "not divisible by the number of heads" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path), "--text", str(tmp_path / "nope.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--lrs=abc"])
    assert "--lrs=-11:-4" in capsys.readouterr().err
