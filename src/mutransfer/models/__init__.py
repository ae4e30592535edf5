"""Reference models: plain PyTorch, parametrized entirely by the plan."""

from .gpt import GPT, GPTConfig, gpt_parametrize_options
from .mlp import MLP
from .resnet import ResNet, ResNetConfig

__all__ = ["GPT", "MLP", "GPTConfig", "ResNet", "ResNetConfig", "gpt_parametrize_options"]
