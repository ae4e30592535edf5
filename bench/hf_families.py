"""The Hugging Face families of the coverage table, and how each claim about them is measured.

Shared by ``bench/hf_coverage.py`` (the table in docs/huggingface.md) and
``tests/test_hf_families.py`` (its cheap half, as a test). Every family is built from a tiny
config (vocabulary 256, 2 layers, 4 heads, dropout 0) at a width that is a multiple of 64, so
its head dimension is width/4 and the base width 64 has 16-dimensional heads.

What is measured, per family:

- ``attention_scales``: the logit scale *on the logits*: with eager attention, the q·kᵀ
  product and the softmax input are intercepted (a ``TorchFunctionMode``) for two different
  batches; the difference of the softmax inputs over the difference of q·kᵀ is the scale, with
  any additive position bias or mask cancelled (T5 adds one). A query or key the model scales
  before the product (OPT multiplies its query by ``scaling``) is traced back to the module
  that produced it (a projection, a norm): the ratio of row norms there is the pre-scale. With
  SDPA, the ``scale`` the kernel receives is recorded and the model's outputs must equal the
  eager ones (same weights).
- ``role_mismatches``: the plan's roles against the µP table, written per family as name
  patterns.
- ``own_init_check``: at the base width the planned init std of every tensor against the
  model's own draw, and the loss at init against the model's own.
- ``coord_factory``: ``(model, plan)`` per width for ``mutransfer.coord.coord_check``, µP or
  the model as Hugging Face builds it (SP: its own init and attention, one LR).
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

VOCAB = 256
DEPTH = 2
HEADS = 4
POSITIONS = 64
BASE_WIDTH = 64
MASK_ID = VOCAB - 1
"""The masked-LM families' [MASK] token: the last byte value (absent from the shipped text)."""

Kind = Literal["causal", "masked", "seq2seq"]


@dataclass(frozen=True)
class Family:
    """One Hugging Face family of the table: how to build it and what its plan must say."""

    key: str
    label: str
    kind: Kind
    model_class: str
    config_class: str
    options: Callable[[int], dict[str, Any]]
    """Config keyword arguments at a width."""
    roles: tuple[tuple[str, str], ...] = ()
    """(name pattern, role) in order, first match wins; ``input+output`` for a tied embedding.
    Every parameter must match one."""
    note: str = ""

    def config(self, width: int, attn: str = "sdpa") -> Any:
        import transformers

        cls = getattr(transformers, self.config_class)
        return cls(**self.options(width), attn_implementation=attn)

    def build(self, width: int, attn: str = "sdpa") -> nn.Module:
        import transformers

        model: nn.Module = getattr(transformers, self.model_class)(self.config(width, attn))
        return model


def _common(width: int) -> dict[str, Any]:
    return {"vocab_size": VOCAB, "use_cache": False}


