"""µP inside Hugging Face's ``Trainer``, without subclassing it.

The ``Trainer`` builds one optimizer over two parameter groups (decay / no decay) with a single
learning rate, which erases µP's per-tensor learning rates. It also accepts a ready optimizer and
scheduler (``optimizers=``): built here from the plan's groups, every tensor keeps its µP scale,
and the scheduler — ``transformers.get_scheduler``, the one the ``Trainer`` would have built from
the same ``TrainingArguments`` — multiplies every group's initial LR by the same factor, so the
ratios hold at every step::

    plan = parametrize_hf(model, 64)
    trainer = Trainer(
        model, args, train_dataset=data,
        optimizers=mup_optimizers(plan, model, args),
        callbacks=[PlanCallback(plan)],
    )

``PlanCallback`` saves ``plan.json`` in every checkpoint and, when a run resumes from one, refuses
a model whose plan differs (another width, other rules or constants). The ``Trainer`` saves and
restores the optimizer and scheduler states itself, so a resumed run continues with the same
per-group learning rates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..plan import Plan, PlanError
from .hf import require_transformers

PLAN_FILE = "plan.json"


def _training_steps(args: Any, num_training_steps: int | None) -> int:
    if num_training_steps is not None:
        return int(num_training_steps)
    if getattr(args, "max_steps", -1) and args.max_steps > 0:
        return int(args.max_steps)
    raise PlanError(
        "the scheduler needs the number of training steps: set TrainingArguments(max_steps=...) "
        "or pass num_training_steps= (the Trainer computes it from the dataset only when it "
        "builds the scheduler itself)"
    )


def mup_optimizers(
    plan: Plan,
    model: nn.Module,
    args: Any,
    num_training_steps: int | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """``(optimizer, scheduler)`` for ``Trainer(optimizers=...)``, from the plan's groups.

    The optimizer is torch's AdamW (``adam_beta1/2``, ``adam_epsilon`` and ``weight_decay``
    from ``args``; biases and norm gains without decay, as the ``Trainer`` does) with the base
    LR ``args.learning_rate`` times each group's ``lr_scale``; the scheduler is
    ``transformers.get_scheduler(args.lr_scheduler_type, ...)`` with ``args``' warmup.
    """
    transformers = require_transformers()
    optim = getattr(args, "optim", "adamw_torch")
    optim = str(getattr(optim, "value", optim))  # an OptimizerNames enum or its string
    if not optim.startswith("adamw"):
        raise PlanError(
            f"TrainingArguments(optim={optim!r}): mup_optimizers builds torch's AdamW; for "
            "another optimizer build it from plan.param_groups(...) and pass it with a "
            "multiplicative scheduler"
        )
    groups = plan.param_groups(
        float(args.learning_rate),
        model=model,
        weight_decay=float(args.weight_decay),
        eps=float(args.adam_epsilon),
        no_decay=("vector", "scalar"),
    )
    optimizer = torch.optim.AdamW(groups, betas=(args.adam_beta1, args.adam_beta2))
    steps = _training_steps(args, num_training_steps)
    scheduler = transformers.get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(steps),
        num_training_steps=steps,
        scheduler_specific_kwargs=getattr(args, "lr_scheduler_kwargs", None) or {},
    )
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise PlanError(
            f"lr_scheduler_type={args.lr_scheduler_type!r} sets learning rates itself "
            f"({type(scheduler).__name__}), which would erase µP's per-tensor scales; use a "
            "multiplicative schedule (linear, cosine, constant, constant_with_warmup, ...)"
        )
    return optimizer, scheduler


def _callback_base() -> Any:
    return require_transformers().TrainerCallback


class PlanCallback(_callback_base()):  # type: ignore[misc]
    """Keeps the plan with the run: ``plan.json`` in every checkpoint, checked on resume."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                self.plan.to_json(str(folder / PLAN_FILE))
        return control

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # a resumed run starts at the step of the checkpoint it loaded (its state came from it)
        if state.global_step > 0:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if (folder / PLAN_FILE).is_file():
                check_resumed_plan(folder, self.plan)
        return control


def check_resumed_plan(checkpoint: Path, plan: Plan) -> None:
    """Refuse to resume a checkpoint trained under another plan, naming the first difference."""
    saved = json.loads((checkpoint / PLAN_FILE).read_text(encoding="utf-8"))
    current = json.loads(plan.to_json())  # as saved: tuples become lists
    if saved == current:
        return
    different = next(
        (n for n, t in current["tensors"].items() if saved.get("tensors", {}).get(n) != t),
        "the rules" if saved.get("rules") != current["rules"] else "the attention or hooks",
    )
    raise PlanError(
        f"the checkpoint {checkpoint} was trained under another plan ({different} differs): "
        "resume with the same model, width, rules and constants, or start a new run"
    )
