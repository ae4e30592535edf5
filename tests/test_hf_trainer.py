"""µP inside Hugging Face's ``Trainer``: every group's LR is base × scale × schedule, at every step,
and a run resumed from a checkpoint keeps its plan (and refuses another one).

Tiny GPT-2 and Llama from config, 20 steps on Shakespeare's text (bytes), one thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from mutransfer.data import shakespeare  # noqa: E402
from mutransfer.integrations.hf import parametrize_hf  # noqa: E402
from mutransfer.integrations.hf_trainer import PLAN_FILE, PlanCallback, mup_optimizers  # noqa: E402
from mutransfer.plan import PlanError  # noqa: E402

torch.set_num_threads(1)
STEPS, SEQ = 20, 32


def gpt2(width: int) -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        n_embd=width, n_layer=2, n_head=2, vocab_size=256, n_positions=SEQ,
        embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg)


def llama(width: int) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, vocab_size=256,
        max_position_embeddings=SEQ,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


class Windows(torch.utils.data.Dataset):
    """Fixed windows of Shakespeare's bytes; labels = inputs (the model shifts them)."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = shakespeare().batch("train", n, SEQ, g)[0]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class LRLog(transformers.TrainerCallback):
    """Every group's LR and lr_scale as the optimizer step sees them."""

    def __init__(self) -> None:
        self.lrs: list[list[tuple[float, float]]] = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        self.lrs.append([(g["lr"], g["lr_scale"]) for g in optimizer.param_groups])


def arguments(out: Path, **kw) -> transformers.TrainingArguments:  # type: ignore[no-untyped-def]
    options = dict(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4,
        learning_rate=2e-3, lr_scheduler_type="cosine", warmup_steps=4, weight_decay=0.1,
        logging_steps=5, save_steps=10, report_to=[], use_cpu=True, seed=0,
        dataloader_num_workers=0,
    )  # fmt: skip
    options.update(kw)
    return transformers.TrainingArguments(**options)


def trainer(model, plan, args, *callbacks):  # type: ignore[no-untyped-def]
    return transformers.Trainer(
        model=model,
        args=args,
        train_dataset=Windows(),
        optimizers=mup_optimizers(plan, model, args),
        callbacks=[PlanCallback(plan), *callbacks],
    )


@pytest.mark.parametrize("family", [gpt2, llama], ids=["gpt2", "llama"])
def test_every_group_gets_base_lr_times_scale_times_schedule(tmp_path: Path, family) -> None:
    model = family(128)
    plan = parametrize_hf(model, 64, seed=0)
    args = arguments(tmp_path)
    log = LRLog()
    run = trainer(model, plan, args, log)
    run.train()
    _, reference = mup_optimizers(plan, model, args)  # the same schedule, fresh
    factors = [f(step) for step in range(STEPS) for f in [reference.lr_lambdas[0]]]
    assert len(log.lrs) == STEPS
    scales = {scale for step in log.lrs for _, scale in step}
    assert len(scales) > 1  # µP's groups really differ (hidden 1/2, the rest 1)
    for step, groups in enumerate(log.lrs):
        for lr, scale in groups:
            assert lr == pytest.approx(2e-3 * scale * factors[step], rel=1e-9), (step, scale)
    saved = tmp_path / "checkpoint-10" / PLAN_FILE
    assert json.loads(saved.read_text())["tensors"] == json.loads(plan.to_json())["tensors"]


def test_resume_through_the_trainer_keeps_the_plan_and_refuses_another(tmp_path: Path) -> None:
    args = arguments(tmp_path / "run")
    model = gpt2(128)
    plan = parametrize_hf(model, 64, seed=0)
    full = LRLog()
    trainer(model, plan, args, full).train()  # 20 steps, checkpoints at 10 and 20

    again = gpt2(128)
    plan_again = parametrize_hf(again, 64, seed=1)  # weights are loaded from the checkpoint
    resumed = LRLog()
    run = trainer(again, plan_again, args, resumed)
    run.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-10"))
    assert resumed.lrs == full.lrs[10:]  # the per-group LRs continue exactly
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, dict(again.named_parameters())[name])

    other = gpt2(128)
    other_plan = parametrize_hf(other, 32, seed=0)  # another base width: another plan
    with pytest.raises(PlanError, match="another plan"):
        trainer(other, other_plan, args).train(
            resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-10")
        )


def test_a_scheduler_that_sets_absolute_lrs_is_refused(tmp_path: Path) -> None:
    model = gpt2(64)
    plan = parametrize_hf(model, 32)
    args = arguments(tmp_path, lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="steps")
    with pytest.raises(PlanError, match="erase µP's per-tensor scales"):
        mup_optimizers(plan, model, args)
