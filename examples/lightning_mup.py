"""µP in a PyTorch Lightning module: the plan's groups in ``configure_optimizers``.

    .venv/bin/python examples/lightning_mup.py            # 1 process, 30 steps on Shakespeare
    .venv/bin/python examples/lightning_mup.py --ddp 2    # 2 processes (gloo on CPU)

The model is parametrized once, in ``__init__``; ``configure_optimizers`` is the usual one
with ``plan.param_groups`` instead of ``self.parameters()`` — that is the whole integration. The
LR schedule is a ``LambdaLR`` (a factor on every group's initial LR), so µP's ratios hold.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import mutransfer as mt
from mutransfer.data import shakespeare
from mutransfer.models import GPT, GPTConfig

SEQ = 32


class MupGPT(pl.LightningModule):
    def __init__(self, width: int = 128, base_width: int = 32, lr: float = 2**-6) -> None:
        super().__init__()
        cfg = GPTConfig(width=width, depth=2, n_heads=2, seq_len=SEQ)
        self.model = GPT(cfg)
        with torch.device("meta"):
            base = GPT(cfg.with_(width=base_width))
        self.plan = mt.parametrize(self.model, base, "mup", "adamw", seed=0)
        self.lr = lr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        # the µP part: one param group per set of scales, each with lr = base LR × lr_scale
        optimizer = torch.optim.AdamW(self.plan.param_groups(self.lr, model=self.model))
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 5))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


def data(n: int = 256) -> torch.utils.data.DataLoader:
    x, y = shakespeare().batch("train", n, SEQ, torch.Generator().manual_seed(0))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ddp", type=int, default=1, help="processes (DDP on CPU: gloo)")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    trainer = pl.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        devices=args.ddp,
        strategy="ddp_spawn" if args.ddp > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = MupGPT()
    trainer.fit(module, data())
    print(f"final loss {float(trainer.callback_metrics['loss']):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
