"""At the base width µP is the model's own parametrization: init stds are read from the model.

Tensor Programs V: µP equals SP at the base width. Models bring their own init (Hugging Face's
``initializer_range``, GPT-2's 1/√(2·n_layer) residual projections, torch's layer defaults, a
hand-written 0.02); the plan must start from it, never from a constant of its own, and only
change how it scales away from the base width. Judged on the tensors and on the loss at init.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mutransfer as mt
from conftest import on_meta
from mutransfer.models import GPT, GPTConfig
from mutransfer.own_init import OwnInitWarning

transformers = pytest.importorskip("transformers")
from mutransfer.integrations.hf import parametrize_hf  # noqa: E402

torch.set_num_threads(1)
VOCAB = 256


def gpt2(width: int) -> nn.Module:
    cfg = transformers.GPT2Config(
        n_embd=width,
        n_layer=2,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=64,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return transformers.GPT2LMHeadModel(cfg)


def llama(width: int) -> nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg)


def text_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Real text (the standard library's own documentation), as bytes."""
    import pydoc_data.topics

    data = "".join(pydoc_data.topics.topics.values()).encode()[:20_000]
    tokens = torch.tensor(list(data), dtype=torch.long)
    starts = torch.arange(0, 8 * 997, 997)
    windows = torch.stack([tokens[s : s + 33] for s in starts])
    return windows[:, :-1], windows[:, 1:]


def lm_loss(model: nn.Module) -> float:
    inputs, targets = text_batch()
    with torch.no_grad():
        out = model(inputs)
    logits = out.logits if hasattr(out, "logits") else out
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)))


