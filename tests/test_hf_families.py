"""Every Hugging Face family of the coverage table: the cheap half of ``bench/hf_coverage.py``.

Per family (``bench/hf_families.py`` builds each from a tiny config): ``parametrize_hf``
succeeds; the attention logit scale *measured on the logits* (eager: Δsoftmax input over
Δq·kᵀ between two batches; SDPA: the scale the kernel receives, and outputs equal to eager's)
is α·s_base·d_base/d at widths 128 and 256, s_base being the model's own scale at the base
width, also measured — and differs from the model's own scale there, which is what µP
replaces; the roles are the µP table's; at the base width the plan is Hugging Face's own init
(per-tensor std and the expected loss at init). Families that compute their attention scale
inside their forward are refused with an error that names the class and the workarounds.

The coordinate checks (µP passes, the model as Hugging Face builds it fails) take minutes and
live in the benchmark; GPT-2 and Llama are also checked in tests/test_hf_coord.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import mutransfer as mt

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import hf_families as H  # noqa: E402
from mutransfer.integrations.hf import (  # noqa: E402
    RESIDUAL_BRANCHES,
    config_at_width,
    parametrize_hf,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("key", sorted(H.FAMILIES))
def test_family_logit_scale_is_one_over_d_on_the_logits(key: str) -> None:
    family = H.FAMILIES[key]
    result = H.scale_check(family, widths=(128, 256))
    for width, cell in result["widths"].items():
        for attn in ("eager", "sdpa"):
            assert cell[f"{attn}_traced"], (width, attn, "q or k not traced to its module")
            for measured in cell[attn]:
                assert measured == pytest.approx(cell["expected"], rel=H.SCALE_TOLERANCE), (
                    width,
                    attn,
                    cell,
                )
        assert cell["sdpa_vs_eager"] < 1e-4, (width, cell["sdpa_vs_eager"])
        # the measurement tells µP from the model's own scale (1/√d, or T5's constant 1)
        for own in cell["own"]:
            assert own != pytest.approx(cell["expected"], rel=0.05), (width, own)
    assert result["ok"]


@pytest.mark.parametrize("key", sorted(H.FAMILIES))
def test_family_roles_are_the_mup_table(key: str) -> None:
    family = H.FAMILIES[key]
    plan = parametrize_hf(family.build(128), H.BASE_WIDTH, init=False)
    assert H.role_mismatches(family, plan) == []


@pytest.mark.parametrize("key", sorted(H.FAMILIES))
def test_family_at_the_base_width_is_its_own_init(key: str) -> None:
    check = H.own_init_check(H.FAMILIES[key])
    assert check["failures"] == []
    assert check["loss_difference_error"] <= H.LOSS_STANDARD_ERROR, check
    assert abs(check["loss_difference"]) < 0.1, check


@pytest.mark.parametrize("key", sorted(H.UNSUPPORTED))
def test_family_that_computes_its_own_scale_is_refused_clearly(key: str) -> None:
    family = H.UNSUPPORTED[key]
    model = family.build(128, "eager")  # these have no SDPA path in transformers
    with pytest.raises(mt.PlanError, match=r"no float `scaling`.*Workarounds") as err:
        parametrize_hf(model, H.BASE_WIDTH)
    message = str(err.value)
    assert type(model).__name__ in message and "rules='sp'" in message
    parametrize_hf(model, H.BASE_WIDTH, "sp", init=False)  # the model's own scale works


def test_a_wrong_plan_is_caught_by_the_measurement() -> None:
    # the check is not tautological: a plan whose scale misses µP's (here the model's own
    # 1/√d kept by setting `scaling` back) is measured as such on the logits
    family = H.FAMILIES["llama"]
    model = family.build(256, "eager")
    parametrize_hf(model, H.BASE_WIDTH, seed=0)
    for module in H.attention_modules(model).values():
        module.scaling = module.head_dim**-0.5
    generator = torch.Generator().manual_seed(0)
    tokens = (H.text_tokens(2, 12, generator), H.text_tokens(2, 12, generator))
    measured = H.attention_scales(model, family, tokens, "eager")
    assert all(m.effective == pytest.approx(64**-0.5) for m in measured)


# ------------------------------------------------------------------ the benchmarks, smoke-tested
@pytest.mark.slow
def test_coverage_benchmark_quick_writes_the_table(tmp_path: Path) -> None:
    from test_bench_smoke import check_machine, run_quick

    payload, md = run_quick("hf_coverage.py", tmp_path)
    check_machine(payload)
    assert set(payload["families"]) == {"gpt2", "bert"}
    for row in payload["families"].values():
        assert row["plan"] == "ok" and row["roles"] == [] and row["scale"]["ok"]
        assert row["own_init"]["failures"] == []
        for rules in ("coord_mup", "coord_hf"):
            assert {"max_slope", "min_update_slope", "ok", "settings"} <= set(row[rules])
    assert md.startswith("## Hugging Face families under `parametrize_hf`")
    assert "| GPT-2 (`GPT2LMHeadModel`) |" in md and "| BERT (`BertForMaskedLM`) |" in md
    import hf_coverage

    assert_block_replaced(hf_coverage, payload, tmp_path / "doc.md", "| family |")


@pytest.mark.slow
def test_transfer_benchmark_quick_writes_the_comparison(tmp_path: Path) -> None:
    from test_bench_smoke import check_machine, run_quick

    payload, md = run_quick("hf_transfer.py", tmp_path)
    check_machine(payload)
    for rules in ("sp", "mup"):
        sweep = payload["analysis"][rules]["sweep"]
        assert sweep["widths"] == [32, 64] and len(sweep["best_log2_lr"]) == 2
        assert payload["analysis"][rules]["transfer"]["target_width"] == 64
    tuned = {"_mup_tuned"} if "mup-tuned" in payload["analysis"] else set()
    assert set(payload["goals"]) == {
        f"mup_{goal}{suffix}"
        for goal in ("best_at_widest_at_or_below_sp", "drift_at_most_one_octave")
        for suffix in {"", *tuned}
    }
    assert "difference" in payload["goals"]["mup_best_at_widest_at_or_below_sp"]
    stages = payload["proxy_tuning"]["stages"]
    assert [s["knob"] for s in stages] == ["output_multiplier"]
    assert (tmp_path / payload["figure"]).exists()
    assert md.startswith("## LR transfer on Hugging Face GPT-2")
    assert "| stage: constant |" in md
    import hf_transfer

    assert_block_replaced(hf_transfer, payload, tmp_path / "doc.md", "GPT-2 from config")


def _fake_results(best: dict[int, float]) -> Any:
    """Run results made up from a run's key: a parabola in log2 LR around each width's best."""

    class Results(dict[str, dict[str, Any]]):
        def __missing__(self, key: str) -> dict[str, Any]:
            width = int(key.split("-w")[1].split("-")[0])
            lr = float(key.split("-lr")[1].rsplit("-s", 1)[0])
            seed = int(key.rsplit("-s", 1)[1].split("-")[0])
            return {"val_loss": 2.5 + 0.1 * (lr - best[width]) ** 2 + 0.01 * seed, "seconds": 0}

    return Results()


def test_transfer_benchmark_grid_is_bracketed_then_refined() -> None:
    import hf_transfer as T

    setting = T.Setting(seeds=(0, 1), lr_resolution=0.5)
    variant = ("mup", dict.fromkeys(T.KNOBS, 1.0))
    results = _fake_results({64: -11.0, 256: -9.4})
    grid = (-10.0, -9.0, -8.0)
    # width 64's optimum is on the low edge: one more octave first, no refinement yet
    grid = T.next_grid(setting, variant, grid, results)
    assert grid == (-11.0, -10.0, -9.0, -8.0)
    grid = T.next_grid(setting, variant, grid, results)
    assert grid == (-12.0, -11.0, -10.0, -9.0, -8.0)
    # bracketed: the half-octave neighbours of each width's optimum, for both widths
    grid = T.next_grid(setting, variant, grid, results)
    assert grid == (-12.0, -11.5, -11.0, -10.5, -10.0, -9.5, -9.0, -8.5, -8.0)
    assert T.next_grid(setting, variant, grid, results) == grid  # -9.5: neighbours there


def test_transfer_benchmark_pairs_seeds_for_the_difference() -> None:
    import hf_transfer as T

    mup = {"best_index": [0, 1], "seed_loss": [[], [[9.0, 9.0], [2.50, 2.54]]]}
    sp = {"best_index": [0, 0], "seed_loss": [[], [[2.52, 2.54], [9.0, 9.0]]]}
    out = T.paired_difference(mup, sp)
    assert out["seed_differences"] == pytest.approx([-0.02, 0.0])
    assert out["difference"] == pytest.approx(-0.01)
    assert out["standard_error"] == pytest.approx(0.01)


def assert_block_replaced(module: Any, payload: dict[str, Any], doc: Path, starts: str) -> None:
    """The generated block goes between the doc's markers, and nothing else changes."""
    doc.write_text(f"before\n{module.BEGIN}\nold\n{module.END}\nafter\n", encoding="utf-8")
    assert module.update_doc(payload, doc)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(f"before\n{module.BEGIN}\n{starts}") and "\nold\n" not in text
    assert text.endswith(f"\n{module.END}\nafter\n")
    doc.write_text("no markers\n", encoding="utf-8")
    assert not module.update_doc(payload, doc)


@pytest.mark.parametrize(
    "key", sorted(k for k in H.FAMILIES if k in RESIDUAL_BRANCHES and k != "t5")
)
def test_family_residual_branches_are_scaled_in_a_deeper_model(key: str) -> None:
    # every block's two branches (attention, MLP) get CompleteP's 1/m_L in a 4-block model
    # over a 2-block base; T5's depth mapping is an open core issue (tests/test_hf.py)
    family = H.FAMILIES[key]
    base = config_at_width(family.config(128), H.BASE_WIDTH)
    options = family.options(128)
    depth = next(k for k in ("n_layer", "num_layers", "num_hidden_layers") if k in options)
    config = getattr(transformers, family.config_class)(**{**options, depth: 4})
    model = getattr(transformers, family.model_class)(config)
    plan = parametrize_hf(model, base, "completep", init=False)
    scaled = {n: s.multiplier for n, s in plan.module_scales.items() if "residual" in s.reason}
    assert len(scaled) == 2 * 4, sorted(scaled)
    assert set(scaled.values()) == {0.5}
