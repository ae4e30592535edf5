"""Reference models: plain PyTorch, parametrized entirely by the plan."""

from .gpt import GPT, GPTConfig, gpt_parametrize_options
from .mlp import MLP

__all__ = ["GPT", "MLP", "GPTConfig", "gpt_parametrize_options"]
