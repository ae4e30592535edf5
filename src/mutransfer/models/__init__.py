"""Reference models: plain PyTorch, parametrized entirely by the plan."""

from .bert import Bert, BertConfig, mask_tokens
from .gpt import GPT, GPTConfig, gpt_parametrize_options
from .mlp import MLP
from .resnet import ResNet, ResNetConfig

__all__ = [
    "GPT",
    "MLP",
    "Bert",
    "BertConfig",
    "GPTConfig",
    "ResNet",
    "ResNetConfig",
    "gpt_parametrize_options",
    "mask_tokens",
]
