"""The run store's stacked path: packs of runs give the same stored results as one run per task.

``run_all(stacked=True)`` (opt-in) trains the runs that share their shapes as packs
(``training.stacked``); the store must not be able to tell: the same files under the same keys,
each with the losses, validation loss, divergence and FLOPs of the run trained alone (to
float32 rounding, 1e-5 relative). A pack saves each run as it leaves, so an interrupted grid
resumes with its finished runs, and the demo gives the same summary either way.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from mutransfer import demo
from mutransfer.data import load_text
from mutransfer.training import runs
from mutransfer.training.proxy import TrainConfig
from mutransfer.training.runs import RunStore, run_all, source_fingerprint
from mutransfer.training.stacked import worth_stacking

RTOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text():
    return load_text("pydoc")


def grid() -> list[TrainConfig]:
    base = TrainConfig(
        model="gpt",
        width=16,
        base_width=8,
        depth=2,
        n_heads=2,
        seq_len=16,
        batch_size=4,
        steps=30,
        data="pydoc",
        eval_batches=2,
        eval_batch_size=4,
    )
    configs = [base.with_(lr=2.0**e, seed=s) for e in (-8, -6) for s in (0, 1)]
    configs.append(base.with_(optimizer="sgd", lr=2.0**5))  # diverges: a pack of its own shape
    configs.append(base.with_(optimizer="sgd", lr=2.0**-3, seed=1))
    configs.append(base.with_(lr=2.0**-7, optimizer="lion"))  # no stacked step: trained alone
    configs.append(base.with_(lr=2.0**-7, width=32))  # another shape
    return configs


def stored(folder, source) -> dict[str, dict]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))
    } | {"fingerprint": {"result": source_fingerprint(source)}}


def assert_same_store(separate: dict[str, dict], stacked: dict[str, dict]) -> None:
    assert sorted(stacked) == sorted(separate)  # same files, same keys
    for name, a in separate.items():
        b = stacked[name]
        assert b.get("config") == a.get("config") and b.get("key") == a.get("key"), name
        ra, rb = a["result"], b["result"]
        if name == "fingerprint":
            assert ra == rb
            continue
        for field in ("diverged", "reason", "steps_done", "flops", "config"):
            assert rb[field] == ra[field], (name, field)
        assert len(rb["losses"]) == len(ra["losses"])
        if ra["diverged"]:  # its blow-up is chaotic; where and why it stops must agree
            continue
        for x, y in zip(ra["losses"], rb["losses"], strict=True):
            assert (x is None and y is None) or y == pytest.approx(x, rel=RTOL), name
        if ra["val_loss"] is None:
            assert rb["val_loss"] is None
        else:
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=RTOL), name


def test_stacked_and_separate_runs_store_the_same_results(tmp_path, text, monkeypatch) -> None:
    configs = grid()
    fingerprint = source_fingerprint(text)
    packs: list[int] = []
    real = runs.train_stacked

    def counting(task, **kw):
        packs.append(len(task))
        return real(task, **kw)

    monkeypatch.setattr(runs, "train_stacked", counting)
    separate = run_all(
        configs,
        RunStore(tmp_path / "a", fingerprint),
        source=text,
        workers=0,
        stacked=False,
        progress=False,
    )
    assert packs == []
    stacked = run_all(
        configs,
        RunStore(tmp_path / "b", fingerprint),
        source=text,
        workers=0,
        progress=False,
        stacked=True,
    )
    assert sorted(packs) == [2, 4]  # the 4 AdamW runs at width 16, the 2 SGD runs
    assert separate.keys() == stacked.keys()
    assert any(r["diverged"] for r in stacked.values())
    assert_same_store(stored(tmp_path / "a", text), stored(tmp_path / "b", text))


def test_a_stacked_grid_resumes_with_its_finished_runs(tmp_path, text, monkeypatch) -> None:
    configs = grid()[:4]
    store = RunStore(tmp_path, source_fingerprint(text))
    run_all(configs, store, source=text, workers=0, progress=False, stacked=True)
    files = sorted(tmp_path.glob("*.json"))
    kept = {f: f.stat().st_mtime_ns for f in files[1:]}
    files[0].unlink()  # as if the pack that trained it had been killed before it finished
    trained: list[TrainConfig] = []
    real = runs.train_stacked
    monkeypatch.setattr(
        runs, "train_stacked", lambda task, **kw: trained.extend(task) or real(task, **kw)
    )
    again = run_all(configs, store, source=text, workers=0, progress=False, stacked=True)
    assert trained == [] and len(again) == 4  # one missing run: trained alone, not as a pack
    assert all(f.stat().st_mtime_ns == t for f, t in kept.items())
    assert len(list(tmp_path.glob("*.json"))) == 4


def test_a_pool_of_workers_trains_packs_and_saves_every_run(tmp_path, text) -> None:
    configs = grid()[:4]
    fingerprint = source_fingerprint(text)
    run_all(configs, RunStore(tmp_path / "a", fingerprint), source=text, workers=0, stacked=False)
    results = run_all(
        configs,
        RunStore(tmp_path / "b", fingerprint),
        source=text,
        workers=2,
        progress=False,
        stacked=True,
    )
    assert len(results) == 4 and all(math.isfinite(r["val_loss"]) for r in results.values())
    assert_same_store(stored(tmp_path / "a", text), stored(tmp_path / "b", text))


def test_the_demo_gives_the_same_summary_stacked_or_not(tmp_path) -> None:
    options = {
        "text": "pydoc",
        "widths": [16, 32],
        "log2_lrs": [-7.0, -5.0],
        "steps": 6,
        "eval_batches": 1,
        "eval_batch_size": 4,
        "batch_size": 4,
        "seq_len": 16,
    }
    summaries = {
        stacked: demo.run_demo(
            tmp_path / str(stacked),
            workers=0,
            progress=False,
            echo=None,
            stacked=stacked,
            **options,
        )
        for stacked in (False, True)
    }
    a, b = summaries[False], summaries[True]
    assert sorted(p.name for p in (tmp_path / "True" / "runs").glob("*.json")) == sorted(
        p.name for p in (tmp_path / "False" / "runs").glob("*.json")
    )
    for rules in ("sp", "mup"):
        assert b["sweeps"][rules]["best_log2_lr"] == a["sweeps"][rules]["best_log2_lr"]
        for row_a, row_b in zip(
            a["sweeps"][rules]["loss"], b["sweeps"][rules]["loss"], strict=True
        ):
            assert row_b == pytest.approx(row_a, rel=RTOL)
    assert b["claims"] == a["claims"]
    assert b["run"]["trained"] == a["run"]["trained"] == 8


def test_only_runs_small_enough_to_gain_are_stacked(tmp_path, text, monkeypatch) -> None:
    demo_gpt = TrainConfig(model="gpt", width=32, base_width=32, seq_len=64, batch_size=16)
    assert worth_stacking(demo_gpt) and worth_stacking(demo_gpt.with_(width=64))
    assert not worth_stacking(demo_gpt.with_(width=128))  # measured slower in a pack
    assert not worth_stacking(demo_gpt.with_(optimizer="lion"))
    assert not worth_stacking(TrainConfig(model="resnet"))
    configs = grid()[:4]
    monkeypatch.setattr(runs, "worth_stacking", lambda config: config.lr < 2.0**-7)
    packs: list[list[TrainConfig]] = []
    real = runs.train_stacked
    monkeypatch.setattr(
        runs, "train_stacked", lambda task, **kw: packs.append(list(task)) or real(task, **kw)
    )
    run_all(configs, RunStore(tmp_path, "x"), source=text, workers=0, progress=False, stacked=True)
    assert packs == [configs[:2]]  # the two runs at 2^-8 packed, the two at 2^-6 alone
