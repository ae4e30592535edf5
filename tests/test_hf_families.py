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

import pytest
import torch

import mutransfer as mt

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import hf_families as H  # noqa: E402
from mutransfer.integrations.hf import parametrize_hf  # noqa: E402

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