def _decoder(width: int, kv_heads: int | None = HEADS // 2, **extra: Any) -> dict[str, Any]:
    """A Llama-style decoder: hidden_size, intermediate 4×, GQA with half the heads."""
    options = {
        **_common(width),
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": DEPTH,
        "num_attention_heads": HEADS,
        "max_position_embeddings": POSITIONS,
        "attention_dropout": 0.0,
    }
    if kv_heads is not None:
        options["num_key_value_heads"] = kv_heads
    return {**options, **extra}


LLAMA_ROLES = (
    ("model.embed_tokens.weight", "input"),
    ("lm_head.weight", "output"),
    ("model.layers.*_proj.weight", "hidden"),
    ("*norm.weight", "vector"),
    ("*_proj.bias", "vector"),
)
TIED_LLAMA_ROLES = (("model.embed_tokens.weight", "input+output"), *LLAMA_ROLES[1:])

FAMILIES: dict[str, Family] = {
    f.key: f
    for f in (
        Family(
            "gpt2",
            "GPT-2",
            "causal",
            "GPT2LMHeadModel",
            "GPT2Config",
            lambda w: {
                **_common(w),
                "n_embd": w,
                "n_layer": DEPTH,
                "n_head": HEADS,
                "n_positions": POSITIONS,
                "embd_pdrop": 0.0,
                "attn_pdrop": 0.0,
                "resid_pdrop": 0.0,
                "bos_token_id": None,
                "eos_token_id": None,
            },
            (
                ("transformer.wte.weight", "input+output"),
                ("transformer.wpe.weight", "input"),
                ("transformer.h.*.c_*.weight", "hidden"),
                ("*.bias", "vector"),
                ("*ln_*.weight", "vector"),
            ),
        ),
        Family(
            "gpt_neox",
            "GPT-NeoX",
            "causal",
            "GPTNeoXForCausalLM",
            "GPTNeoXConfig",
            lambda w: {
                **_common(w),
                "hidden_size": w,
                "intermediate_size": 4 * w,
                "num_hidden_layers": DEPTH,
                "num_attention_heads": HEADS,
                "max_position_embeddings": POSITIONS,
                "hidden_dropout": 0.0,
                "attention_dropout": 0.0,
                "bos_token_id": None,
                "eos_token_id": None,
            },
            (
                ("gpt_neox.embed_in.weight", "input"),
                ("lm_head.weight", "output"),
                ("*.attention.*.weight", "hidden"),
                ("*.mlp.*.weight", "hidden"),
                ("*.bias", "vector"),
                ("*norm.weight", "vector"),
            ),
        ),
        Family(
            "opt",
            "OPT",
            "causal",
            "OPTForCausalLM",
            "OPTConfig",
            lambda w: {
                **_common(w),
                "hidden_size": w,
                "ffn_dim": 4 * w,
                "word_embed_proj_dim": w,
                "num_hidden_layers": DEPTH,
                "num_attention_heads": HEADS,
                "max_position_embeddings": POSITIONS,
                "dropout": 0.0,
                "attention_dropout": 0.0,
                "bos_token_id": None,
                "eos_token_id": None,
                "pad_token_id": 1,
            },
            (
                ("model.decoder.embed_tokens.weight", "input+output"),
                ("model.decoder.embed_positions.weight", "input"),
                ("*_proj.weight", "hidden"),
                ("*.fc?.weight", "hidden"),
                ("*.bias", "vector"),
                ("*layer_norm.weight", "vector"),
            ),
            note="queries scaled before the product (q_proj(x)·scaling), kernel scale 1",
        ),
        Family(
            "llama",
            "Llama",
            "causal",
            "LlamaForCausalLM",
            "LlamaConfig",
            lambda w: _decoder(w, bos_token_id=None, eos_token_id=None),
            LLAMA_ROLES,
        ),
        Family(
            "mistral",
            "Mistral",
            "causal",
            "MistralForCausalLM",
            "MistralConfig",
            lambda w: _decoder(w, bos_token_id=None, eos_token_id=None),
            LLAMA_ROLES,
        ),
        Family(
            "qwen2",
            "Qwen2",
            "causal",
            "Qwen2ForCausalLM",
            "Qwen2Config",
            lambda w: _decoder(w, bos_token_id=None, eos_token_id=None),
            LLAMA_ROLES,
        ),
        Family(
            "qwen3",
            "Qwen3",
            "causal",
            "Qwen3ForCausalLM",
            "Qwen3Config",
            lambda w: _decoder(w, head_dim=w // HEADS, bos_token_id=None, eos_token_id=None),
            LLAMA_ROLES,
            note="QK-norm (RMSNorm of q and k per head)",
        ),
        Family(
            "gemma",
            "Gemma",
            "causal",
            "GemmaForCausalLM",
            "GemmaConfig",
            lambda w: _decoder(
                w, head_dim=w // HEADS, bos_token_id=None, eos_token_id=None, pad_token_id=None
            ),
            TIED_LLAMA_ROLES,
            note="embeddings × √hidden_size pinned at √base_width",
        ),
        Family(
            "phi",
            "Phi",
            "causal",
            "PhiForCausalLM",
            "PhiConfig",
            lambda w: _decoder(
                w,
                kv_heads=None,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                bos_token_id=None,
                eos_token_id=None,
            ),
            (
                ("model.embed_tokens.weight", "input"),
                ("lm_head.weight", "output"),
                ("lm_head.bias", "scalar"),
                ("*layernorm.weight", "vector"),
                ("model.layers.*.weight", "hidden"),
                ("*.bias", "vector"),
            ),
            note="partial rotary, parallel attention and MLP",
        ),
        Family(
            "phi3",
            "Phi-3",
            "causal",
            "Phi3ForCausalLM",
            "Phi3Config",
            lambda w: _decoder(
                w,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                bos_token_id=None,
                eos_token_id=None,
                pad_token_id=None,
            ),
            LLAMA_ROLES,
        ),
        Family(
            "mixtral",
            "Mixtral (MoE)",
            "causal",
            "MixtralForCausalLM",
            "MixtralConfig",
            lambda w: _decoder(
                w,
                intermediate_size=2 * w,
                num_local_experts=4,
                num_experts_per_tok=2,
                bos_token_id=None,
                eos_token_id=None,
            ),
            (
                ("model.layers.*.mlp.gate.weight", "output"),
                ("model.layers.*.mlp.experts.*", "hidden"),
                *LLAMA_ROLES,
            ),
            note="expert stacks experts,out,in; router a readout",
        ),
        Family(
            "qwen2_moe",
            "Qwen2-MoE",
            "causal",
            "Qwen2MoeForCausalLM",
            "Qwen2MoeConfig",
            lambda w: _decoder(
                w,
                moe_intermediate_size=w,
                shared_expert_intermediate_size=2 * w,
                num_experts=4,
                num_experts_per_tok=2,
                bos_token_id=None,
                eos_token_id=None,
            ),
            (
                ("model.layers.*.mlp.gate.weight", "output"),
                ("model.layers.*.mlp.shared_expert_gate.weight", "output"),
                ("model.layers.*.mlp.experts.*", "hidden"),
                ("model.layers.*.mlp.shared_expert.*.weight", "hidden"),
                *LLAMA_ROLES,
            ),
            note="routed and shared experts; routers and the shared-expert gate are readouts",
        ),
        Family(
            "bert",
            "BERT",
            "masked",
            "BertForMaskedLM",
            "BertConfig",
            lambda w: {
                **_common(w),
                "hidden_size": w,
                "intermediate_size": 4 * w,
                "num_hidden_layers": DEPTH,
                "num_attention_heads": HEADS,
                "max_position_embeddings": POSITIONS,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            },
            (
                ("bert.embeddings.word_embeddings.weight", "input+output"),
                ("bert.embeddings.*_embeddings.weight", "input"),
                ("cls.predictions.bias", "scalar"),
                ("*.dense.weight", "hidden"),
                ("*.self.*.weight", "hidden"),
                ("*.bias", "vector"),
                ("*LayerNorm.weight", "vector"),
            ),
        ),
        Family(
            "roberta",
            "RoBERTa",
            "masked",
            "RobertaForMaskedLM",
            "RobertaConfig",
            lambda w: {
                **_common(w),
                "hidden_size": w,
                "intermediate_size": 4 * w,
                "num_hidden_layers": DEPTH,
                "num_attention_heads": HEADS,
                "max_position_embeddings": POSITIONS + 2,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
                "pad_token_id": 1,
                "bos_token_id": 0,
                "eos_token_id": 2,
            },
            (
                ("roberta.embeddings.word_embeddings.weight", "input+output"),
                ("roberta.embeddings.*_embeddings.weight", "input"),
                ("lm_head.bias", "scalar"),
                ("*.dense.weight", "hidden"),
                ("*.self.*.weight", "hidden"),
                ("*.bias", "vector"),
                ("*layer_norm.weight", "vector"),
                ("*LayerNorm.weight", "vector"),
            ),
        ),
        Family(
            "t5",
            "T5",
            "seq2seq",
            "T5ForConditionalGeneration",
            "T5Config",
            lambda w: {
                **_common(w),
                "d_model": w,
                "d_ff": 4 * w,
                "d_kv": w // HEADS,
                "num_layers": DEPTH,
                "num_heads": HEADS,
                "dropout_rate": 0.0,
                "decoder_start_token_id": 0,
                "pad_token_id": 0,
            },
            (
                ("shared.weight", "input+output"),
                ("*.relative_attention_bias.weight", "scalar"),
                ("*Attention.?.weight", "hidden"),
                ("*.DenseReluDense.w?.weight", "hidden"),
                ("*layer_norm.weight", "vector"),
            ),
            note="own logit scale 1 (1/√d folded into q's init), relative position bias; "
            "decoder output × d_model^-½ pinned at the base",
        ),
    )
}

UNSUPPORTED: dict[str, Family] = {
    f.key: f
    for f in (
        Family(
            "gpt_neo",
            "GPT-Neo",
            "causal",
            "GPTNeoForCausalLM",
            "GPTNeoConfig",
            lambda w: {
                **_common(w),
                "hidden_size": w,
                "num_layers": DEPTH,
                "num_heads": HEADS,
                "attention_types": [[["global", "local"], 1]],
                "max_position_embeddings": POSITIONS,
                "bos_token_id": None,
                "eos_token_id": None,
            },
        ),
        Family(
            "falcon",
            "Falcon",
            "causal",
            "FalconForCausalLM",
            "FalconConfig",
            lambda w: {
                **_common(w),
                "hidden_size": w,
                "num_hidden_layers": DEPTH,
                "num_attention_heads": HEADS,
                "bos_token_id": None,
                "eos_token_id": None,
            },
        ),
        Family(
            "bloom",
            "BLOOM",
            "causal",
            "BloomForCausalLM",
            "BloomConfig",
            lambda w: {
                **_common(w),
                "hidden_size": w,
                "n_layer": DEPTH,
                "n_head": HEADS,
                "bos_token_id": None,
                "eos_token_id": None,
            },
        ),
    )
}


# ------------------------------------------------------------------------------------ data
def text_tokens(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` windows of ``length`` bytes of the shipped Shakespeare text."""
    from mutransfer.data import shakespeare

    inputs, targets = shakespeare().batch("train", n, length - 1, generator)
    return torch.cat([inputs, targets[:, -1:]], dim=1)


def batch(family: Family, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The family's own training batch from byte windows, for ``model(**batch).loss``.

    Causal LMs: the window and its labels (the model shifts them). Masked LMs: every 4th
    byte replaced by ``MASK_ID``, labels at the masked positions. Encoder–decoder: the first
    half encoded, the second half the labels (the model shifts them into decoder inputs).
    """
    if family.kind == "causal":
        return {"input_ids": tokens, "labels": tokens}
    if family.kind == "masked":
        masked = torch.zeros_like(tokens, dtype=torch.bool)
        masked[:, 1::4] = True
        inputs = tokens.masked_fill(masked, MASK_ID)
        return {"input_ids": inputs, "labels": tokens.masked_fill(~masked, -100)}
    half = tokens.shape[1] // 2
    return {"input_ids": tokens[:, :half].contiguous(), "labels": tokens[:, half:].contiguous()}


def logits_inputs(family: Family, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The forward inputs without labels (the attention measurements need no loss)."""
    inputs = batch(family, tokens)
    labels = inputs.pop("labels")
    if family.kind == "seq2seq":
        inputs["decoder_input_ids"] = labels
    return inputs


# -------------------------------------------------------------------- attention, measured
@dataclass
class _Call:
    """What one attention module computed in one forward."""

    module: str
    products: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """(a, b, a @ b) of every 4-D product, in order; q·kᵀ is the one the softmax takes."""
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    qk: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    sdpa_scale: float | None = None
    outputs: list[torch.Tensor] = field(default_factory=list)
    """Outputs of the module's submodules (projections, norms), to trace q and k back."""


class _Recorder(TorchFunctionMode):
    """Records, inside attention modules, 4-D products, softmax inputs and SDPA calls."""

    MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)
    SOFTMAXES = (F.softmax, torch.softmax, torch.Tensor.softmax)

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[_Call] = []
        self.calls: list[_Call] = []

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.stack:
            return out
        call = self.stack[-1]
        if func in self.MATMULS and isinstance(out, torch.Tensor) and out.dim() == 4:
            call.products.append((args[0].detach(), args[1].detach(), out.detach()))
        elif func in self.SOFTMAXES and call.logits is None:
            logits = args[0]
            for a, b, product in reversed(call.products):
                if product.shape == logits.shape:  # q·kᵀ: the product the softmax takes
                    call.q, call.k, call.qk = a, b.transpose(-1, -2), product
                    call.logits = logits.detach()
                    break
        elif func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            scale = kwargs.get("scale")
            call.q, call.k = q.detach(), k.detach()
            call.sdpa_scale = float(scale) if scale is not None else q.shape[-1] ** -0.5
        return out


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose logit scale the plan sets (a float ``scaling`` and a head dim)."""
    from mutransfer.build import attention_head_dim

    return {n: m for n, m in model.named_modules() if attention_head_dim(m) is not None}


def _record(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> list[_Call]:
    recorder = _Recorder()
    handles = []

    def enter(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            recorder.stack.append(_Call(name))

        return hook

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        recorder.calls.append(recorder.stack.pop())

    def keep(module: nn.Module, args: Any, output: Any) -> None:
        if recorder.stack:
            outs = output if isinstance(output, tuple | list) else (output,)
            recorder.stack[-1].outputs += [o.detach() for o in outs if torch.is_tensor(o)]

    for name, module in attention_modules(model).items():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
        for child in module.modules():
            if child is not module:
                handles.append(child.register_forward_hook(keep))
    try:
        with torch.no_grad(), recorder:
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return recorder.calls


def _as_rows(x: torch.Tensor, b: int, h: int, length: int, d: int) -> list[torch.Tensor]:
    """The ways a submodule output can be the kernel's (batch, heads, positions, head dim)
    input: itself in (b, h, l, d) or (b, l, h·d) order, or a third of a fused q/k/v
    projection, either contiguous (GPT-2's c_attn: [q | k | v]) or per head (GPT-NeoX's
    query_key_value: [q k v] in every head)."""
    n = b * h * length * d
    if x.shape[:1] != (b,) or x.numel() % n:
        return []
    views = []
    if x.numel() == n:
        if tuple(x.shape) == (b, h, length, d):
            views.append(x)
        if x.dim() >= 3 and x.shape[1] == length:
            views.append(x.reshape(b, length, h, d).transpose(1, 2))
        return views
    if x.dim() < 3 or x.shape[1] != length:
        return []
    parts = x.numel() // n
    flat = x.reshape(b, length, parts * h * d)
    views += [c.reshape(b, length, h, d).transpose(1, 2) for c in flat.chunk(parts, dim=-1)]
    per_head = flat.reshape(b, length, h, parts * d)
    views += [per_head[..., j * d : (j + 1) * d].transpose(1, 2) for j in range(parts)]
    return views


def pre_scale(kernel_input: torch.Tensor, outputs: list[torch.Tensor]) -> float | None:
    """How much the model scaled q (or k) between the module that produced it and the kernel.

    The kernel's input is matched row by row (one row per batch, head and position) with the
    outputs of the attention module's submodules: a rotary embedding rotates each row (norm
    kept), a scaled query (OPT) multiplies it, grouped-query attention repeats key heads. The
    ratio of row norms is that factor when it is the same for every row; the last submodule
    that gives one is the producer. None when no submodule's output is related to it that way.
    """
    b, heads, length, d = kernel_input.shape
    norms = kernel_input.double().norm(dim=-1)
    found: float | None = None
    for out in outputs:
        for reps in (1, 2, 4):  # key/value heads repeated for grouped-query attention
            if heads % reps:
                continue
            target = norms[:, ::reps]
            for rows in _as_rows(out, b, heads // reps, length, d):
                ratio = target / rows.double().norm(dim=-1).clamp_min(1e-30)
                mean = float(ratio.mean())
                if mean > 0 and float((ratio - mean).abs().max()) <= 1e-3 * mean:
                    found = mean
    return found


@dataclass(frozen=True)
class AttentionMeasurement:
    """The logit scale of one attention module, measured."""

    module: str
    kernel: float
    """Eager: Δsoftmax input / Δ(q·kᵀ); SDPA: the ``scale`` the kernel received."""
    pre_q: float | None
    pre_k: float | None
    linear_residual: float | None = None
    """Eager: how far the logits are from kernel × q·kᵀ + the same offset (relative)."""

    @property
    def effective(self) -> float:
        """The scale on the product of the query and key as their modules produced them."""
        return self.kernel * (self.pre_q or 1.0) * (self.pre_k or 1.0)

    @property
    def traced(self) -> bool:
        return self.pre_q is not None and self.pre_k is not None


def attention_scales(
    model: nn.Module, family: Family, tokens: tuple[torch.Tensor, torch.Tensor], attn: str
) -> list[AttentionMeasurement]:
    """The logit scale of every attention call, measured under ``attn`` ("eager" or "sdpa")."""
    model.set_attn_implementation(attn)  # type: ignore[operator]
    model.eval()
    first = _record(model, logits_inputs(family, tokens[0]))
    second = _record(model, logits_inputs(family, tokens[1]))
    out = []
    for a, b in zip(first, second, strict=True):
        if attn == "sdpa":
            if a.sdpa_scale is None or a.q is None or a.k is None:
                raise AssertionError(f"{a.module}: no scaled_dot_product_attention call")
            out.append(
                AttentionMeasurement(
                    a.module, a.sdpa_scale, pre_scale(a.q, a.outputs), pre_scale(a.k, a.outputs)
                )
            )
            continue
        if a.qk is None or b.qk is None or a.logits is None or b.logits is None:
            raise AssertionError(f"{a.module}: no q·kᵀ product followed by a softmax (eager)")
        assert a.q is not None and a.k is not None
        kernel, residual = _slope(a.qk, b.qk, a.logits, b.logits)
        out.append(
            AttentionMeasurement(
                a.module, kernel, pre_scale(a.q, a.outputs), pre_scale(a.k, a.outputs), residual
            )
        )
    return out


def _slope(
    qk_a: torch.Tensor, qk_b: torch.Tensor, logits_a: torch.Tensor, logits_b: torch.Tensor
) -> tuple[float, float]:
    """Least-squares s in Δlogits = s·Δ(q·kᵀ) over the unmasked entries, and the relative
    residual (an additive bias or mask, the same in both batches, cancels)."""
    la, lb = logits_a.double(), logits_b.double()
    keep = la.isfinite() & lb.isfinite() & (la.abs() < 1e4) & (lb.abs() < 1e4)
    dq = (qk_a.double() - qk_b.double())[keep]
    dl = (la - lb)[keep]
    s = float((dl * dq).sum() / (dq * dq).sum())
    residual = float((dl - s * dq).abs().max() / dl.abs().max().clamp_min(1e-30))
    return s, residual


def sdpa_matches_eager(
    model: nn.Module, family: Family, tokens: torch.Tensor
) -> tuple[float, float]:
    """(max |logits_sdpa − logits_eager|, max |logits_eager|) of one model, same weights."""
    inputs = logits_inputs(family, tokens)
    model.eval()
    results = []
    for attn in ("eager", "sdpa"):
        model.set_attn_implementation(attn)  # type: ignore[operator]
        with torch.no_grad():
            results.append(model(**inputs).logits.double())
    eager, sdpa = results
    return float((sdpa - eager).abs().max()), float(eager.abs().max())


# ---------------------------------------------------------------------------------- roles
def role_label(entry: Any) -> str:
    """A tensor's role in the plan as the tables write it (``input+output`` when tied)."""
    return "+".join(entry.tied_roles) if entry.tied_roles else str(entry.role)


def role_mismatches(family: Family, plan: Any) -> list[str]:
    """Tensors whose planned role is not the family's µP table's (empty when all agree)."""
    wrong = []
    for name, entry in plan.tensors.items():
        expected = next((r for p, r in family.roles if fnmatch.fnmatchcase(name, p)), None)
        got = role_label(entry)
        if expected is None:
            wrong.append(f"{name}: {got} (not in the table)")
        elif expected != got:
            wrong.append(f"{name}: {got}, expected {expected}")
    return wrong


# ------------------------------------------------------------------------- own init
def sample_tolerance(numel: int) -> float:
    """Relative tolerance for comparing the std of two independent normal draws of ``numel``
    values: 5 %, or 4 standard errors of their ratio (√2 · 0.707/√n) for small tensors."""
    return max(0.05, 4 * math.sqrt(2) * 0.707 / math.sqrt(numel))


def loss_of(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(**inputs).loss)


LOSS_STANDARD_ERROR = 0.03
"""How precisely the own-init check estimates the difference of the expected losses at init
(nats): seeds are added until the standard error of the difference is below it."""


def own_init_check(
    family: Family, width: int = BASE_WIDTH, min_seeds: int = 8, max_seeds: int = 64
) -> dict[str, Any]:
    """At the base width: the plan's init against the model's own, per tensor and in the loss.

    Each seed builds the model with Hugging Face's own init (another draw than the base the
    plan read) and records its loss at init; the plan then re-initialises it (``plan.init_``
    with another seed) and the loss is recorded again. The loss at init of one random draw
    varies from seed to seed (T5: a standard deviation of 0.17 nats, its tied embedding has
    std 1), so the *expected* losses are compared: seeds are added until the standard error of
    their difference is below ``LOSS_STANDARD_ERROR``. Stds are compared per tensor on the
    first seed, within ``sample_tolerance``.
    """
    from mutransfer.integrations.hf import parametrize_hf

    inputs = batch(family, text_tokens(8, 32, torch.Generator().manual_seed(0)))
    own_losses: list[float] = []
    planned_losses: list[float] = []
    failures: list[str] = []
    worst = ("", 0.0, 1.0)
    plan: Any = None
    seed = 0
    while seed < max_seeds:
        torch.manual_seed(10_000 + seed)
        model = family.build(width)
        own = {n: p.detach().float().clone() for n, p in model.named_parameters()}
        own_losses.append(loss_of(model, inputs))
        if plan is None:
            plan = parametrize_hf(model, width, init=False)
        plan.attach(model)
        plan.init_(model, seed=20_000 + seed)
        planned_losses.append(loss_of(model, inputs))
        if seed == 0:
            worst = _compare_stds(own, dict(model.named_parameters()), plan, failures)
        seed += 1
        if seed >= min_seeds and _difference_error(own_losses, planned_losses) <= (
            LOSS_STANDARD_ERROR
        ):
            break
    own_loss = statistics.fmean(own_losses)
    planned_loss = statistics.fmean(planned_losses)
    return {
        "seeds": seed,
        "own_loss": own_loss,
        "planned_loss": planned_loss,
        "loss_difference": planned_loss - own_loss,
        "loss_difference_error": _difference_error(own_losses, planned_losses),
        "worst_tensor": worst[0],
        "worst_relative_std_difference": worst[1],
        "worst_tolerance": worst[2],
        "failures": failures,
    }


def _difference_error(a: list[float], b: list[float]) -> float:
    """Standard error of mean(b) − mean(a), independent samples."""
    if len(a) < 2:
        return math.inf
    return math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))


def _compare_stds(
    own: Mapping[str, torch.Tensor],
    params: Mapping[str, torch.Tensor],
    plan: Any,
    failures: list[str],
) -> tuple[str, float, float]:
    """Per tensor: the planned draw's std against the model's own (constants: equal).
    Returns the tensor closest to its tolerance: (name, relative difference, tolerance)."""
    worst = ("", 0.0, 1.0)
    for name, values in own.items():
        new = params[name].detach().float()
        if values.min() == values.max():  # a constant (norm gain, bias): the same constant
            if not torch.equal(new, values):
                failures.append(f"{name}: own constant {float(values[0])}, planned otherwise")
            continue
        own_std, new_std = float(values.std()), float(new.std())
        rel = abs(new_std - own_std) / own_std
        tol = sample_tolerance(values.numel())
        if rel / tol > worst[1] / worst[2]:
            worst = (name, rel, tol)
        if rel > tol:
            failures.append(
                f"{name}: own std {own_std:.4g}, planned {plan[name].init_std:.4g} (drawn "
                f"{new_std:.4g}, {rel:.1%} > {tol:.1%})"
            )
    return worst


# --------------------------------------------------------------------- coordinate check
def coord_factory(family: Family, rules: str) -> Callable[[int], tuple[nn.Module, Any]]:
    """``width -> (model, plan)`` for ``coord_check``: ``rules="mup"`` (``parametrize_hf``
    at base width 64, initialised by the plan) or ``"hf"``: the model exactly as Hugging Face
    builds it (its own init, its own 1/√d attention), trained with one LR (an SP plan used
    for its parameter groups only: every LR scale is 1)."""
    from mutransfer.integrations.hf import parametrize_hf

    def factory(width: int) -> tuple[nn.Module, Any]:
        model = family.build(width, "sdpa")
        if rules == "hf":
            return model, parametrize_hf(model, BASE_WIDTH, "sp", init=False)
        return model, parametrize_hf(model, BASE_WIDTH, rules)

    return factory


def coord_data(family: Family) -> Callable[[torch.Generator], dict[str, torch.Tensor]]:
    """One small batch per seed, as the coordinate check's default (2 windows of the shipped
    text), in the family's own loss: 8 bytes (causal, masked), 16 (encoder–decoder: 8 + 8)."""
    length = 16 if family.kind == "seq2seq" else 8
    return lambda generator: batch(family, text_tokens(2, length, generator))


def worst_slopes(report: Any) -> dict[str, Any]:
    """The largest slope of any series and the smallest slope of a layer's own update
    (``update``, ``Δbias``, ``Δlogits``), with where they are: what the verdict turns on."""
    up: tuple[float, str] = (-math.inf, "")
    down: tuple[float, str] = (math.inf, "")
    for row in report.rows:
        for t, slope in enumerate(row.slopes):
            if slope is None or not math.isfinite(slope):
                continue
            where = f"{row.module} ({row.quantity}, t={t})"
            if slope > up[0]:
                up = (slope, where)
            if row.quantity in ("update", "Δbias", "Δlogits") and slope < down[0]:
                down = (slope, where)
    return {
        "max_slope": up[0] if math.isfinite(up[0]) else None,
        "max_where": up[1],
        "min_update_slope": down[0] if math.isfinite(down[0]) else None,
        "min_update_where": down[1],
        "ok": bool(report.ok),
        "failing": [r.describe() for r in report.culprits()] if not report.ok else [],
    }


# ------------------------------------------------------------------- the scale, checked
SCALE_TOLERANCE = 1e-3
"""Relative tolerance of a measured logit scale against the expected one (float32 logits)."""


def scale_check(family: Family, widths: tuple[int, ...] = (128, 256)) -> dict[str, Any]:
    """The attention logit scale of ``parametrize_hf``'s µP at ``widths``, measured on the
    logits under eager and SDPA attention, against α·s_base·d_base/d.

    s_base is itself measured: the model as Hugging Face builds it at the base width (1/√16
    for the usual 1/√d, 1 for T5). Also measured: the model's own scale at each width (what
    µP replaces) and the largest difference between SDPA's and eager's logits, same weights.
    """
    from mutransfer.integrations.hf import parametrize_hf

    generator = torch.Generator().manual_seed(0)
    length = 24 if family.kind == "seq2seq" else 12
    tokens = (text_tokens(2, length, generator), text_tokens(2, length, generator))
    torch.manual_seed(0)
    own_base = attention_scales(family.build(BASE_WIDTH, "eager"), family, tokens, "eager")
    s_base = own_base[0].effective
    result: dict[str, Any] = {"own_scale_at_base": s_base, "widths": {}}
    ok = all(math.isclose(m.effective, s_base, rel_tol=SCALE_TOLERANCE) for m in own_base)
    for width in widths:
        expected = s_base * BASE_WIDTH / width
        torch.manual_seed(0)
        own = attention_scales(family.build(width, "eager"), family, tokens, "eager")
        model = family.build(width, "eager")
        parametrize_hf(model, BASE_WIDTH, seed=0)
        cell: dict[str, Any] = {"expected": expected, "own": [m.effective for m in own]}
        for attn in ("eager", "sdpa"):
            measured = attention_scales(model, family, tokens, attn)
            cell[attn] = [m.effective for m in measured]
            cell[f"{attn}_traced"] = all(m.traced for m in measured)
            cell[f"{attn}_kernel"] = [m.kernel for m in measured]
            ok = ok and all(
                math.isclose(m.effective, expected, rel_tol=SCALE_TOLERANCE) for m in measured
            )
        diff, largest = sdpa_matches_eager(model, family, tokens[0])
        cell["sdpa_vs_eager"] = diff / largest
        ok = ok and cell["sdpa_vs_eager"] < 1e-4 and cell["eager_traced"] and cell["sdpa_traced"]
        result["widths"][str(width)] = cell  # JSON keys: strings either way
    result["ok"] = bool(ok)
    return result