def stds(model: nn.Module) -> dict[str, float]:
    return {n: float(p.detach().float().std()) for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", [gpt2, llama], ids=["gpt2", "llama"])
def test_hf_at_base_width_plan_is_the_models_own_init(family) -> None:
    torch.manual_seed(0)
    model = family(64).eval()
    own_std, own_loss = stds(model), lm_loss(model)
    plan = parametrize_hf(model, 64, seed=1)
    new_std, new_loss = stds(model), lm_loss(model)
    for name, std in own_std.items():
        if std == 0.0:  # constants (norm gains, biases) are planned as the same constants
            assert new_std[name] == 0.0, name
            continue
        assert plan[name].init_source == "base", name
        assert new_std[name] == pytest.approx(std, rel=0.05), name
    assert abs(new_loss - own_loss) < 0.1, (own_loss, new_loss)
    assert own_loss == pytest.approx(math.log(VOCAB), abs=0.15)  # the own init's loss: ln V


def test_hf_gpt2_own_constants_scale_by_mup_away_from_the_base() -> None:
    plan = parametrize_hf(gpt2(256), 64, seed=0)
    assert plan["transformer.wte.weight"].init_std == pytest.approx(0.02)  # input: constant
    assert plan["transformer.h.0.mlp.c_fc.weight"].init_std == pytest.approx(0.02 / 2)
    # GPT-2's own 0.02/√(2·n_layer) on residual projections, then µP's m_in^-½
    proj = plan["transformer.h.0.attn.c_proj.weight"]
    assert proj.init_std == pytest.approx(0.02 / math.sqrt(4) / 2)
    norm = plan["transformer.h.0.ln_1.weight"]
    assert norm.init == "ones"
    # the loss at init stays at ln V at 4× the base width (it was 35 with σ = 1 embeddings)
    model = gpt2(256).eval()
    parametrize_hf(model, 64, seed=0)
    assert lm_loss(model) == pytest.approx(math.log(VOCAB), abs=0.15)


def test_hf_meta_model_gets_the_same_plan_as_a_real_one() -> None:
    with torch.device("meta"):
        meta = gpt2(128)
    real = parametrize_hf(gpt2(128), 64, init=False)
    on_meta_plan = parametrize_hf(meta, 64)
    for name, entry in real.tensors.items():
        assert on_meta_plan[name].init_std == entry.init_std, name
        assert on_meta_plan[name].init == entry.init, name


def mlp(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(12, width), nn.ReLU(), nn.Linear(width, width), nn.Linear(width, 5)
    )


def test_torch_default_layers_keep_their_own_init_at_the_base() -> None:
    plan = mt.parametrize(mlp(128), on_meta(mlp, 32), init=False)
    # nn.Linear's own init is uniform ±1/√fan_in: std 1/√(3·fan_in) at the base width
    assert plan["0.weight"].init_std == pytest.approx(1 / math.sqrt(3 * 12))
    assert plan["2.weight"].init_std == pytest.approx(1 / math.sqrt(3 * 32) / 2)  # × m_in^-½
    assert plan["2.bias"].init_std == pytest.approx(1 / math.sqrt(3 * 32))  # vector: constant
    assert {t.init_source for t in plan.tensors.values()} == {"torch default"}
    # at the base width, the plan's draw has the layer's own std
    model = mlp(32)
    own = stds(model)
    delta = on_meta(mlp, 64)
    mt.parametrize(model, on_meta(mlp, 32), delta=delta, seed=0)
    for name in ("0.weight", "2.weight"):
        assert stds(model)[name] == pytest.approx(own[name], rel=0.05)


class OwnInitLM(nn.Module):
    """A hand-written model with an init of its own: 0.02 everywhere, out-projection 0.01."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, width)
        self.up = nn.Linear(width, 4 * width)
        self.out_proj = nn.Linear(4 * width, width)
        self.head = nn.Linear(width, VOCAB, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.out_proj.weight, std=0.01)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        return self.head(x + self.out_proj(F.gelu(self.up(x))))


def test_hand_written_init_is_read_and_taken_as_width_independent() -> None:
    plan = mt.parametrize(OwnInitLM(256), on_meta(OwnInitLM, 64), init=False)
    # measured on the model's own draw: equal up to sampling noise
    assert plan["emb.weight"].init_std == pytest.approx(0.02, rel=0.02)
    assert plan["up.weight"].init_std == pytest.approx(0.02 / 2, rel=0.02)
    assert plan["out_proj.weight"].init_std == pytest.approx(0.01 / 2, rel=0.02)
    assert plan["up.bias"].init == "zeros"
    assert plan["emb.weight"].init_source == "model"
    # a loss at init near ln V, as the model's own (σ = 1 embeddings gave ≈ 35 here)
    torch.manual_seed(0)
    model = OwnInitLM(256).eval()
    own = lm_loss(model)
    mt.parametrize(model, on_meta(OwnInitLM, 64), seed=0)
    assert abs(lm_loss(model) - own) < 0.1


def test_a_width_factory_base_is_measured_without_touching_the_global_rng() -> None:
    model = OwnInitLM(128)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    plan = mt.parametrize(model, OwnInitLM, base_width=64, init=False)
    assert torch.equal(torch.rand(3), expected)
    assert plan["out_proj.weight"].init_source == "base"
    assert plan["out_proj.weight"].init_std == pytest.approx(0.01 / math.sqrt(2), rel=0.05)


def test_meta_model_and_meta_base_fall_back_to_the_rules_loudly() -> None:
    with torch.device("meta"):
        model = OwnInitLM(128)
    with pytest.warns(OwnInitWarning, match="cannot be read"):
        plan = mt.parametrize(model, on_meta(OwnInitLM, 64))
    assert plan["up.weight"].init_source == "rules"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mt.parametrize(model, on_meta(OwnInitLM, 64), base_init="rules")  # intended: silent


def test_reference_models_declare_the_rules_as_their_own_init() -> None:
    cfg = GPTConfig(width=128, n_heads=2, seq_len=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.device("meta"):
            plan = mt.parametrize(GPT(cfg), on_meta(GPT, cfg.with_(width=32)))
    assert plan["blocks.0.mlp.fc.weight"].init_std == pytest.approx(1 / math.sqrt(32) / 2)
    assert plan["wte.weight"].init_std == 1.0


def test_base_init_std_sets_per_tensor_constants_and_rules_mode_ignores_the_model() -> None:
    base = on_meta(OwnInitLM, 64)
    plan = mt.parametrize(
        OwnInitLM(128), base, init=False, base_init_std={"*out_proj.weight": 0.05}
    )
    assert plan["out_proj.weight"].init_std == pytest.approx(0.05 / math.sqrt(2))
    assert plan["out_proj.weight"].init_source == "base_init_std"
    rules = mt.parametrize(OwnInitLM(128), base, init=False, base_init="rules")
    assert rules["up.weight"].init_std == pytest.approx(1 / math.sqrt(64) / math.sqrt(2))
    with pytest.raises(mt.RoleError, match="base_init_std pattern"):
        mt.parametrize(OwnInitLM(128), base, init=False, base_init_std={"nothing*": 0.1})
    with pytest.raises(ValueError, match="base_init must be"):
        mt.parametrize(OwnInitLM(128), base, init=False, base_init="own")  # type: ignore[arg-type]


def test_zero_init_readout_on_a_tied_readout_says_it_does_not_apply() -> None:
    with pytest.warns(UserWarning, match="zero_init_readout does not apply .*tied"):
        plan = parametrize_hf(gpt2(128), 64, zero_init_readout=True, init=False)
    assert plan["lm_head.weight"].init == "normal"  # the shared embedding keeps its init
