"""The configuration of a training run, read from TOML (or JSON).

``RunConfig`` and the proxy trainer's ``TrainConfig`` extend one class, ``RunOptions``: the
hyperparameters (``lr``, ``init_std``, ``input_multiplier``, ``output_multiplier``,
``attention_multiplier``, ``weight_decay``, ``warmup_steps``, ``width``, ``base_width``...) have
the same names, checks and meaning in both, so the file ``mutransfer transfer`` writes (a
``[train]`` table: the proxy's config at the target width, and a ``[transfer]`` table saying
where it came from) is itself a valid run config. Two ways to use it:

- ``mutransfer train transferred.toml --set steps=20000 ...``: the proxy's whole config, at the
  target width, with the run's own options changed on the command line;
- ``mutransfer train run.toml --hparams transferred.toml``: the run file defines the run (model,
  depth, steps, batch, precision, ...) and takes from the transfer only the transferred values
  (``TRANSFERRED`` plus whatever the sweep searched over), never the proxy's steps or batch size.

Proxy-only options of ``TrainConfig`` (e.g. ``divergence_factor``) are accepted and ignored, so a
transfer output never has to be edited.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..rules import get_rules
from .options import RunOptions, Schedule
from .proxy import TrainConfig

ModelName = Literal["gpt", "gpt2", "llama"]
Precision = Literal["fp32", "bf16"]
Parallel = Literal["auto", "none", "ddp", "fsdp2"]

TRANSFERRED: tuple[str, ...] = (
    "lr",
    "init_std",
    "input_multiplier",
    "output_multiplier",
    "attention_multiplier",
    "weight_decay",
    "warmup_steps",
    "eps",
    "beta2",
    "width",
    "base_width",
    "base_depth",
    "rules",
    "optimizer",
    "adamw_lr",
    "mode",
    "zero_init_readout",
    "zero_init_query",
    "qk_norm",
)
"""What ``--hparams`` takes from a transfer output (with the keys the sweep searched over)."""

MODELS: tuple[str, ...] = ("gpt", "gpt2", "llama")
"""``gpt``: the reference model (``mutransfer.models.GPT``); ``gpt2``/``llama``: HF from config."""


class ConfigError(ValueError):
    """A training configuration that cannot run; the message says which key and why."""


@dataclass(frozen=True)
class RunConfig(RunOptions):
    """Everything one training run needs. Sizes of batches are global (all processes).

    The model's size, the parametrization and the transferred hyperparameters are the fields
    of ``RunOptions``, shared with the proxy's ``TrainConfig`` (same names, same checks); the
    fields below are the big run's own, and the defaults it changes.
    """

    # --- defaults of the shared options, for a run larger than a proxy
    width: int = 256
    seq_len: int = 128
    steps: int = 1000
    batch_size: int = 32
    """Sequences per optimizer step, over all processes and accumulation micro-steps."""
    schedule: Schedule = "cosine"

    # --- model (the target)
    model: ModelName = "gpt"
    tie_embeddings: bool | None = None
    """``None``: the architecture's default (tied for gpt2, untied for gpt and llama)."""
    hf: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the Hugging Face config (gpt2/llama), at the target width."""

    # --- the run
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    grad_accum: int = 1
    precision: Precision = "fp32"
    compile: bool = False
    compile_backend: str = "inductor"
    compile_fullgraph: bool = False
    parallel: Parallel = "auto"
    """``auto``: FSDP2 when launched by torchrun with several processes, else one process."""
    device: str = "auto"
    """``auto``: the local CUDA device when there is one, else CPU; or any torch device name."""

    # --- evaluation, logging, checkpoints
    eval_every: int = 0
    """Validate every N steps (0: only at the end)."""
    log_every: int = 10
    out_dir: str = "runs/train"
    checkpoint_every: int = 0
    """Save every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    resume: str = "auto"
    """``auto``: continue from the latest checkpoint in ``out_dir`` if any; ``never``; or a path."""
    allow_changes: tuple[str, ...] = ()
    """Fields that may differ from the checkpoint's config when resuming, besides ``steps``,
    logging, evaluation and checkpoint cadence (see ``training/resume.py``)."""

    # --- watching the run (training/monitor.py, training/tracking.py)
    monitor_every: int = 0
    """Sample every layer's activation and update RMS every N steps (0: off); see
    ``monitor.jsonl`` in the run folder and docs/training.md."""
    monitor_reference: str = ""
    """A run folder (or ``monitor.jsonl``) to compare the samples with, e.g. the proxy's; empty:
    this run's own first sample."""
    monitor_tolerance: float = 8.0
    """Warn, naming the layer, when a sampled RMS is this many times the reference's."""
    monitor_batch_size: int = 4
    """Sequences in the fixed validation batch the samples are taken on."""
    tensorboard: bool | str = False
    """``true``: TensorBoard event files in ``<out_dir>/tensorboard``; or a folder; ``false``."""
    wandb_project: str = ""
    """Log to this Weights & Biases project (empty: off)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        _positive("grad_accum", self.grad_accum)
        for name in ("eval_every", "log_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if isinstance(self.allow_changes, str) or not all(
            isinstance(k, str) for k in self.allow_changes
        ):
            raise ConfigError(
                f"allow_changes must be a list of field names, got {self.allow_changes!r}"
            )
        object.__setattr__(self, "allow_changes", tuple(self.allow_changes))
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = [k for k in self.allow_changes if k not in fields]
        if unknown:
            raise ConfigError(f"allow_changes: unknown field(s) {', '.join(unknown)}")
        try:  # a run's rules must exist when it is configured, not when its model is built
            get_rules(self.rules)
        except ValueError as exc:
            raise ConfigError(f"rules: {exc}") from None
        _positive("monitor_batch_size", self.monitor_batch_size)
        if not isinstance(self.monitor_every, int) or self.monitor_every < 0:
            raise ConfigError(f"monitor_every must be >= 0 (0: off), got {self.monitor_every!r}")
        if not (isinstance(self.monitor_tolerance, int | float) and self.monitor_tolerance > 1):
            raise ConfigError(
                f"monitor_tolerance must be a number > 1 (a factor), got {self.monitor_tolerance!r}"
            )
        if not isinstance(self.tensorboard, bool | str):
            raise ConfigError(
                f"tensorboard must be true, false or a folder, got {self.tensorboard!r}"
            )
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.parallel not in ("auto", "none", "ddp", "fsdp2"):
            raise ConfigError(f"parallel must be auto, none, ddp or fsdp2, got {self.parallel!r}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )
        if not isinstance(self.hf, Mapping):
            raise ConfigError("hf must be a table of Hugging Face config options")
        if self.qk_norm and self.model != "gpt":
            raise ConfigError(
                f"qk_norm is an option of the reference model (model = 'gpt'), not of "
                f"{self.model!r}: Hugging Face's GPT-2 and Llama have no query/key norms"
            )
        if self.hf and self.model == "gpt":
            raise ConfigError("the [hf] table applies to model = 'gpt2' or 'llama', not 'gpt'")

    @classmethod
    def _invalid(cls, message: str) -> ValueError:
        return ConfigError(message)

    # ------------------------------------------------------------------- conversions
    def with_(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hf"] = dict(self.hf)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from a mapping; TrainConfig's proxy-only keys are ignored, others rejected."""
        known = {f.name for f in dataclasses.fields(cls)}
        proxy_only = {f.name for f in dataclasses.fields(TrainConfig)} - known
        unknown = sorted(set(data) - known - proxy_only)
        if unknown:
            raise ConfigError(
                f"unknown training option(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values = {k: v for k, v in data.items() if k in known}
        if values.get("base_depth") == 0:
            values["base_depth"] = None
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A TOML or JSON file as a dict (JSON when the name ends in ``.json``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        if p.suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
        else:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a table of options at the top level")
    return data


def unwrap_transfer(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run options, provenance) of a config that may be a ``mutransfer transfer`` output."""
    values = dict(data)
    source = values.pop("transfer", None)
    train = values.pop("train", None)
    if train is not None:
        if not isinstance(train, Mapping):
            raise ConfigError("[train] must be a table of training options")
        values.update(train)
    return values, dict(source) if isinstance(source, Mapping) else {}


def transferred_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """The transferred hyperparameters of a transfer output (see ``TRANSFERRED``)."""
    values, source = unwrap_transfer(data)
    searched = source.get("params", {})
    keys = set(TRANSFERRED) | (set(searched) if isinstance(searched, Mapping) else set())
    return {k: v for k, v in values.items() if k in keys}


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as TOML (``lr=3e-3``,
    ``compile=true``, ``model="llama"``), falling back to a bare string (``model=llama``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    hparams: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Read a run config, merge transferred hyperparameters and overrides (later wins)."""
    data: dict[str, Any] = unwrap_transfer(read_file(path))[0] if path is not None else {}
    if hparams is not None:
        data.update(transferred_values(read_file(hparams)))
    data.update(overrides or {})
    return RunConfig.from_dict(data)
